"""REST API v1, its OpenAPI schema and its docs (Swagger UI from local static files)."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from portal.credits import apis as credits
from portal.users import apis as users

from .errors import ApiNotFound

v1 = [
    path("me", users.MeApi.as_view(), name="me"),
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
    re_path(r"^.*$", ApiNotFound.as_view(), name="not-found"),  # keep last
]

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
]
