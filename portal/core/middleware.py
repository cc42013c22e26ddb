"""Response headers the portal sets on every page."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings


class ContentSecurityPolicyMiddleware:
    """Send the Content-Security-Policy header: only this origin may serve anything the page runs.

    Django 5.2 has no CSP support of its own (it arrives in 6.0). The admin's inline scripts are
    allowed nowhere: it works without them. Sync and async alike: under ASGI a request does not
    hop to a thread and back for a header.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        return self._headers(self.get_response(request))

    async def _acall(self, request):
        return self._headers(await self.get_response(request))

    @staticmethod
    def _headers(response):
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response
