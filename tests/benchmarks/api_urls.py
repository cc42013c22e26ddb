"""The portal's URLs plus three views that exist only for the API benchmark and the connection
soak test (api_settings.py serves them; portal.urls never does).

- /bench/baseline?account=<uuid>: the floor a request can cost here: one indexed query on a
  connection the pool already holds, answered as JSON, no authentication.
- /bench/error: fails with a 500 in the middle of a transaction, after a query.
- /bench/slow: holds its connection in a query for a quarter of a second, long enough for a
  client to give up on it mid-request.
"""

from django.db import connection, transaction
from django.http import JsonResponse
from django.urls import path

from portal.urls import handler500  # noqa: F401 - the portal's 500 page, here too
from portal.urls import urlpatterns as portal_urlpatterns

SLOW_SECONDS = 0.25


class BenchFailure(Exception):
    """Raised on purpose by /bench/error."""


def baseline(request):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT balance FROM credits_creditaccount WHERE public_id = %s",
            [request.GET.get("account")],
        )
        row = cursor.fetchone()
    return JsonResponse({"balance": row[0] if row else None})


def error(request):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        raise BenchFailure("a failure on purpose, inside a transaction")


def slow(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [SLOW_SECONDS])
    return JsonResponse({"slept": SLOW_SECONDS})


urlpatterns = [
    path("bench/baseline", baseline),
    path("bench/error", error),
    path("bench/slow", slow),
    *portal_urlpatterns,
]
