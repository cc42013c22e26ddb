"""REST API v1 for the GPU inventory, the catalogue and sandboxes. Thin: the HTML pages call the
same services and selectors."""

from __future__ import annotations

import contextlib
import uuid

from django.db.models import Q
from django.http import Http404
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.apikeys.idempotency import idempotent
from portal.apikeys.permissions import granted_scopes
from portal.apikeys.principal import (
    acting_person,
    organisation_acting_for,
    service_organisation,
)
from portal.audit.services import client_ip
from portal.core.api.pagination import NewestFirstCursorPagination
from portal.core.exceptions import ApplicationError
from sandboxes.gpus.models import GpuDevice
from sandboxes.gpus.selectors import availability, devices_with_holders

from . import services
from .models import ResourceProfile, Sandbox, SandboxImage
from .selectors import launch_choices, open_url, queue_position, sandboxes_for_user

# --- GPUs ------------------------------------------------------------------------------------


class GpuSerializer(serializers.Serializer):
    uuid = serializers.CharField()
    index = serializers.IntegerField()
    model = serializers.CharField()
    memory_mib = serializers.IntegerField()
    mig_profile = serializers.CharField()
    health = serializers.CharField()
    simulated = serializers.BooleanField()
    allocated = serializers.BooleanField()


class AvailabilitySerializer(serializers.Serializer):
    model = serializers.CharField()
    mig_profile = serializers.CharField()
    memory_mib = serializers.IntegerField()
    total = serializers.IntegerField()
    free = serializers.IntegerField()
    simulated = serializers.BooleanField()


class InventorySerializer(serializers.Serializer):
    simulated = serializers.BooleanField(
        help_text="True when these are stand-ins for GPUs on a machine without an NVIDIA driver."
    )
    availability = AvailabilitySerializer(many=True)
    devices = GpuSerializer(many=True)


class GpuInventoryApi(APIView):
    required_scopes = ["gpus:read"]

    @extend_schema(responses=InventorySerializer, operation_id="gpus_list")
    def get(self, request):
        devices = [
            {
                "uuid": device.uuid,
                "index": device.index,
                "model": device.model,
                "memory_mib": device.memory_mib,
                "mig_profile": device.mig_profile,
                "health": device.health,
                "simulated": device.simulated,
                "allocated": allocation is not None,
            }
            for device, allocation in devices_with_holders()
            if not device.mig_enabled
        ]
        data = {
            "simulated": any(d["simulated"] for d in devices),
            "availability": [vars(row) for row in availability()],
            "devices": devices,
        }
        return Response(InventorySerializer(data).data)


# --- Catalogue -------------------------------------------------------------------------------


class ImageSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    slug = serializers.CharField()
    name = serializers.CharField()
    image = serializers.CharField()
    description = serializers.CharField()
    gpu_capable = serializers.BooleanField()


class ImageListApi(generics.ListAPIView):
    required_scopes = ["sandboxes:read"]
    serializer_class = ImageSerializer
    pagination_class = None
    queryset = SandboxImage.objects.filter(is_active=True)

    @extend_schema(operation_id="images_list")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ProfileSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="profile.public_id")
    slug = serializers.CharField(source="profile.slug")
    name = serializers.CharField(source="profile.name")
    description = serializers.CharField(source="profile.description")
    cpu_cores = serializers.DecimalField(source="profile.cpu_cores", max_digits=5, decimal_places=2)
    memory_mib = serializers.IntegerField(source="profile.memory_mib")
    gpu_count = serializers.IntegerField(source="profile.gpu_count")
    gpu_model = serializers.CharField(source="profile.gpu_model")
    mig_profile = serializers.CharField(source="profile.mig_profile")
    charge_credit_seconds_per_second = serializers.DecimalField(
        source="profile.charge_rate", max_digits=8, decimal_places=3
    )
    egress = serializers.CharField(source="profile.egress")
    free_gpus = serializers.IntegerField(allow_null=True)
    runway_seconds = serializers.IntegerField(
        help_text="How long your balance would run this profile, beside what already runs."
    )


class ProfileListApi(APIView):
    """The profiles you may use, with live GPU availability and your runway on each."""

    required_scopes = ["sandboxes:read"]

    @extend_schema(
        parameters=[OpenApiParameter("organisation", str, description="Which organisation pays.")],
        responses=ProfileSerializer(many=True),
        operation_id="profiles_list",
    )
    def get(self, request):
        organisation = organisation_acting_for(request, only_one_is_default=False)
        choices = launch_choices(user=acting_person(request), organisation=organisation)
        if choices.problem:
            raise ApplicationError(choices.problem)
        return Response(ProfileSerializer(choices.profiles, many=True).data)


# --- Sandboxes -------------------------------------------------------------------------------


class SandboxSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    name = serializers.CharField(source="display_name")
    status = serializers.CharField()
    message = serializers.CharField(source="status_text")
    progress = serializers.IntegerField()
    queue_position = serializers.SerializerMethodField()
    image = serializers.CharField(source="image.slug")
    profile = serializers.CharField(source="profile.slug")
    organisation = serializers.UUIDField(source="organisation.public_id", allow_null=True)
    gpus = serializers.SerializerMethodField()
    gpus_simulated = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    running_at = serializers.DateTimeField(allow_null=True)
    stopped_at = serializers.DateTimeField(allow_null=True)

    def _open(self, sandbox) -> list[GpuDevice]:
        return sandbox.held_devices()

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_queue_position(self, sandbox) -> int | None:
        return queue_position(sandbox)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_gpus(self, sandbox) -> list[str]:
        return [device.uuid for device in self._open(sandbox)]

    def get_gpus_simulated(self, sandbox) -> bool:
        return any(device.simulated for device in self._open(sandbox))

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_url(self, sandbox) -> str | None:
        return open_url(sandbox) if sandbox.status == Sandbox.Status.RUNNING else None


class LaunchSerializer(serializers.Serializer):
    image = serializers.CharField(max_length=100, help_text="An image's slug or id.")
    profile = serializers.CharField(max_length=100, help_text="A profile's slug or id.")
    organisation = serializers.UUIDField(required=False, help_text="Which organisation pays.")
    name = serializers.CharField(max_length=80, required=False, allow_blank=True)


def _by_slug_or_id(model, value: str, field: str):
    lookup = Q(slug=value)
    with contextlib.suppress(ValueError):
        lookup |= Q(public_id=uuid.UUID(value))
    found = model.objects.filter(lookup).first()
    if found is None:
        raise ApplicationError(
            _("Unknown %(what)s: %(value)s.") % {"what": field, "value": value}, field=field
        )
    return found


def _sandboxes(request):
    """The sandboxes the request may see and act on: a person's own; for a service key, those
    of the person who answers for it that its own organisation pays for, and no other (not
    theirs in another organisation, not their student sandboxes)."""
    sandboxes = sandboxes_for_user(user=acting_person(request))
    organisation = service_organisation(request)
    if organisation is not None:
        sandboxes = sandboxes.filter(organisation=organisation)
    return sandboxes


class SandboxListCreateApi(generics.ListAPIView):
    required_scopes = {"GET": ["sandboxes:read"], "POST": ["sandboxes:write"]}
    serializer_class = SandboxSerializer
    pagination_class = NewestFirstCursorPagination

    def get_queryset(self):
        return _sandboxes(self.request)

    @extend_schema(operation_id="sandboxes_list")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=LaunchSerializer,
        responses={202: SandboxSerializer},
        operation_id="sandboxes_launch",
    )
    @idempotent
    def post(self, request):
        data = LaunchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        sandbox = services.sandbox_launch(
            user=acting_person(request),
            image=_by_slug_or_id(SandboxImage, values["image"], "image"),
            profile=_by_slug_or_id(ResourceProfile, values["profile"], "profile"),
            organisation=organisation_acting_for(
                request, values.get("organisation"), only_one_is_default=False
            ),
            name=values.get("name", ""),
            ip=client_ip(request),
        )
        return Response(SandboxSerializer(sandbox).data, status=status.HTTP_202_ACCEPTED)


class _SandboxApi(APIView):
    def sandbox(self, request, public_id) -> Sandbox:
        sandbox = _sandboxes(request).filter(public_id=public_id).first()
        if sandbox is None:
            raise Http404
        return sandbox

    def respond(self, request, public_id, code=status.HTTP_200_OK) -> Response:
        return Response(SandboxSerializer(self.sandbox(request, public_id)).data, status=code)


DELETE_HOME_SCOPE = "sandboxes:delete-home"


class SandboxDetailApi(_SandboxApi):
    # DELETE with delete_home=true needs sandboxes:delete-home as well (checked in delete()).
    required_scopes = {"GET": ["sandboxes:read"], "DELETE": ["sandboxes:write"]}

    @extend_schema(responses=SandboxSerializer, operation_id="sandboxes_get")
    def get(self, request, public_id):
        return self.respond(request, public_id)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "delete_home",
                bool,
                description=(
                    "Also delete your home folder (all your files). Default false. "
                    "True needs the scope sandboxes:delete-home as well."
                ),
            )
        ],
        responses={204: None},
        operation_id="sandboxes_delete",
    )
    def delete(self, request, public_id):
        flag = request.query_params.get("delete_home", "false").lower()
        if flag not in ("true", "false"):
            raise ApplicationError(_("delete_home must be true or false."), field="delete_home")
        if flag == "true" and DELETE_HOME_SCOPE not in granted_scopes(request):
            # Every file of the person is gone for good: a scope of its own, not sandboxes:write.
            raise PermissionDenied(_("Missing scope: %(scopes)s.") % {"scopes": DELETE_HOME_SCOPE})
        services.sandbox_delete(
            sandbox=self.sandbox(request, public_id),
            acting_user=acting_person(request),
            delete_home=flag == "true",
            ip=client_ip(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class SandboxStopApi(_SandboxApi):
    required_scopes = ["sandboxes:write"]

    @extend_schema(request=None, responses={202: SandboxSerializer}, operation_id="sandboxes_stop")
    def post(self, request, public_id):
        services.sandbox_stop(
            sandbox=self.sandbox(request, public_id),
            acting_user=acting_person(request),
            ip=client_ip(request),
        )
        return self.respond(request, public_id, status.HTTP_202_ACCEPTED)


class SandboxStartApi(_SandboxApi):
    required_scopes = ["sandboxes:write"]

    @extend_schema(request=None, responses={202: SandboxSerializer}, operation_id="sandboxes_start")
    def post(self, request, public_id):
        services.sandbox_restart(
            sandbox=self.sandbox(request, public_id),
            acting_user=acting_person(request),
            ip=client_ip(request),
        )
        return self.respond(request, public_id, status.HTTP_202_ACCEPTED)


class AccessTokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()
    server_url = serializers.CharField(help_text="Base URL of the Jupyter Server REST API.")


class SandboxAccessTokenApi(_SandboxApi):
    """A token that opens the sandbox's server (its files and kernels): its own scope."""

    required_scopes = ["sandboxes:access"]

    @extend_schema(
        description="A short-lived token for the sandbox's Jupyter Server (sandboxes:access).",
        request=None,
        responses={201: AccessTokenSerializer},
        operation_id="sandboxes_access_token",
    )
    def post(self, request, public_id):
        issued = services.access_token_issue(
            sandbox=self.sandbox(request, public_id),
            acting_user=acting_person(request),
            ip=client_ip(request),
        )
        return Response(AccessTokenSerializer(issued).data, status=status.HTTP_201_CREATED)
