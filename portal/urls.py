"""URL configuration: pages, accounts, programme dashboard, health."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from oauth2_provider import urls as oauth2_urls
from oauth2_provider import views as oauth2_views

from inference.gateway import urls as gateway_urls
from portal.api import urls as api_urls
from portal.core import views as core_views
from portal.users import views as user_views
from portal.users.oidc import PortalAuthorizationView
from sandboxes.launcher import urls as launcher_urls

# The OpenID Connect provider the hub signs in with: only the endpoints a relying party uses
# (discovery, JWKS, authorize, token, userinfo, logout, revoke). No application-management,
# device, introspection or dynamic-registration views: the hub's client is made by
# `manage.py hub_configure`.
oidc_provider_urls = [
    path("authorize/", PortalAuthorizationView.as_view(), name="authorize"),
    path("token/", oauth2_views.TokenView.as_view(), name="token"),
    path("revoke_token/", oauth2_views.RevokeTokenView.as_view(), name="revoke-token"),
    *oauth2_urls.oidc_urlpatterns,
]

urlpatterns = [
    path("", core_views.home, name="home"),
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("accounts/", include("allauth.urls")),
    path("o/", include((oidc_provider_urls, "oauth2_provider"))),
    path("language/", user_views.language_set, name="language_set"),
    path("onboarding/", include("portal.onboarding.urls")),
    path("api/v1/", include((api_urls.v1, "v1"), namespace="api-v1")),
    path("api/", include((api_urls.urlpatterns, "api"), namespace="api")),
    # The model API: outside /api/ on purpose, since OpenAI clients append /chat/completions
    # to a base URL; and the playground's chat endpoint (session), before the /models/ pages.
    path("llm/v1/", include(gateway_urls)),
    path("", include((gateway_urls.playground_urlpatterns, "llm-playground"))),
    path("", include("portal.credits.urls")),
    path("organisations/", include("portal.organisations.urls")),
    path("api-keys/", include("portal.apikeys.urls")),
    path("programme/", include("portal.dashboard.urls")),
    path("sandboxes/", include("sandboxes.launcher.urls")),
    # The model API's pages for people (the playground's chat endpoint is the gateway's, above)
    path("models/request-logging/", include("inference.requestlog.urls")),
    path("models/", include("inference.catalogue.urls")),
    # The hub's spawner asks here before every start (a shared secret, not a session).
    path("internal/hub/", include((launcher_urls.internal_urlpatterns, "internal"))),
    path(settings.ADMIN_URL, admin.site.urls),
]

handler500 = "portal.core.views.server_error"
