"""/llm/v1 under uvicorn goes through the gateway's own Django handler (ApiHandler): the API's
security headers, none of the browser's middleware (no session, no CSRF cookie, no locale)."""

import httpx
import pytest

from inference.gateway.asgi import ApiHandler

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_api_answer_has_the_security_headers_and_nothing_of_the_browsers(gateway_server):
    # when a request without a key reaches /llm/v1 through the portal's ASGI application
    response = httpx.get(f"{gateway_server}/llm/v1/models", timeout=10)
    # then it is the gateway's answer, with the headers the portal sends on every response
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Content-Security-Policy" in response.headers
    # and nothing the browser's middleware adds: no cookie, no Vary on cookie or language
    assert "set-cookie" not in response.headers
    assert "Cookie" not in response.headers.get("Vary", "")
    assert "Accept-Language" not in response.headers.get("Vary", "")


def test_the_portals_pages_keep_their_middleware(gateway_server):
    # when a page outside /llm/v1 is asked for
    response = httpx.get(f"{gateway_server}/accounts/login/", timeout=10)
    # then the browser's middleware ran (the CSRF cookie, the language negotiated)
    assert response.status_code == 200
    assert "csrftoken" in response.cookies
    assert "Accept-Language" in response.headers.get("Vary", "")


def test_a_sync_only_middleware_is_refused_for_the_api(settings):
    # given a middleware list with one that cannot run async
    class Handler(ApiHandler):
        middleware = ("whitenoise.middleware.WhiteNoiseMiddleware",)

    # then the handler refuses to start rather than hop threads on every request
    with pytest.raises(RuntimeError, match="async-capable"):
        Handler()
