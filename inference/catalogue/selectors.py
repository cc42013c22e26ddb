"""Reads of the catalogue for the people who call models: what a person may call, one model's
page, and its prices as people read them (per million tokens, in credit-seconds and in PKR)."""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from portal.credits.units import SECONDS_PER_HOUR
from portal.organisations.models import MANAGER_ROLES, Organisation
from portal.organisations.selectors import organisations_of

from .models import ServedModel

TOKENS_PER_PRICE = 1000  # prices are per 1,000 tokens
TOKENS_PER_MILLION = 1_000_000


def models_for_person(*, user) -> QuerySet[ServedModel]:
    """The models a signed-in person may call, by name; none for anyone else."""
    return ServedModel.objects.visible_to_person(user=user).order_by("name")


def model_for_person(*, user, name: str) -> ServedModel | None:
    """One model by name when the person may call it; None hides the others (404), whether
    they exist or not."""
    return models_for_person(user=user).filter(name=name).first()


def models_serving(*, models) -> set[int]:
    """Which of these models have a replica ready now (the rest answer 'no replica' today)."""
    return set(
        ServedModel.objects.filter(
            pk__in=[model.pk for model in models],
            deployments__state="active",
            deployments__replicas__state="ready",
        ).values_list("pk", flat=True)
    )


@dataclass(frozen=True)
class Price:
    """A price per million tokens: exact credit-seconds, and PKR at the programme's rate."""

    credit_seconds: Decimal
    pkr: Decimal


def price_per_million(price_per_thousand: Decimal) -> Price:
    credit_seconds = Decimal(price_per_thousand) * (TOKENS_PER_MILLION // TOKENS_PER_PRICE)
    pkr = credit_seconds * settings.CREDITS_DEFAULT_RATE_PKR_PER_GPU_HOUR / SECONDS_PER_HOUR
    return Price(
        credit_seconds=credit_seconds.quantize(Decimal("0.001")),
        pkr=pkr.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP),
    )


def payers_for_person(*, user) -> list[Organisation]:
    """The organisations a person may pay for playground requests from (those they belong to)."""
    return list(organisations_of(user=user).filter(is_active=True).order_by("legal_name"))


def is_student(*, user) -> bool:
    """Whether the person has a student's own credit account to pay from."""
    return get_user_model().objects.filter(pk=user.pk, student_profile__isnull=False).exists()


def organisations_managed(*, user) -> list[Organisation]:
    """The organisations the person owns or administers (whose request logging they set)."""
    return list(
        Organisation.objects.filter(
            memberships__user=user, memberships__role__in=MANAGER_ROLES
        ).order_by("legal_name")
    )
