"""Programme pages: reports (included by portal/dashboard/urls.py)."""

urlpatterns: list = []
