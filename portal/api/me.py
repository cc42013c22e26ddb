"""GET /api/v1/me: who the request acts as. It reads across apps (keys, organisations,
students), so it lives here, above them all."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.apikeys.models import ApiKey
from portal.apikeys.permissions import granted_scopes
from portal.apikeys.principal import is_programme_manager, is_service
from portal.onboarding.models import StudentProfile
from portal.organisations.models import Membership


class OrganisationRefSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    slug = serializers.CharField()
    role = serializers.CharField(allow_null=True)


class MeSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["person", "organisation"])
    email = serializers.EmailField(allow_null=True)
    name = serializers.CharField(allow_null=True)
    hub_username = serializers.CharField(allow_null=True)
    language = serializers.CharField(allow_null=True)
    programme_manager = serializers.BooleanField()
    student = serializers.BooleanField()
    organisations = OrganisationRefSerializer(many=True)
    scopes = serializers.ListField(child=serializers.CharField())
    key = inline_serializer(
        "MeKey",
        fields={
            "id": serializers.CharField(),
            "name": serializers.CharField(),
            "expires_at": serializers.DateTimeField(),
        },
        allow_null=True,
    )


class MeApi(APIView):
    """Who the request acts as, with which scopes."""

    required_scopes = ["profile:read"]

    @extend_schema(responses=MeSerializer, operation_id="me")
    def get(self, request):
        key = request.auth if isinstance(request.auth, ApiKey) else None
        if is_service(request):
            organisation = request.user.organisation
            person = {
                "kind": "organisation",
                "email": None,
                "name": organisation.legal_name,
                "hub_username": None,
                "language": None,
                "student": False,
            }
            organisations = [
                {
                    "id": organisation.public_id,
                    "name": organisation.legal_name,
                    "slug": organisation.slug,
                    "role": None,
                }
            ]
        else:
            user = request.user
            person = {
                "kind": "person",
                "email": user.email,
                "name": user.name,
                "hub_username": user.hub_username,
                "language": user.language,
                "student": StudentProfile.objects.filter(user=user).exists(),
            }
            organisations = [
                {
                    "id": m.organisation.public_id,
                    "name": m.organisation.legal_name,
                    "slug": m.organisation.slug,
                    "role": m.role,
                }
                for m in Membership.objects.filter(user=user).select_related("organisation")
            ]
        data = {
            **person,
            "programme_manager": is_programme_manager(request),
            "organisations": organisations,
            "scopes": sorted(granted_scopes(request)),
            "key": {"id": key.key_id, "name": key.name, "expires_at": key.expires_at}
            if key
            else None,
        }
        return Response(MeSerializer(data).data)
