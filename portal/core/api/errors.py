"""Every API error in one shape: {"error": {"code", "message", "fields"}}."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from portal.core.exceptions import ApplicationError

CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid",
    status.HTTP_401_UNAUTHORIZED: "not_authenticated",
    status.HTTP_403_FORBIDDEN: "permission_denied",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_409_CONFLICT: "conflict",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_422_UNPROCESSABLE_ENTITY: "unprocessable",
    status.HTTP_429_TOO_MANY_REQUESTS: "rate_limited",
}
# Service refusals (ApplicationError codes) and the HTTP status they answer with.
APPLICATION_STATUS = {
    "permission_denied": status.HTTP_403_FORBIDDEN,
    "wrong_state": status.HTTP_409_CONFLICT,
    "insufficient_credits": status.HTTP_409_CONFLICT,
    "unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
    "rate_limited": status.HTTP_429_TOO_MANY_REQUESTS,
}


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _fields(detail) -> dict:
    if isinstance(detail, dict):
        return {
            name: [str(item) for item in (errors if isinstance(errors, list) else [errors])]
            for name, errors in detail.items()
        }
    return {}


def exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        code = exc.code if exc.code in APPLICATION_STATUS else "invalid"
        http_status = APPLICATION_STATUS.get(exc.code, status.HTTP_400_BAD_REQUEST)
        fields = {exc.field: [exc.message]} if exc.field else {}
        return Response(error_body(code, exc.message, fields), status=http_status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real server error: Django's 500 handling and logging
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    fields = _fields(detail)
    if fields:
        message = "Some fields are not valid."
    elif isinstance(detail, list):
        message = " ".join(str(item) for item in detail)
    else:
        message = str(detail)
    code = CODES.get(response.status_code, "error")
    response.data = error_body(code, message, fields)
    return response


class ApiNotFound(APIView):
    """Any other path under /api/v1/: a 404 in the API's error shape, not an HTML page."""

    required_scopes: list[str] = []
    schema = None  # not an operation: left out of the OpenAPI document

    def _not_found(self, request, *args, **kwargs):
        raise exceptions.NotFound

    get = post = put = patch = delete = _not_found
