"""REST API v1: a sandbox's usage as time series, read from the roll-ups."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.apikeys.principal import is_service
from sandboxes.launcher.models import Sandbox

from .selectors import MAX_POINTS, SERIES, STEPS, step_for, usage_series

STEP_SECONDS = {"raw": None, "minute": 60, "hour": 3600}


class UsageQuery(serializers.Serializer):
    sandbox = serializers.UUIDField()
    start = serializers.DateTimeField(required=False, help_text="ISO 8601; default: an hour ago.")
    to = serializers.DateTimeField(required=False, help_text="ISO 8601; default: now.")
    step = serializers.ChoiceField(
        choices=["auto", *STEPS], default="auto", help_text="raw, minute, hour, or auto."
    )

    def to_internal_value(self, data):
        data = data.copy()
        if "from" in data:  # `from` is a Python keyword: the field is `start`
            data["start"] = data.pop("from")[0] if hasattr(data, "getlist") else data.pop("from")
        return super().to_internal_value(data)

    def validate(self, attrs):
        now = timezone.now()
        end = attrs.get("to") or now
        start = attrs.get("start") or end - dt.timedelta(hours=1)
        if start >= end:
            raise serializers.ValidationError({"from": _("`from` must be before `to`.")})
        step = attrs["step"]
        if step == "auto":
            step = step_for(start, end)
        if step == "raw":
            oldest = now - dt.timedelta(hours=settings.METERING_RAW_RETENTION_HOURS)
            if start < oldest:
                raise serializers.ValidationError(
                    {
                        "step": _("Raw samples are kept for %(h)s hours: use minute or hour.")
                        % {"h": settings.METERING_RAW_RETENTION_HOURS}
                    }
                )
        else:
            points = (end - start).total_seconds() / STEP_SECONDS[step]
            if points > MAX_POINTS:
                raise serializers.ValidationError(
                    {
                        "step": _(
                            "That would be more than %(n)s points: use a coarser step or a "
                            "shorter range."
                        )
                        % {"n": MAX_POINTS}
                    }
                )
        return {"sandbox": attrs["sandbox"], "start": start, "end": end, "step": step}


class UsageSeriesSerializer(serializers.Serializer):
    sandbox = serializers.UUIDField()
    step = serializers.CharField()
    start = serializers.DateTimeField(source="from")
    to = serializers.DateTimeField()
    interval_seconds = serializers.IntegerField()
    t = serializers.ListField(child=serializers.IntegerField(), help_text="Unix seconds.")
    gpu_util_pct = serializers.ListField(child=serializers.FloatField(allow_null=True))
    gpu_memory_used_mib = serializers.ListField(child=serializers.FloatField(allow_null=True))
    gpu_power_w = serializers.ListField(child=serializers.FloatField(allow_null=True))
    cpu_pct = serializers.ListField(child=serializers.FloatField(allow_null=True))
    memory_used_mib = serializers.ListField(child=serializers.FloatField(allow_null=True))


def _visible_sandboxes(request):
    if is_service(request):
        return Sandbox.objects.filter(
            organisation=request.user.organisation, deleted_at__isnull=True
        )
    return Sandbox.objects.for_user(request.user)


class UsageApi(APIView):
    required_scopes = ["usage:read"]

    @extend_schema(
        parameters=[
            OpenApiParameter("sandbox", str, required=True, description="The sandbox's id."),
            OpenApiParameter("from", str, description="ISO 8601 start (default: an hour ago)."),
            OpenApiParameter("to", str, description="ISO 8601 end (default: now)."),
            OpenApiParameter(
                "step", str, enum=["auto", *STEPS], description="Resolution (default: auto)."
            ),
        ],
        responses=UsageSeriesSerializer,
        operation_id="usage_get",
    )
    def get(self, request):
        query = UsageQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        sandbox = _visible_sandboxes(request).filter(public_id=q["sandbox"]).first()
        if sandbox is None:
            raise Http404
        series = usage_series(sandbox=sandbox, start=q["start"], end=q["end"], step=q["step"])
        body = {
            "sandbox": str(sandbox.public_id),
            "step": series["step"],
            "from": q["start"].isoformat(),
            "to": q["end"].isoformat(),
            "interval_seconds": settings.METERING_INTERVAL,
            "t": series["t"],
            **{name: series[name] for name in SERIES},
        }
        return Response(body)
