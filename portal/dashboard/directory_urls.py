"""Programme pages: directory (included by portal/dashboard/urls.py).

Organisations are named by their public UUID; students by their hub username, the public name a
person's notebook servers already carry (users have no UUID, and integer keys stay private).
"""

from django.urls import path

from . import directory

urlpatterns = [
    path("organisations/", directory.organisations, name="organisations"),
    path("organisations/<uuid:public_id>/", directory.organisation, name="organisation"),
    path(
        "organisations/<uuid:public_id>/suspend/",
        directory.organisation_suspend_view,
        name="organisation_suspend",
    ),
    path(
        "organisations/<uuid:public_id>/reactivate/",
        directory.organisation_reactivate_view,
        name="organisation_reactivate",
    ),
    path("students/", directory.students, name="students"),
    path("students/<str:hub_username>/", directory.student, name="student"),
    path(
        "students/<str:hub_username>/suspend/",
        directory.student_suspend_view,
        name="student_suspend",
    ),
    path(
        "students/<str:hub_username>/reactivate/",
        directory.student_reactivate_view,
        name="student_reactivate",
    ),
]
