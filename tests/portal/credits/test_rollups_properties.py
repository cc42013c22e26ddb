"""The roll-ups equal the ledger, whatever is posted, on every path that writes them.

Random sequences of grants, student allowances, usage (single charges, and batches through
`usage_charge_batch` that an account can only partly pay), expiries, revocations and
adjustments either way, with the clock moved between them across local midnights and a month
end (Pakistan time is five hours ahead of UTC, so a cut at UTC midnight would be caught). After
each sequence every account's roll-ups are compared with sums recomputed here, in Python, from
the entries; the programme roll-ups with sums recomputed from the entries and each holder's
sector, province, university and cohort; and the rebuild must find nothing to change.

Paths: inside a test transaction the ledger takes `credits_apply_postings` on PostgreSQL and the
ORM on SQLite; committed for real (transaction=True) it takes `credits_post`, `credits_post_debit`
and `credits_post_usage` on PostgreSQL (and the ORM again on SQLite).
"""

import contextlib
import datetime as dt
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
import time_machine
from django.db.models import F
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.credits.charge_metadata import ChargeMetadata
from portal.credits.models import (
    AccountRollup,
    CreditAccount,
    CreditGrant,
    LedgerEntry,
    ProgrammeRollup,
    RollupPeriod,
)
from portal.credits.services import (
    InsufficientCredits,
    UsageDue,
    account_for_student,
    account_rollups_rebuild,
    adjustment_post,
    grant_issue,
    grant_revoke,
    grants_expire_due,
    rollups_refresh,
    system_account,
    usage_charge,
    usage_charge_batch,
)
from tests.factories import (
    CohortFactory,
    OrganisationFactory,
    StudentProfileFactory,
    UniversityFactory,
    UserFactory,
)
from tests.portal.credits.helpers import org_account

RATES = [Decimal("750.00"), Decimal("123.45"), Decimal("0.00")]
HOLDERS = 4  # two organisations, two students
# 23:40 in Karachi on 31 January: the first minutes of a sequence cross a local midnight that is
# also a month end; later steps cross more midnights.
START = dt.datetime(2027, 1, 31, 23, 40, tzinfo=dt.timezone(dt.timedelta(hours=5)))

holder = st.integers(min_value=0, max_value=HOLDERS - 1)
amount = st.integers(min_value=1, max_value=4_000)
operations = st.one_of(
    st.tuples(st.just("grant"), holder, amount, st.sampled_from(RATES), st.integers(1, 72)),
    st.tuples(st.just("usage"), holder, amount),
    st.tuples(st.just("batch"), st.lists(st.tuples(holder, amount), min_size=1, max_size=5)),
    st.tuples(st.just("revoke"), st.integers(min_value=0, max_value=20)),
    st.tuples(st.just("adjust"), holder, st.integers(min_value=-3_000, max_value=3_000)),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=60 * 30)),
)


class Programme:
    """Two organisations in different sectors and provinces, a student of a listed university
    (and no cohort), a cohort student without a listed university; and a programme manager."""

    def __init__(self):
        self.manager = UserFactory()
        self.accounts = [
            org_account(OrganisationFactory(sector="software", province="punjab")),
            org_account(OrganisationFactory(sector="health", province="sindh")),
            account_for_student(
                StudentProfileFactory(
                    route="email_domain", university=UniversityFactory(), cohort=None
                ).user
            ),
            account_for_student(StudentProfileFactory(cohort=CohortFactory()).user),
        ]
        self.lots: list[CreditGrant] = []

    def run(self, operation, clock) -> None:
        name, *args = operation
        # A refusal writes nothing: the comparison after the sequence holds all the same.
        with contextlib.suppress(InsufficientCredits):
            getattr(self, name)(*args, clock=clock)

    def grant(self, index, seconds, rate, hours, *, clock):
        account = self.accounts[index]
        is_student = account.kind == CreditAccount.Kind.STUDENT
        source = CreditGrant.Source.ALLOWANCE if is_student else CreditGrant.Source.APPLICATION
        self.lots.append(
            grant_issue(
                account=account,
                credit_seconds=seconds,
                rate_pkr_per_gpu_hour=rate,
                expires_at=timezone.now() + dt.timedelta(hours=hours),
                source=source,
                kind="allowance" if is_student else "grant",
                idempotency_key=f"prop-grant:{uuid.uuid4()}",
            )
        )

    def usage(self, index, seconds, *, clock):
        usage_charge(
            account=self.accounts[index],
            credit_seconds=seconds,
            idempotency_key=f"prop-usage:{uuid.uuid4()}",
            metadata={"sandbox": "s"},
        )

    def batch(self, items, *, clock):
        usage_charge_batch(
            [
                UsageDue(
                    self.accounts[index].pk,
                    seconds,
                    f"prop-batch:{uuid.uuid4()}",
                    ChargeMetadata(sandbox="s"),
                )
                for index, seconds in items
            ],
            partial=True,
        )

    def revoke(self, which, *, clock):
        if not self.lots:
            return
        grant = CreditGrant.objects.get(pk=self.lots[which % len(self.lots)].pk)
        if grant.revoked_at is None and grant.remaining and not grant.is_expired:
            grant_revoke(grant=grant, reason="property test", acting_user=self.manager)

    def adjust(self, index, seconds, *, clock):
        if seconds:
            adjustment_post(
                account=self.accounts[index],
                credit_seconds=seconds,
                reason="property test",
                idempotency_key=f"prop-adjust:{uuid.uuid4()}",
                acting_user=self.manager,
            )

    def advance(self, minutes, *, clock):
        clock.shift(dt.timedelta(minutes=minutes))
        grants_expire_due()


# --- What the roll-ups must hold, recomputed here from the entries --------------------------


def expected_account_rollups() -> dict:
    sums = defaultdict(lambda: [0, 0])
    entries = LedgerEntry.objects.exclude(account__kind=CreditAccount.Kind.SYSTEM).values_list(
        "account_id", "created_at", "transaction__kind", "grant__rate_pkr_per_gpu_hour", "amount"
    )
    for account_id, created_at, kind, rate, value in entries:
        day = timezone.localtime(created_at).date()
        for period, starts in (("day", day), ("month", day.replace(day=1))):
            total = sums[(account_id, period, starts, kind, rate)]
            total[0] += value
            total[1] += 1
    return dict(sums)


def stored_account_rollups() -> dict:
    return {
        row[:5]: [row[5], row[6]]
        for row in AccountRollup.objects.values_list(
            "account_id", "period", "starts", "kind", "rate_pkr_per_gpu_hour", "amount", "entries"
        )
    }


def _dimension_keys(account: CreditAccount) -> dict[str, str]:
    if account.kind == CreditAccount.Kind.ORGANISATION:
        organisation = account.organisation
        return {
            "programme": "",
            "sector": organisation.sector,
            "province": organisation.province,
            "university": "~organisations",
            "cohort": "~organisations",
        }
    profile = account.user.student_profile
    return {
        "programme": "",
        "sector": "~students",
        "province": "~students",
        "university": profile.university.name if profile.university_id else "~none",
        "cohort": str(profile.cohort.public_id) if profile.cohort_id else "~none",
    }


def expected_programme_rollups() -> dict:
    accounts = {
        a.pk: a
        for a in CreditAccount.objects.exclude(kind=CreditAccount.Kind.SYSTEM).select_related(
            "organisation", "user__student_profile__university", "user__student_profile__cohort"
        )
    }
    sums = defaultdict(lambda: [0, 0, set()])
    for (account_id, period, starts, kind, rate), (
        value,
        count,
    ) in expected_account_rollups().items():
        account = accounts[account_id]
        for dimension, key in _dimension_keys(account).items():
            if period == "day" and dimension != "programme":
                continue
            total = sums[(period, starts, dimension, key, account.kind, kind, rate)]
            total[0] += value
            total[1] += count
            total[2].add(account_id)
    return {key: [v, c, len(holders)] for key, (v, c, holders) in sums.items()}


def stored_programme_rollups() -> dict:
    return {
        row[:7]: list(row[7:])
        for row in ProgrammeRollup.objects.values_list(
            "period",
            "starts",
            "dimension",
            "key",
            "holder_kind",
            "kind",
            "rate_pkr_per_gpu_hour",
            "amount",
            "entries",
            "holders",
        )
    }


def assert_rollups_equal_the_ledger() -> None:
    # every entry carries its transaction's kind
    assert not LedgerEntry.objects.exclude(kind=F("transaction__kind")).exists()
    # the accounts' roll-ups, written with the postings
    assert stored_account_rollups() == expected_account_rollups()
    # the programme's, once refreshed for every month there is
    months = set(
        AccountRollup.objects.filter(period=RollupPeriod.MONTH).values_list("starts", flat=True)
    )
    rollups_refresh(months=months)
    assert stored_programme_rollups() == expected_programme_rollups()
    # and the rebuild from the ledger finds nothing to change
    assert account_rollups_rebuild() == 0


def _sequence(programme: Programme, steps) -> None:
    with time_machine.travel(START, tick=False) as clock:
        for step in steps:
            programme.run(step, clock)
        assert_rollups_equal_the_ledger()


SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.django_db
@SETTINGS
@given(steps=st.lists(operations, min_size=1, max_size=14))
def test_roll_ups_equal_the_ledger_inside_a_transaction(steps):
    _sequence(Programme(), steps)


@pytest.mark.django_db(transaction=True)
@SETTINGS
@given(steps=st.lists(operations, min_size=1, max_size=14))
def test_roll_ups_equal_the_ledger_when_each_posting_commits(steps):
    for code in CreditAccount.System.values:  # as migration 0002 made them (flushed since)
        system_account(code)
    _sequence(Programme(), steps)
