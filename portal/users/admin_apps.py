"""The admin app, configured with the portal's admin site (kept free of model imports)."""

from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    default_site = "portal.users.admin_site.PortalAdminSite"
