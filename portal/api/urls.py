"""REST API v1, its OpenAPI schema and its docs (Swagger UI from local static files)."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from portal.core.api.errors import ApiNotFound
from portal.credits import apis as credits
from sandboxes.launcher import apis as sandboxes
from sandboxes.metering import apis as metering

from . import me

v1 = [
    path("me", me.MeApi.as_view(), name="me"),
    path("credits/balance", credits.BalanceApi.as_view(), name="credits-balance"),
    path("credits/ledger", credits.LedgerApi.as_view(), name="credits-ledger"),
    path(
        "credits/statements/<str:month>",
        credits.StatementApi.as_view(),
        name="credits-statement",
    ),
    path(
        "credit-applications",
        credits.ApplicationListCreateApi.as_view(),
        name="credit-applications",
    ),
    path(
        "credit-applications/<uuid:public_id>",
        credits.ApplicationDetailApi.as_view(),
        name="credit-application",
    ),
    path(
        "credit-applications/<uuid:public_id>/submit",
        credits.ApplicationSubmitApi.as_view(),
        name="credit-application-submit",
    ),
    path(
        "credit-applications/<uuid:public_id>/approve",
        credits.ApplicationApproveApi.as_view(),
        name="credit-application-approve",
    ),
    path(
        "credit-applications/<uuid:public_id>/reject",
        credits.ApplicationRejectApi.as_view(),
        name="credit-application-reject",
    ),
    path("gpus", sandboxes.GpuInventoryApi.as_view(), name="gpus"),
    path("images", sandboxes.ImageListApi.as_view(), name="images"),
    path("profiles", sandboxes.ProfileListApi.as_view(), name="profiles"),
    path("sandboxes", sandboxes.SandboxListCreateApi.as_view(), name="sandboxes"),
    path("sandboxes/<uuid:public_id>", sandboxes.SandboxDetailApi.as_view(), name="sandbox"),
    path(
        "sandboxes/<uuid:public_id>/stop", sandboxes.SandboxStopApi.as_view(), name="sandbox-stop"
    ),
    path(
        "sandboxes/<uuid:public_id>/start",
        sandboxes.SandboxStartApi.as_view(),
        name="sandbox-start",
    ),
    path(
        "sandboxes/<uuid:public_id>/access-token",
        sandboxes.SandboxAccessTokenApi.as_view(),
        name="sandbox-access-token",
    ),
    path("usage", metering.UsageApi.as_view(), name="usage"),
    re_path(r"^.*$", ApiNotFound.as_view(), name="not-found"),  # keep last
]

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
]
