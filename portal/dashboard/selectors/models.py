"""The model API's programme pages: the catalogue with each model's deployment, the deployments
with their replicas, and a month of model usage beside what serving it cost in GPU time."""

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count, F, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from inference.catalogue.models import MICROCREDITS_PER_CREDIT_SECOND, ServedModel
from inference.deployments import selectors as deployment_selectors
from inference.deployments.models import Deployment, Replica
from inference.usage.models import ModelRequest
from portal.credits.units import month_bounds

# What a month's report counts: requests that reached the end (charged or waiting to be);
# running ones hold a maximum, not a cost, and free ones produced nothing.
REPORTED_STATUSES = (ModelRequest.Status.FINISHED, ModelRequest.Status.POSTED)


def served_models_list() -> QuerySet[ServedModel]:
    """Every model, offered or not, with its active deployment's wanted and ready replicas."""
    active = Deployment.objects.filter(model=OuterRef("pk"), state=Deployment.State.ACTIVE)
    ready = Replica.objects.filter(
        deployment__model=OuterRef("pk"),
        deployment__state=Deployment.State.ACTIVE,
        state=Replica.State.READY,
    )
    return (
        ServedModel.objects.select_related("organisation", "cohort")
        .annotate(
            replicas_wanted=Subquery(active.values("replicas_wanted")[:1]),
            replicas_ready=Coalesce(
                Subquery(
                    ready.order_by()
                    .values("deployment__model")
                    .annotate(n=Count("pk"))
                    .values("n")[:1]
                ),
                0,
            ),
        )
        .order_by("-is_active", "name")
    )


def deployment_active(*, model: ServedModel) -> Deployment | None:
    return deployment_selectors.deployment_active_for(model=model)


def replicas_of(*, deployment: Deployment) -> list[Replica]:
    """Every replica of a deployment, the live ones first, for people to read (never its key)."""
    return list(
        deployment.replicas.defer("api_key").order_by(
            F("stopped_at").desc(nulls_first=True), "-created_at"
        )[:100]
    )


def deployments_active() -> list[tuple[Deployment, list[Replica]]]:
    """The deployments serving now, each with its live replicas (stopped ones are history)."""
    deployments = list(
        Deployment.objects.filter(state=Deployment.State.ACTIVE)
        .select_related("model")
        .order_by("model__name")
    )
    replicas: dict[int, list[Replica]] = {deployment.pk: [] for deployment in deployments}
    live = (
        Replica.objects.filter(deployment__in=deployments, state__in=Replica.LIVE_STATES)
        .defer("api_key")
        .order_by("created_at")
    )
    for replica in live:
        replicas[replica.deployment_id].append(replica)
    return [(deployment, replicas[deployment.pk]) for deployment in deployments]


def credit_seconds(microcredits: int) -> Decimal:
    """Microcredit-seconds as credit-seconds to three decimals, rounded half up as the
    statements round."""
    return (Decimal(microcredits) / MICROCREDITS_PER_CREDIT_SECOND).quantize(
        Decimal("0.001"), rounding=ROUND_HALF_UP
    )


@dataclass
class UsageRow:
    key: str
    name: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_microcredits: int
    gpu_seconds: int | None = None  # serving cost, by model only
    replica_seconds: int | None = None

    @property
    def credit_seconds(self) -> Decimal:
        return credit_seconds(self.cost_microcredits)


@dataclass
class ModelUsageReport:
    month: dt.date
    by_model: list[UsageRow] = field(default_factory=list)
    by_organisation: list[UsageRow] = field(default_factory=list)
    total: UsageRow | None = None
    serving_cost_known: bool = False
    serving_gpu_seconds: int = 0


_SUMS = {
    "requests": Count("pk"),
    "prompt": Coalesce(Sum("prompt_tokens"), 0),
    "completion": Coalesce(Sum("completion_tokens"), 0),
    "cost": Coalesce(Sum("cost_microcredits"), 0),
}


def _row(key: str, name: str, sums: dict) -> UsageRow:
    return UsageRow(
        key=key,
        name=name,
        requests=sums["requests"],
        prompt_tokens=sums["prompt"],
        completion_tokens=sums["completion"],
        cost_microcredits=sums["cost"],
    )


def model_usage_report(*, month: dt.date) -> ModelUsageReport:
    """A month of model usage (Pakistan time): requests, tokens and credits by model and by
    organisation (students' own accounts as one line), and each model's GPU time serving it.

    A model that only cost GPU time (deployed, never called) still gets its row."""
    start, end = month_bounds(month)
    requests = ModelRequest.objects.filter(
        started_at__gte=start, started_at__lt=end, status__in=REPORTED_STATUSES
    )
    report = ModelUsageReport(month=month)
    rows: dict[int, UsageRow] = {}
    for sums in (
        requests.values("model_id", "model__name").annotate(**_SUMS).order_by("model__name")
    ):
        rows[sums["model_id"]] = _row(sums["model__name"], sums["model__name"], sums)
    for sums in (
        requests.values("account__organisation__public_id", "account__organisation__legal_name")
        .annotate(**_SUMS)
        .order_by("-cost", "account__organisation__legal_name")
    ):
        public_id = sums["account__organisation__public_id"]
        report.by_organisation.append(
            _row(
                str(public_id or ""),
                sums["account__organisation__legal_name"] or "",
                sums,
            )
        )
    report.total = _row("", "", requests.aggregate(**_SUMS))
    serving = getattr(deployment_selectors, "serving_gpu_seconds", None)
    if serving is not None:
        report.serving_cost_known = True
        for cost in serving(start=start, end=end):
            row = rows.get(cost.model_id)
            if row is None:
                row = rows[cost.model_id] = UsageRow(cost.model_name, cost.model_name, 0, 0, 0, 0)
            row.gpu_seconds = cost.gpu_seconds
            row.replica_seconds = cost.replica_seconds
            report.serving_gpu_seconds += cost.gpu_seconds
    report.by_model = sorted(rows.values(), key=lambda row: (-row.cost_microcredits, row.name))
    return report
