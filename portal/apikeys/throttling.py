"""Per-key rate limit (see ratelimit.py): 429 with Retry-After when exceeded."""

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from . import ratelimit
from .models import ApiKey


class ApiKeyRateThrottle(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        if not isinstance(request.auth, ApiKey):
            return True  # sessions are limited by allauth and by the person at the keyboard
        limit, window = settings.API_KEY_RATE_LIMIT
        allowed, self.retry_after = ratelimit.hit(
            bucket=f"apikey:{request.auth.key_id}", limit=limit, window_seconds=window
        )
        return allowed

    def wait(self):
        return self.retry_after
