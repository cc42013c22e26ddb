"""URL configuration: pages, accounts, programme dashboard, health."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from portal.core import views as core_views
from portal.core.api import urls as api_urls
from portal.users import views as user_views

urlpatterns = [
    path("", core_views.home, name="home"),
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("accounts/", include("allauth.urls")),
    path("language/", user_views.language_set, name="language_set"),
    path("onboarding/", include("portal.onboarding.urls")),
    path("api/v1/", include((api_urls.v1, "v1"), namespace="api-v1")),
    path("api/", include((api_urls.urlpatterns, "api"), namespace="api")),
    path("", include("portal.credits.urls")),
    path("organisations/", include("portal.organisations.urls")),
    path("api-keys/", include("portal.apikeys.urls")),
    path("programme/", include("portal.dashboard.urls")),
    path(settings.ADMIN_URL, admin.site.urls),
]

handler500 = "portal.core.views.server_error"
