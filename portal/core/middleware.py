"""Response headers the portal sets on every page."""

from django.conf import settings


class ContentSecurityPolicyMiddleware:
    """Send the Content-Security-Policy header: only this origin may serve anything the page runs.

    Django 5.2 has no CSP support of its own (it arrives in 6.0). The admin's inline scripts are
    allowed nowhere: it works without them.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response
