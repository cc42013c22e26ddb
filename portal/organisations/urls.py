from django.urls import path

from . import views

app_name = "organisations"

urlpatterns = [
    path("invitations/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("<slug:slug>/", views.organisation_detail, name="detail"),
    path("<slug:slug>/invitations/", views.invitation_create, name="invitation_create"),
    path(
        "<slug:slug>/invitations/<uuid:public_id>/revoke/",
        views.invitation_revoke,
        name="invitation_revoke",
    ),
    path("<slug:slug>/members/<str:hub_username>/role/", views.membership_role, name="role"),
    path("<slug:slug>/members/<str:hub_username>/remove/", views.membership_remove, name="remove"),
    path(
        "<slug:slug>/members/<str:hub_username>/transfer/",
        views.ownership_transfer,
        name="transfer",
    ),
]
