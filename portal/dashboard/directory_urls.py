"""Programme pages: directory (included by portal/dashboard/urls.py)."""

urlpatterns: list = []
