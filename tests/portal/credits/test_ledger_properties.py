"""Properties of the books, checked after every step of random sequences of ledger operations.

A model of the lots (what each holds, when it expires, whether it lapsed, expired or was
revoked) predicts every outcome; after each step the books must agree with the model and with
themselves: every transaction sums to zero, the cached balance equals the sum of the account's
entries and the sum of its lots, nothing is negative, and each expiry moved exactly what was
left unused at that moment.
"""

import datetime as dt
import uuid
from dataclasses import dataclass

import pytest
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from portal.core.exceptions import ApplicationError
from portal.credits.models import CreditAccount, CreditGrant, LedgerEntry, LedgerTransaction
from portal.credits.services import (
    IdempotencyConflict,
    InsufficientCredits,
    adjustment_post,
    grant_expire,
    grant_issue,
    grant_revoke,
    grants_expire_due,
    usage_charge,
)
from tests.portal.credits.helpers import RATE, entries_sum, org_account

pytestmark = pytest.mark.django_db

AMOUNTS = st.integers(min_value=1, max_value=5_000)
DAYS = st.integers(min_value=1, max_value=4)  # few distinct expiries: ties on expires_at happen


@dataclass
class Lot:
    pk: int
    amount: int
    remaining: int
    expires_at: dt.datetime
    lapsed: bool = False  # its expiry is in the past
    expired: bool = False  # grant_expire has run on it
    revoked: bool = False
    left_at_expiry: int | None = None  # what grant_expire found unused


@dataclass
class Done:
    """A posting made, to be replayed: how to make it again, and what it returned."""

    operation: str  # "grant", "usage" or "adjustment"
    amount: int
    days: int
    result_pk: int


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.account = org_account()  # a fresh account per example: a clean slate
        self.base = timezone.now()
        self.lots: dict[int, Lot] = {}
        self.done: dict[str, Done] = {}

    # --- the model ------------------------------------------------------------------------

    def _open_lots(self) -> list[Lot]:
        lots = [lot for lot in self.lots.values() if not lot.lapsed and lot.remaining > 0]
        return sorted(lots, key=lambda lot: (lot.expires_at, lot.pk))

    def _expected_draws(self, amount: int) -> list[tuple[int, int]] | None:
        """FIFO by expiry, then by age; None when the open lots cannot cover it."""
        draws, needed = [], amount
        for lot in self._open_lots():
            take = min(lot.remaining, needed)
            draws.append((lot.pk, -take))
            needed -= take
            if not needed:
                return draws
        return None

    def _apply(self, draws: list[tuple[int, int]]) -> None:
        for pk, amount in draws:
            self.lots[pk].remaining += amount

    def _lot_add(self, grant: CreditGrant, amount: int, days: int) -> None:
        grant.refresh_from_db()
        assert grant.pk not in self.lots
        assert grant.account_id == self.account.pk
        assert (grant.amount, grant.remaining) == (amount, amount)
        assert grant.expires_at == self._expiry(days)
        self.lots[grant.pk] = Lot(grant.pk, grant.amount, grant.remaining, grant.expires_at)

    def _expiry(self, days: int) -> dt.datetime:
        return self.base + dt.timedelta(days=days)

    def _expire_in_model(self, lot: Lot) -> None:
        lot.left_at_expiry = lot.remaining
        lot.remaining = 0
        lot.expired = True

    def _state(self) -> tuple:
        """What a refusal or a replay must leave as it was."""
        return (
            LedgerTransaction.objects.count(),
            LedgerEntry.objects.count(),
            CreditGrant.objects.filter(account=self.account).count(),
            CreditAccount.objects.values_list("balance", flat=True).get(pk=self.account.pk),
            sorted(
                CreditGrant.objects.filter(account=self.account).values_list(
                    "pk", "remaining", "expired_at", "revoked_at"
                )
            ),
        )

    @staticmethod
    def _drawn(txn: LedgerTransaction) -> list[tuple[int, int]]:
        return list(
            txn.entries.filter(grant__isnull=False).order_by("pk").values_list("grant_id", "amount")
        )

    # --- rules ----------------------------------------------------------------------------

    @initialize(amount=AMOUNTS, days=DAYS)
    def first_grant(self, amount, days):
        self.grant(amount, days)

    @rule(amount=AMOUNTS, days=DAYS)
    def grant(self, amount, days):
        key = f"prop-grant:{uuid.uuid4()}"
        grant = grant_issue(
            account=self.account,
            credit_seconds=amount,
            rate_pkr_per_gpu_hour=RATE,
            expires_at=self._expiry(days),
            source=CreditGrant.Source.APPLICATION,
            idempotency_key=key,
        )
        self._lot_add(grant, amount, days)
        self.done[key] = Done("grant", amount, days, grant.pk)

    @rule(amount=st.one_of(st.integers(min_value=1, max_value=2_000), AMOUNTS))
    def debit(self, amount):
        key = f"prop-usage:{uuid.uuid4()}"
        expected = self._expected_draws(amount)
        if expected is None:
            before = self._state()
            with pytest.raises(InsufficientCredits):
                usage_charge(
                    account=self.account, credit_seconds=amount, idempotency_key=key, metadata={}
                )
            assert self._state() == before
            return
        txn = usage_charge(
            account=self.account, credit_seconds=amount, idempotency_key=key, metadata={}
        )
        assert self._drawn(txn) == expected
        self._apply(expected)
        self.done[key] = Done("usage", amount, 0, txn.pk)

    @precondition(lambda self: any(not lot.lapsed for lot in self.lots.values()))
    @rule(data=st.data())
    def lapse(self, data):
        """A lot's expiry passes; the expiry job has not run yet."""
        lot = data.draw(st.sampled_from([lot for lot in self.lots.values() if not lot.lapsed]))
        CreditGrant.objects.filter(pk=lot.pk).update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
        lot.lapsed = True

    @precondition(lambda self: any(not lot.expired for lot in self.lots.values()))
    @rule(data=st.data(), twice=st.booleans())
    def expire(self, data, twice):
        """A lot's expiry passes (if it had not) and the lot is expired, maybe twice."""
        lot = data.draw(st.sampled_from([lot for lot in self.lots.values() if not lot.expired]))
        if not lot.lapsed:
            CreditGrant.objects.filter(pk=lot.pk).update(
                expires_at=timezone.now() - dt.timedelta(seconds=1)
            )
            lot.lapsed = True
        assert grant_expire(grant=CreditGrant(pk=lot.pk)) == lot.remaining
        self._expire_in_model(lot)
        if twice:
            before = self._state()
            assert grant_expire(grant=CreditGrant(pk=lot.pk)) == 0
            assert self._state() == before

    @precondition(lambda self: any(lot.lapsed and not lot.expired for lot in self.lots.values()))
    @rule()
    def expiry_job(self):
        """The periodic job: every lapsed lot not yet expired is (other examples' too)."""
        grants_expire_due()
        for lot in self.lots.values():
            if lot.lapsed and not lot.expired:
                self._expire_in_model(lot)

    @precondition(lambda self: bool(self.lots))
    @rule(data=st.data())
    def revoke(self, data):
        lot = data.draw(st.sampled_from(sorted(self.lots.values(), key=lambda lot: lot.pk)))
        if lot.revoked or lot.remaining == 0:
            before = self._state()
            with pytest.raises(ApplicationError):
                grant_revoke(grant=CreditGrant(pk=lot.pk), reason="property test", acting_user=None)
            assert self._state() == before
            return
        revoked = grant_revoke(
            grant=CreditGrant(pk=lot.pk), reason="property test", acting_user=None
        )
        assert revoked == lot.remaining
        lot.remaining = 0
        lot.revoked = True

    @rule(
        amount=st.integers(min_value=-3_000, max_value=3_000).filter(bool),
        days=DAYS,
    )
    def adjust(self, amount, days):
        key = f"prop-adjustment:{uuid.uuid4()}"
        kwargs = {
            "account": self.account,
            "credit_seconds": amount,
            "reason": "property test",
            "idempotency_key": key,
            "acting_user": None,
            "expires_at": self._expiry(days),
        }
        if amount > 0:
            txn = adjustment_post(**kwargs)
            grant = CreditGrant.objects.get(entries__transaction=txn)
            assert grant.source == CreditGrant.Source.ADJUSTMENT
            self._lot_add(grant, amount, days)
        else:
            expected = self._expected_draws(-amount)
            if expected is None:
                before = self._state()
                with pytest.raises(InsufficientCredits):
                    adjustment_post(**kwargs)
                assert self._state() == before
                return
            txn = adjustment_post(**kwargs)
            assert self._drawn(txn) == expected
            self._apply(expected)
        self.done[key] = Done("adjustment", amount, days, txn.pk)

    @precondition(lambda self: bool(self.done))
    @rule(data=st.data(), conflicting=st.booleans())
    def replay(self, data, conflicting):
        """Post a used key again: the same posting returns the first result and writes
        nothing; a different one is a conflict and writes nothing."""
        key = data.draw(st.sampled_from(sorted(self.done)))
        done = self.done[key]
        before = self._state()
        if conflicting:
            amount = done.amount + 1 if done.operation == "usage" else 1
            with pytest.raises(IdempotencyConflict):
                usage_charge(
                    account=self.account, credit_seconds=amount, idempotency_key=key, metadata={}
                )
        elif done.operation == "grant":
            grant = grant_issue(
                account=self.account,
                credit_seconds=done.amount,
                rate_pkr_per_gpu_hour=RATE,
                expires_at=self._expiry(done.days),
                source=CreditGrant.Source.APPLICATION,
                idempotency_key=key,
            )
            assert grant.pk == done.result_pk
        elif done.operation == "usage":
            txn = usage_charge(
                account=self.account, credit_seconds=done.amount, idempotency_key=key, metadata={}
            )
            assert txn.pk == done.result_pk
        else:
            txn = adjustment_post(
                account=self.account,
                credit_seconds=done.amount,
                reason="property test",
                idempotency_key=key,
                acting_user=None,
                expires_at=self._expiry(done.days),
            )
            assert txn.pk == done.result_pk
        assert self._state() == before

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def every_transaction_sums_to_zero(self):
        unbalanced = (
            LedgerEntry.objects.values("transaction_id")
            .annotate(total=Sum("amount"))
            .exclude(total=0)
        )
        assert list(unbalanced) == []

    @invariant()
    def balance_equals_entries_equals_lots_equals_model(self):
        balance = CreditAccount.objects.values_list("balance", flat=True).get(pk=self.account.pk)
        lots = CreditGrant.objects.filter(account=self.account)
        assert balance >= 0
        assert balance == entries_sum(account=self.account)
        assert balance == (lots.aggregate(s=Sum("remaining"))["s"] or 0)
        assert balance == sum(lot.remaining for lot in self.lots.values())

    @invariant()
    def each_lot_matches_the_model_and_its_entries(self):
        stored = {grant.pk: grant for grant in CreditGrant.objects.filter(account=self.account)}
        assert set(stored) == set(self.lots)
        for pk, lot in self.lots.items():
            grant = stored[pk]
            assert 0 <= grant.remaining <= grant.amount
            assert grant.remaining == lot.remaining
            assert grant.remaining == entries_sum(grant_id=pk)
            assert (grant.expired_at is not None) == lot.expired
            assert (grant.revoked_at is not None) == lot.revoked

    @invariant()
    def each_expiry_moved_what_was_left_unused(self):
        for pk, lot in self.lots.items():
            if not lot.expired:
                continue
            moved = -entries_sum(grant_id=pk, transaction__kind=LedgerTransaction.Kind.EXPIRY)
            assert moved == lot.left_at_expiry


def test_the_books_stay_true_whatever_the_sequence_of_operations():
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            database=None,  # no .hypothesis/ folder in the working tree
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
