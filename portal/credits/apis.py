"""REST API v1 for credits and credit applications. Thin: serializers in and out, services do
the work, the same services as the HTML pages.

One module on purpose (about 450 lines, most of them serializers and OpenAPI annotations): it
is the whole /api/v1/credits surface, read top to bottom as the schema lists it, and each
endpoint sits beside the serializers it alone uses."""

import datetime as dt

from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.apikeys.idempotency import idempotent
from portal.apikeys.permissions import granted_scopes
from portal.apikeys.principal import (
    acting_person,
    is_programme_manager,
    is_service,
    organisation_acting_for,
    organisations_visible,
)
from portal.audit.services import client_ip
from portal.core.api.fields import BoundedDateTimeField
from portal.core.api.pagination import NewestFirstCursorPagination
from portal.core.dates import YEARS
from portal.core.exceptions import ApplicationError
from portal.organisations.models import Sector
from portal.users.models import User

from .charge_metadata import ChargeMetadata
from .forms import MAX_GPU_HOURS
from .models import (
    ApplicationState,
    CreditAccount,
    CreditApplication,
    GpuClass,
    LedgerEntry,
    LedgerTransaction,
)
from .selectors import (
    STATEMENT_TOTALS,
    ModelUsage,
    Statement,
    account_of,
    available_credit_seconds,
    grants_of,
    statement_for,
)
from .services import applications as workflow
from .units import day_end, display_gpu_hours, display_pkr, month_parse

ORGANISATION_PARAM = OpenApiParameter(
    "organisation",
    OpenApiTypes.UUID,
    description="Which of your organisations (needed only when you belong to several).",
)


def _account(request) -> CreditAccount:
    """The account the request reads: its organisation's, or, for a student, their own."""
    organisation = organisation_acting_for(request)
    if organisation is not None:
        account = account_of(organisation=organisation)
        if account is None:  # an organisation that was never funded: an empty account
            return CreditAccount(
                kind=CreditAccount.Kind.ORGANISATION, organisation=organisation, balance=0
            )
        return account
    if not is_service(request):
        account = account_of(user=request.user)
        if account is not None:
            return account
    raise Http404


# --- Balance, ledger, statements ---------------------------------------------------------------


class LotSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    source = serializers.CharField()
    granted_credit_seconds = serializers.IntegerField(source="amount")
    remaining_credit_seconds = serializers.IntegerField(source="remaining")
    rate_pkr_per_gpu_hour = serializers.DecimalField(max_digits=12, decimal_places=2)
    expires_at = serializers.DateTimeField()
    revoked = serializers.SerializerMethodField()

    def get_revoked(self, grant) -> bool:
        return grant.revoked_at is not None


class BalanceSerializer(serializers.Serializer):
    account = serializers.UUIDField(allow_null=True)
    holder = serializers.CharField()
    available_credit_seconds = serializers.IntegerField()
    available_gpu_hours = serializers.DecimalField(max_digits=14, decimal_places=2)
    balance_credit_seconds = serializers.IntegerField()
    lots = LotSerializer(many=True)


class BalanceApi(APIView):
    required_scopes = ["credits:read"]

    @extend_schema(
        parameters=[ORGANISATION_PARAM], responses=BalanceSerializer, operation_id="credits_balance"
    )
    def get(self, request):
        account = _account(request)
        saved = account.pk is not None
        available = available_credit_seconds(account=account) if saved else 0
        data = {
            "account": account.public_id if saved else None,
            "holder": str(account.organisation or account.user),
            "available_credit_seconds": available,
            "available_gpu_hours": display_gpu_hours(available),
            "balance_credit_seconds": account.balance or 0,
            "lots": grants_of(account=account) if saved else [],
        }
        return Response(BalanceSerializer(data).data)


class ModelUsageLineSerializer(serializers.Serializer):
    model = serializers.CharField()
    key = serializers.UUIDField(allow_null=True, help_text="The API key; null: the playground.")
    key_name = serializers.CharField(allow_blank=True)
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost_microcredits = serializers.IntegerField(
        source="microcredits", help_text="Millionths of a credit-second."
    )
    cost_credit_seconds = serializers.DecimalField(max_digits=24, decimal_places=6)


class LedgerEntrySerializer(serializers.Serializer):
    transaction = serializers.UUIDField(source="transaction.public_id")
    kind = serializers.CharField(source="transaction.kind")
    description = serializers.CharField(source="transaction.description")
    amount_credit_seconds = serializers.IntegerField(source="amount")
    lot = serializers.UUIDField(source="grant.public_id", allow_null=True, default=None)
    sandbox = serializers.SerializerMethodField()
    model_usage = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_sandbox(self, entry) -> str | None:
        return ChargeMetadata.from_json(entry.transaction.metadata).sandbox

    @extend_schema_field(ModelUsageLineSerializer(many=True, allow_null=True))
    def get_model_usage(self, entry) -> list | None:
        """A model-usage charge's requests by model and key; null for any other entry."""
        items = ChargeMetadata.from_json(entry.transaction.metadata).model_usage
        if items is None:
            return None
        lines = [
            ModelUsage(
                model=item.get("model") or "",
                key=item.get("key"),
                key_name=item.get("key_name") or "",
                requests=int(item.get("requests") or 0),
                prompt_tokens=int(item.get("prompt_tokens") or 0),
                completion_tokens=int(item.get("completion_tokens") or 0),
                microcredits=int(item.get("microcredits") or 0),
            )
            for item in items
        ]
        return ModelUsageLineSerializer(lines, many=True).data


class LedgerFilter(serializers.Serializer):
    kind = serializers.ChoiceField(choices=LedgerTransaction.Kind.choices, required=False)
    since = BoundedDateTimeField(required=False)
    until = BoundedDateTimeField(required=False)
    organisation = serializers.UUIDField(required=False)


class LedgerApi(generics.ListAPIView):
    """The account's entries, newest first (cursor pages)."""

    required_scopes = ["credits:read"]
    serializer_class = LedgerEntrySerializer
    pagination_class = NewestFirstCursorPagination

    @extend_schema(parameters=[LedgerFilter], operation_id="credits_ledger")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = LedgerFilter(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        account = _account(self.request)
        if account.pk is None:
            return LedgerEntry.objects.none()
        entries = LedgerEntry.objects.filter(account=account).select_related("transaction", "grant")
        if "kind" in filters.validated_data:
            entries = entries.filter(transaction__kind=filters.validated_data["kind"])
        if "since" in filters.validated_data:
            entries = entries.filter(created_at__gte=filters.validated_data["since"])
        if "until" in filters.validated_data:
            entries = entries.filter(created_at__lt=filters.validated_data["until"])
        return entries


class StatementSerializer(serializers.Serializer):
    account = serializers.UUIDField(allow_null=True)
    month = serializers.CharField()
    opening_credit_seconds = serializers.IntegerField(source="opening")
    opening_pkr = serializers.DecimalField(max_digits=18, decimal_places=2)
    closing_credit_seconds = serializers.IntegerField(source="closing")
    closing_pkr = serializers.DecimalField(max_digits=18, decimal_places=2)
    totals_credit_seconds = serializers.DictField(child=serializers.IntegerField(), source="totals")
    totals_pkr = serializers.DictField(
        child=serializers.DecimalField(max_digits=18, decimal_places=2)
    )
    usage = serializers.ListField(child=serializers.DictField())
    model_usage_credit_seconds = serializers.IntegerField(
        help_text="What the ledger charged this month for model requests (negative)."
    )
    model_usage = ModelUsageLineSerializer(
        many=True, help_text="The month's model requests by model and key, at their exact cost."
    )
    lines = serializers.ListField(child=serializers.DictField())


class StatementApi(APIView):
    required_scopes = ["credits:read"]

    @extend_schema(
        parameters=[ORGANISATION_PARAM],
        responses=StatementSerializer,
        operation_id="credits_statement",
    )
    def get(self, request, month: str):
        first_day = month_parse(month)
        if first_day is None:
            raise Http404
        account = _account(request)
        if account.pk is None:  # never funded: an empty month
            statement = Statement(
                account=account,
                month=first_day,
                opening=0,
                opening_pkr=0,
                closing=0,
                closing_pkr=0,
                totals=dict.fromkeys(STATEMENT_TOTALS, 0),
                totals_pkr=dict.fromkeys(STATEMENT_TOTALS, 0),
            )
        else:
            statement = statement_for(account=account, month=first_day)
        data = {
            "account": account.public_id if account.pk else None,
            "month": month,
            "opening": statement.opening,
            "opening_pkr": display_pkr(statement.opening_pkr),
            "closing": statement.closing,
            "closing_pkr": display_pkr(statement.closing_pkr),
            "totals": statement.totals,
            "totals_pkr": {k: display_pkr(v) for k, v in statement.totals_pkr.items()},
            "usage": [
                {
                    "sandbox": line.sandbox,
                    "sandbox_name": line.name,
                    "profile": line.profile,
                    "credit_seconds": line.credit_seconds,
                    "pkr": str(display_pkr(line.pkr)),
                }
                for line in statement.usage_by_sandbox
            ],
            "model_usage_credit_seconds": (
                statement.model_usage.credit_seconds if statement.model_usage else 0
            ),
            "model_usage": statement.usage_by_model,
            "lines": [
                {
                    "at": line.at.isoformat(),
                    "kind": line.kind,
                    "description": line.description,
                    "credit_seconds": line.credit_seconds,
                    "pkr": str(display_pkr(line.pkr)),
                }
                for line in statement.lines
            ],
        }
        return Response(StatementSerializer(data).data)


# --- Credit applications ----------------------------------------------------------------------


class ApplicationOutSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    organisation = serializers.UUIDField(source="organisation.public_id")
    title = serializers.CharField()
    summary = serializers.CharField()
    sector = serializers.CharField()
    requested_gpu_hours = serializers.IntegerField()
    gpu_class = serializers.CharField()
    duration_months = serializers.IntegerField()
    data_sensitivity = serializers.CharField()
    team_members = serializers.SerializerMethodField()
    state = serializers.CharField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    decided_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_team_members(self, application) -> list[str]:
        return [person.hub_username for person in application.team_members.all()]


class ApplicationInSerializer(serializers.Serializer):
    organisation = serializers.UUIDField(required=False)
    title = serializers.CharField(max_length=200)
    summary = serializers.CharField(max_length=5000)
    sector = serializers.ChoiceField(choices=Sector.choices)
    requested_gpu_hours = serializers.IntegerField(min_value=1, max_value=MAX_GPU_HOURS)
    gpu_class = serializers.ChoiceField(choices=GpuClass.choices, default=GpuClass.ANY)
    duration_months = serializers.IntegerField(min_value=1, max_value=24)
    data_sensitivity = serializers.ChoiceField(
        choices=CreditApplication._meta.get_field("data_sensitivity").choices
    )
    team_members = serializers.ListField(
        child=serializers.CharField(max_length=32), required=False, max_length=200
    )


def _applications(request):
    applications = CreditApplication.objects.select_related("organisation").prefetch_related(
        "team_members"
    )
    if is_programme_manager(request) and granted_scopes(request) & {
        "programme:read",
        "programme:write",
    }:
        return applications
    return applications.filter(organisation__in=organisations_visible(request))


class ApplicationListFilter(serializers.Serializer):
    state = serializers.ChoiceField(choices=ApplicationState.choices, required=False)


class ApplicationListCreateApi(generics.ListAPIView):
    required_scopes = {"GET": ["applications:read"], "POST": ["applications:write"]}
    serializer_class = ApplicationOutSerializer
    pagination_class = NewestFirstCursorPagination

    def get_queryset(self):
        filters = ApplicationListFilter(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        applications = _applications(self.request)
        if "state" in filters.validated_data:
            applications = applications.filter(state=filters.validated_data["state"])
        return applications

    @extend_schema(parameters=[ApplicationListFilter], operation_id="credit_applications_list")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=ApplicationInSerializer,
        responses={201: ApplicationOutSerializer},
        operation_id="credit_applications_create",
    )
    @idempotent
    def post(self, request):
        data = ApplicationInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        details = dict(data.validated_data)
        organisation = organisation_acting_for(request, details.pop("organisation", None))
        if organisation is None:
            raise ApplicationError(_("Apply as an organisation."), field="organisation")
        usernames = details.pop("team_members", [])
        team = list(User.objects.filter(hub_username__in=usernames))
        if len(team) != len(set(usernames)):
            raise ApplicationError(_("Unknown team member."), field="team_members")
        application = workflow.application_create(
            organisation=organisation,
            acting_user=acting_person(request),
            team_members=team,
            **details,
        )
        return Response(ApplicationOutSerializer(application).data, status=status.HTTP_201_CREATED)


class ApplicationDetailApi(generics.RetrieveAPIView):
    required_scopes = ["applications:read"]
    serializer_class = ApplicationOutSerializer
    lookup_field = "public_id"
    lookup_url_kwarg = "public_id"

    def get_queryset(self):
        return _applications(self.request)

    @extend_schema(operation_id="credit_applications_retrieve")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ApproveInSerializer(serializers.Serializer):
    gpu_hours = serializers.IntegerField(min_value=1, max_value=MAX_GPU_HOURS)
    expires_on = serializers.DateField()
    rate_pkr_per_gpu_hour = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=0, max_value=1_000_000
    )
    message = serializers.CharField(max_length=5000, required=False, allow_blank=True)

    def validate_expires_on(self, value: dt.date) -> dt.date:
        if value <= timezone.localdate():
            raise serializers.ValidationError(_("Choose an expiry after today."))
        if value.year > YEARS[1]:
            raise serializers.ValidationError(_("Choose an expiry before the year 3000."))
        return value


class RejectInSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=5000)


class _ApplicationActionApi(APIView):
    def application(self, request, public_id) -> CreditApplication:
        return get_object_or_404(_applications(request), public_id=public_id)

    def respond(self, application) -> Response:
        application.refresh_from_db()
        return Response(ApplicationOutSerializer(application).data)


class ApplicationSubmitApi(_ApplicationActionApi):
    required_scopes = ["applications:write"]

    @extend_schema(
        request=None, responses=ApplicationOutSerializer, operation_id="credit_applications_submit"
    )
    def post(self, request, public_id):
        application = self.application(request, public_id)
        workflow.application_submit(
            application=application, acting_user=acting_person(request), ip=client_ip(request)
        )
        return self.respond(application)


class ApplicationApproveApi(_ApplicationActionApi):
    required_scopes = ["programme:write"]

    @extend_schema(
        request=ApproveInSerializer,
        responses=ApplicationOutSerializer,
        operation_id="credit_applications_approve",
    )
    def post(self, request, public_id):
        application = self.application(request, public_id)
        data = ApproveInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        expires_at = day_end(data.validated_data["expires_on"])
        workflow.application_approve(
            application=application,
            acting_user=request.user,
            gpu_hours=data.validated_data["gpu_hours"],
            expires_at=expires_at,
            rate_pkr_per_gpu_hour=data.validated_data["rate_pkr_per_gpu_hour"],
            message=data.validated_data.get("message", ""),
            ip=client_ip(request),
        )
        return self.respond(application)


class ApplicationRejectApi(_ApplicationActionApi):
    required_scopes = ["programme:write"]

    @extend_schema(
        request=RejectInSerializer,
        responses=ApplicationOutSerializer,
        operation_id="credit_applications_reject",
    )
    def post(self, request, public_id):
        application = self.application(request, public_id)
        data = RejectInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        workflow.application_reject(
            application=application,
            acting_user=request.user,
            reason=data.validated_data["reason"],
            ip=client_ip(request),
        )
        return self.respond(application)
