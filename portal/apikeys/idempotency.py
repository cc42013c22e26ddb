"""`Idempotency-Key` on POSTs that create something.

The first request with a key records "in flight" (committed at once, so every process sees
it), runs, and stores its response. Later requests with the same key from the same client get
the stored response again; 409 while the first still runs; 422 when the same key comes with a
different method, path or body. A failed first request (an error, or a 5xx) leaves no record,
so the client may retry it.
"""

import hashlib
import json
from functools import wraps

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from portal.core.api.errors import error_body

from .models import ApiKey, IdempotencyRecord

HEADER = "Idempotency-Key"


def _owner(request) -> str:
    if isinstance(request.auth, ApiKey):
        return f"key:{request.auth.key_id}"
    return f"user:{request.user.pk}"


def idempotent(view_method):
    @wraps(view_method)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view_method(self, request, *args, **kwargs)
        if not 1 <= len(key) <= 200 or not key.isprintable():
            return Response(
                error_body("invalid", _("Idempotency-Key must be 1 to 200 printable characters.")),
                status=status.HTTP_400_BAD_REQUEST,
            )
        body_sha256 = hashlib.sha256(request._request.body).hexdigest()
        identity = {"owner": _owner(request), "key": key}
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    **identity,
                    method=request.method,
                    path=request.path[:500],
                    body_sha256=body_sha256,
                )
        except IntegrityError:
            earlier = IdempotencyRecord.objects.filter(**identity).first()
            if earlier is None:
                # The other request failed and let go of the key between our insert and this
                # read: it is free again, but the client should simply retry.
                return Response(
                    error_body(
                        "idempotency_in_flight",
                        _("The first request with this key is running."),
                    ),
                    status=status.HTTP_409_CONFLICT,
                )
            return _replay(request, earlier, body_sha256)
        try:
            response = view_method(self, request, *args, **kwargs)
        except Exception:
            record.delete()
            raise
        if response.status_code >= 500 or not 200 <= response.status_code < 300:
            record.delete()  # only a success is kept; a corrected retry may run
            return response
        IdempotencyRecord.objects.filter(pk=record.pk).update(
            state=IdempotencyRecord.State.DONE,
            status_code=response.status_code,
            response_body=json.loads(JSONRenderer().render(response.data) or b"null"),
        )
        return response

    return wrapper


def _replay(request, record: IdempotencyRecord, body_sha256: str) -> Response:
    if (record.method, record.path, record.body_sha256) != (
        request.method,
        request.path[:500],
        body_sha256,
    ):
        return Response(
            error_body(
                "idempotency_key_reused",
                _("This Idempotency-Key was used with a different request."),
            ),
            status=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
    if record.state == IdempotencyRecord.State.IN_FLIGHT:
        return Response(
            error_body("idempotency_in_flight", _("The first request with this key is running.")),
            status=status.HTTP_409_CONFLICT,
        )
    response = Response(record.response_body, status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    return response
