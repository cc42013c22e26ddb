"""Writes of model usage: a request's hold, its finish or release, and the posting of finished
requests to the ledger.

Why a hold can never let an account spend more than it has
-----------------------------------------------------------
Every path that changes what an account owes for models takes the account's `ModelSpend` row
lock first (`select_for_update`, the row created on first use through its unique account), and
only then reads:

- `request_hold` reads the account's available credit-seconds (unexpired lots), the carried
  fraction, and the sum of its RUNNING holds and FINISHED-but-unposted costs, and inserts the
  new hold only when what is left covers the request's maximum cost;
- `model_charges_post` moves FINISHED costs into the ledger and the carried fraction.

On PostgreSQL the hold's steps run in one function call, `llm_usage_hold`
(sql/llm_usage_hold.sql, installed by migration 0002; a change to the file needs a migration
that installs it again): the same lock, sums and insert, one round trip instead of seven.

Both run under the same lock, in the same order (spend row, then the ledger's account row
inside the posting), so a hold never sees a posting half done and two holds never both spend
the same credit: the second waits for the first to commit and then sees its RUNNING row (each
statement under READ COMMITTED reads what committed before it). Finishing a request moves its
hold to its cost in one UPDATE of the request row (no spend lock: it only lowers what is held,
unless the engine reported more than the gateway held for; see `request_finish`). Hence
available × 1,000,000 ≥ carried + holds + costs at every hold, and a posting, which charges
floor((carried + costs) / 1,000,000), never asks the ledger for more than the lots held at the
last hold. What can still lower the lots in between (a sandbox's metering, a grant expiring or
revoked) is outside this lock; the ledger then charges what the lots hold and records the rest
as unpaid, and no balance goes below zero.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from inference.catalogue.models import ServedModel
from portal.apikeys.models import ApiKey
from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.credits.charge_metadata import ChargeMetadata
from portal.credits.models import CreditAccount, LedgerTransaction
from portal.credits.selectors import available_credit_seconds
from portal.credits.services import UsageDue, usage_charge_batch
from portal.organisations.models import Membership
from sandboxes.live import broadcast
from sandboxes.metering.messages import account_groups
from sandboxes.metering.selectors import account_snapshot

from .models import ModelCharge, ModelRequest, ModelSpend, RequestLog, RequestLogPolicy
from .selectors import account_may_pay_for, carried_microcredits, unposted_microcredits

logger = logging.getLogger(__name__)

MICROCREDITS_PER_CREDIT_SECOND = 1_000_000
# A request's maximum cost may not exceed this: far above any real one (a trillion
# credit-seconds), and it keeps sums of many holds inside a signed 64-bit column.
MAX_HOLD_MICROCREDITS = 2**50
# The token counts columns are PostgreSQL integers.
MAX_TOKENS = 2**31 - 1
# An embeddings request may send up to this many inputs, each at most the model's context: a
# count of prompt tokens above inputs × context is not one the engine can have produced.
MAX_INPUTS_PER_REQUEST = 2048


class QuotaExceeded(Exception):  # noqa: N818 - OpenAI's name for it: insufficient_quota
    """The account cannot cover the request's maximum cost. Nothing was written."""

    def __init__(self, *, available_microcredits: int, needed_microcredits: int):
        super().__init__(
            f"available {available_microcredits} microcredit-seconds, needed {needed_microcredits}"
        )
        self.available_microcredits = available_microcredits
        self.needed_microcredits = needed_microcredits


class UsageError(ApplicationError):
    """A hold or finish that can never be valid (bad amounts, unknown request, wrong payer)."""


def _spend_locked(account_id: int) -> ModelSpend:
    """The account's spend row, locked until the end of the caller's transaction. Created on
    first use: the insert does nothing when a concurrent first use made it (the unique account),
    so no error ever aborts the caller's transaction."""
    spend = ModelSpend.objects.select_for_update().filter(account_id=account_id).first()
    if spend is None:
        ModelSpend.objects.bulk_create([ModelSpend(account_id=account_id)], ignore_conflicts=True)
        spend = ModelSpend.objects.select_for_update().get(account_id=account_id)
    return spend


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def request_hold(
    *,
    request_id: str,
    account: CreditAccount,
    model,
    endpoint: str,
    stream: bool,
    max_cost_microcredits: int,
    api_key=None,
    user=None,
    replica=None,
) -> ModelRequest:
    """Hold a request's maximum cost against the account before it runs.

    In one short transaction: lock the account's spend row, read what the account may still
    spend (unexpired lots × 1,000,000 − the carried fraction − running holds − unposted costs)
    and refuse with QuotaExceeded, writing nothing, when that is less than the maximum cost;
    else insert the RUNNING request holding it. The account must be the one the key (or,
    without a key, the person) pays from: a personal key never spends an organisation's
    credits. A request id used before is refused (UsageError), as are bad amounts.
    """
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 64:
        raise UsageError(_("A request id of 1 to 64 characters is required."))
    if endpoint not in ModelRequest.Endpoint.values:
        raise UsageError(_("Unknown endpoint: %(endpoint)s.") % {"endpoint": endpoint})
    if (
        not _is_count(max_cost_microcredits)
        or not 0 <= max_cost_microcredits <= MAX_HOLD_MICROCREDITS
    ):
        raise UsageError(_("The maximum cost must be a whole number within range."))
    if account is None or account.pk is None:
        raise UsageError(_("The request needs an existing account to pay for it."))
    if not account_may_pay_for(account=account, api_key=api_key, user=user):
        raise PermissionDenied(_("This account does not pay for this key's requests."))
    try:
        return _hold_insert(
            request_id=request_id,
            account=account,
            model=model,
            endpoint=endpoint,
            stream=stream,
            max_cost_microcredits=max_cost_microcredits,
            api_key=api_key,
            user=user,
            replica=replica,
        )
    except IntegrityError:
        # The request id's unique constraint (no query spent on checking first: a hold is on
        # every request's path); anything else is a caller's bug and goes up as it is.
        if ModelRequest.objects.filter(request_id=request_id).exists():
            raise UsageError(_("This request id was used before.")) from None
        raise


def _hold_insert(
    *,
    request_id,
    account,
    model,
    endpoint,
    stream,
    max_cost_microcredits,
    api_key,
    user,
    replica,
) -> ModelRequest:
    request = ModelRequest(
        request_id=request_id,
        account=account,
        api_key=api_key,
        user=user,
        model=model,
        replica=replica,
        endpoint=endpoint,
        stream=bool(stream),
        status=ModelRequest.Status.RUNNING,
        held_microcredits=max_cost_microcredits,
        started_at=timezone.now(),
    )
    if connection.vendor == "postgresql":
        return _hold_insert_postgresql(request)
    with transaction.atomic():
        spend = _spend_locked(account.pk)
        available = (
            available_credit_seconds(account=account) * MICROCREDITS_PER_CREDIT_SECOND
            - carried_microcredits(spend)
            - unposted_microcredits(account_id=account.pk)
        )
        if available < max_cost_microcredits:
            raise QuotaExceeded(
                available_microcredits=max(available, 0),
                needed_microcredits=max_cost_microcredits,
            )
        request.save(force_insert=True)
        return request


_HOLD_SQL = (
    "SELECT request_pk, available_microcredits"
    " FROM llm_usage_hold(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _hold_insert_postgresql(request: ModelRequest) -> ModelRequest:
    """The same steps as the ORM's path in one call of `llm_usage_hold` (sql/llm_usage_hold.sql):
    a hold is on every model request's path, and its seven statements cost a round trip each.
    Inside a caller's transaction it runs in a savepoint, so a refused request id leaves that
    transaction usable (as the ORM path's atomic block does). `request` is the unsaved row; it
    comes back saved."""
    arguments = [
        request.request_id,
        request.account_id,
        request.api_key_id,
        request.user_id,
        request.model_id,
        request.replica_id,
        request.endpoint,
        request.stream,
        request.held_microcredits,
        request.started_at,
    ]
    scope = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    with scope, connection.cursor() as cursor:
        cursor.execute(_HOLD_SQL, arguments)
        pk, available = cursor.fetchone()
    if pk is None:
        raise QuotaExceeded(
            available_microcredits=max(int(available), 0),
            needed_microcredits=request.held_microcredits,
        )
    request.pk = pk
    request._state.adding = False
    request._state.db = connection.alias
    return request


def request_finish(
    *, request_id: str, prompt_tokens: int, completion_tokens: int, error_code: str = ""
) -> ModelRequest:
    """Record what a request used: its cost at the model's prices, the hold released.

    Idempotent: a request already finished (or released) is returned as it is, whatever this
    call says. A request that failed (`error_code`) having produced no token is FREE. Token
    counts that are negative, not whole numbers, or more than the engine can have produced are
    refused (UsageError) and change nothing.

    The cost is what the engine reported, even above the hold (the gateway's count of the
    prompt is an estimate): the posting then charges it, and the ledger records as unpaid what
    the lots could not cover rather than letting a balance go negative.
    """
    for name, value in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens)):
        if not _is_count(value) or not 0 <= value <= MAX_TOKENS:
            raise UsageError(
                _("%(name)s must be a whole number from 0.") % {"name": name}, field=name
            )
    if not isinstance(error_code, str) or len(error_code) > 40:
        raise UsageError(_("An error code has at most 40 characters."), field="error_code")
    # Two statements and no transaction (a finish is on every request's path): the row read,
    # then moved from RUNNING by an UPDATE that matches only while it is still RUNNING, so of
    # two finishes (or a finish and a release) at once exactly one writes, as a row lock would
    # decide; the other returns the row as the winner left it.
    request = ModelRequest.objects.select_related("model").filter(request_id=request_id).first()
    if request is None:
        raise UsageError(_("Unknown request."))
    if request.status != ModelRequest.Status.RUNNING:
        return request
    model = request.model
    # Generous on purpose: a finish refused leaves the hold in place, so only counts no
    # engine can have produced are refused (an engine may run a longer context than the
    # catalogue advertises; an embeddings request carries many inputs).
    if prompt_tokens + completion_tokens > model.context_length * MAX_INPUTS_PER_REQUEST:
        raise UsageError(_("More tokens than the model can have used for this request."))
    if request.endpoint == ModelRequest.Endpoint.EMBEDDINGS and completion_tokens:
        raise UsageError(_("Embeddings produce no completion tokens."))
    produced = prompt_tokens + completion_tokens
    changes = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "error_code": error_code,
        "held_microcredits": 0,
        "finished_at": timezone.now(),
    }
    if error_code and produced == 0:
        changes.update(status=ModelRequest.Status.FREE, cost_microcredits=0)
    else:
        changes.update(
            status=ModelRequest.Status.FINISHED,
            cost_microcredits=model.cost_microcredits(
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            ),
        )
    updated = ModelRequest.objects.filter(pk=request.pk, status=ModelRequest.Status.RUNNING).update(
        **changes
    )
    if not updated:  # finished or released meanwhile
        return ModelRequest.objects.select_related("model").get(pk=request.pk)
    for name, value in changes.items():
        setattr(request, name, value)
    return request


def request_release(*, request_id: str, error_code: str) -> None:
    """A request that produced nothing (the engine refused it, no replica was up, the client
    left before the first token): its hold released, nothing charged (FREE). Idempotent: a
    request already finished or released is left as it is."""
    if not isinstance(error_code, str) or len(error_code) > 40:
        raise UsageError(_("An error code has at most 40 characters."), field="error_code")
    updated = ModelRequest.objects.filter(
        request_id=request_id, status=ModelRequest.Status.RUNNING
    ).update(
        status=ModelRequest.Status.FREE,
        held_microcredits=0,
        cost_microcredits=0,
        error_code=error_code,
        finished_at=timezone.now(),
    )
    if not updated and not ModelRequest.objects.filter(request_id=request_id).exists():
        raise UsageError(_("Unknown request."))


# --- Posting finished requests to the ledger ----------------------------------------------------

# At most this many requests go into one ledger transaction (its metadata breaks them down by
# model and key, so its size grows with the models and keys, not the requests); an account with
# more is posted again in the same run.
MAX_REQUESTS_PER_POSTING = 5_000


@dataclass(frozen=True)
class _Posted:
    requests: int
    credit_seconds: int  # asked of the ledger
    charged: int  # what it took


def model_charges_post() -> int:
    """Post every account's finished requests to the ledger: per account, one usage transaction
    of the whole credit-seconds their priced cost (with the fraction carried from the last
    posting) reaches; the rest of a credit-second carries to the next. Returns how many requests
    were posted.

    Safe to retry, to run twice at once and to kill at any point: each account's posting is one
    database transaction under the account's spend lock (the ModelCharge row, the ledger
    transaction keyed by it, the requests marked POSTED and the spend moved all commit together
    or not at all), and a second worker waits for the lock, then finds the requests posted.
    """
    account_ids = list(
        ModelRequest.objects.filter(status=ModelRequest.Status.FINISHED)
        .order_by("account_id")
        .values_list("account_id", flat=True)
        .distinct()
    )
    posted = 0
    for account_id in account_ids:
        while True:
            try:
                result = _account_charges_post(account_id)
            except Exception:
                # One account's failure (rolled back whole) must not stop the others' postings;
                # its requests stay FINISHED and the next run tries again.
                logger.exception("model usage posting failed for account %s", account_id)
                break
            posted += result.requests
            if result.requests < MAX_REQUESTS_PER_POSTING:
                break
    return posted


def _account_charges_post(account_id: int) -> _Posted:
    with transaction.atomic():
        spend = _spend_locked(account_id)
        # Read after the lock is granted: a worker that posted meanwhile has committed, and its
        # requests are POSTED by now.
        rows = list(
            ModelRequest.objects.select_for_update()
            .filter(account_id=account_id, status=ModelRequest.Status.FINISHED)
            .order_by("pk")
            .values_list(
                "pk",
                "model_id",
                "api_key_id",
                "prompt_tokens",
                "completion_tokens",
                "cost_microcredits",
            )[:MAX_REQUESTS_PER_POSTING]
        )
        if not rows:
            return _Posted(0, 0, 0)
        priced = sum(row[5] for row in rows)
        carried = carried_microcredits(spend)
        due = (carried + priced) // MICROCREDITS_PER_CREDIT_SECOND
        ids = [row[0] for row in rows]
        if due == 0:
            if priced == 0:  # free requests: nothing will ever be charged for them
                ModelRequest.objects.filter(pk__in=ids).update(status=ModelRequest.Status.POSTED)
                return _Posted(len(ids), 0, 0)
            # Less than a credit-second in all: the requests wait (still counted against what
            # the account may hold), so every posted request is in the ledger's breakdown.
            return _Posted(0, 0, 0)
        account = CreditAccount.objects.get(pk=account_id)
        number = ModelCharge.objects.filter(account_id=account_id).count() + 1
        key = f"model-usage:{account.public_id}:{number}"
        charge = ModelCharge.objects.create(
            account_id=account_id, idempotency_key=key, credit_seconds=due
        )
        metadata = ChargeMetadata(due=due, model_microcredits=priced, model_usage=_breakdown(rows))
        [charged], _warnings = usage_charge_batch(
            [UsageDue(account_id, due, key, metadata)],
            partial=True,
            description=_("Model usage"),
        )
        charge.charged = charged.charged
        if charged.transaction_id is not None:
            charge.transaction_public_id = charged.public_id or (
                LedgerTransaction.objects.values_list("public_id", flat=True).get(
                    pk=charged.transaction_id
                )
            )
        charge.save(update_fields=["charged", "transaction_public_id"])
        ModelRequest.objects.filter(pk__in=ids).update(
            status=ModelRequest.Status.POSTED, charge=charge
        )
        # The spend moves by what was asked, paid or not: the ledger recorded any unpaid rest
        # (and ModelCharge keeps charged < credit_seconds), so it is never asked twice.
        ModelSpend.objects.filter(pk=spend.pk).update(
            priced_microcredits=F("priced_microcredits") + priced,
            charged_credit_seconds=F("charged_credit_seconds") + due,
            updated_at=timezone.now(),
        )
        if charged.charged:
            _balance_send(account_id)
        return _Posted(len(ids), due, charged.charged)


def _breakdown(rows) -> list[dict]:
    """The requests by model and key: counts, tokens and priced cost, for statements."""
    groups: dict[tuple, list[int]] = {}
    for _pk, model_id, key_id, prompt, completion, cost in rows:
        group = groups.setdefault((model_id, key_id), [0, 0, 0, 0])
        group[0] += 1
        group[1] += prompt
        group[2] += completion
        group[3] += cost
    models = dict(
        ServedModel.objects.filter(pk__in={m for m, _k in groups}).values_list("pk", "name")
    )
    keys = {
        pk: (str(public_id), name)
        for pk, public_id, name in ApiKey.objects.filter(
            pk__in={k for _m, k in groups if k is not None}
        ).values_list("pk", "public_id", "name")
    }
    return [
        {
            "model": models[model_id],
            "key": keys[key_id][0] if key_id is not None else None,
            "key_name": keys[key_id][1] if key_id is not None else "",
            "requests": requests,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "microcredits": cost,
        }
        for (model_id, key_id), (requests, prompt, completion, cost) in sorted(
            groups.items(), key=lambda item: (models[item[0][0]], item[0][1] or 0)
        )
    ]


def _balance_send(account_id: int) -> None:
    """The account's new balance to the browser once the posting commits, in the message the
    metering tick sends (with its sandboxes' burn rate, so a page's countdown stays right)."""
    account = CreditAccount.objects.get(pk=account_id)
    message = account_snapshot(account=account)
    message.pop("stop_at", None)
    broadcast.send_after_commit((group, message) for group in account_groups(account, []))


# --- Request logging (opt-in per organisation) ---------------------------------------------------

MAX_LOG_RETENTION_DAYS = 90


def _without_nul(value):
    """The value with every NUL character taken out of its strings (keys included): PostgreSQL
    cannot store one in text or jsonb, and it carries nothing a person debugging needs."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(str(k)): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def request_log_record(*, request_id: str, request_body: dict, response_text: str) -> bool:
    """Keep a request's content when, and only when, the organisation that pays for it opted
    in (a retention of one day or more); it is deleted once the retention is over. A person's
    own account (a student, the playground on one's own account) keeps nothing. Returns
    whether anything was kept; a request logged before is not logged again."""
    request = (
        ModelRequest.objects.select_related("account")
        .filter(request_id=request_id)
        .only("pk", "account__organisation_id")
        .first()
    )
    if request is None or request.account.organisation_id is None:
        return False
    policy = RequestLogPolicy.objects.filter(
        organisation_id=request.account.organisation_id
    ).first()
    if policy is None or policy.retention_days <= 0:
        return False
    if not isinstance(request_body, dict) or not isinstance(response_text, str):
        raise UsageError(_("A request log is a JSON object and a text."))
    if RequestLog.objects.filter(request_id=request.pk).exists():
        return False
    RequestLog.objects.bulk_create(  # a concurrent record of the same request: one row kept
        [
            RequestLog(
                request_id=request.pk,
                organisation_id=request.account.organisation_id,
                request_body=_without_nul(request_body),
                response_text=_without_nul(response_text),
                delete_after=timezone.now() + dt.timedelta(days=policy.retention_days),
            )
        ],
        ignore_conflicts=True,
    )
    return True


def request_logs_delete_expired(*, now: dt.datetime | None = None) -> int:
    """Delete the request logs whose retention is over; returns how many."""
    deleted, _by_model = RequestLog.objects.filter(delete_after__lte=now or timezone.now()).delete()
    return deleted


def request_log_policy_set(
    *, organisation, retention_days: int, acting_user, ip: str | None = None
) -> RequestLogPolicy:
    """An organisation's owner or admin opts in to keeping its requests' content for
    `retention_days` (1 to 90), or out (0: nothing kept, the default). Audited. Opting out, or
    shortening the retention, also shortens what is kept already: nothing stays longer than the
    policy now says."""
    if (
        not isinstance(retention_days, int)
        or isinstance(retention_days, bool)
        or not 0 <= retention_days <= MAX_LOG_RETENTION_DAYS
    ):
        raise UsageError(
            _("Keep request logs for 0 to %(days)s days.") % {"days": MAX_LOG_RETENTION_DAYS},
            field="retention_days",
        )
    if (
        acting_user is None
        or not Membership.objects.managers()
        .filter(organisation=organisation, user=acting_user)
        .exists()
    ):
        raise PermissionDenied(_("Only the organisation's owner or an admin may change this."))
    with transaction.atomic():
        policy, _created = RequestLogPolicy.objects.select_for_update().get_or_create(
            organisation=organisation
        )
        before = policy.retention_days
        policy.retention_days = retention_days
        policy.changed_by = acting_user
        policy.save()
        if retention_days < before:
            # Shorter than before: what is kept already goes when the new retention says.
            # (A log kept under a still shorter policy goes earlier still: never later.)
            RequestLog.objects.filter(organisation=organisation).update(
                delete_after=F("delete_after") - dt.timedelta(days=before - retention_days)
            )
            if retention_days == 0:
                RequestLog.objects.filter(organisation=organisation).delete()
        audit_record(
            actor=acting_user,
            action=AuditAction.MODEL_REQUEST_LOGGING_SET,
            target=organisation,
            ip=ip,
            data={"retention_days": retention_days, "before": before},
        )
    return policy


# --- Holds left behind ---------------------------------------------------------------------------

# A request still RUNNING this long after it started was left behind by a gateway worker that
# died (a request's stream is cut long before: LLM_UPSTREAM_READ_TIMEOUT between two bytes).
ABANDONED_AFTER = dt.timedelta(hours=1)


def requests_abandoned_release(*, now: dt.datetime | None = None) -> int:
    """Release the holds of requests a dead gateway worker never finished, so that their
    account can spend the credits again. They are not charged: what the engine produced for
    them was never reported (error code `abandoned`). A finish that arrives later changes
    nothing. Returns how many were released."""
    cutoff = (now or timezone.now()) - ABANDONED_AFTER
    return ModelRequest.objects.filter(
        status=ModelRequest.Status.RUNNING, started_at__lt=cutoff
    ).update(
        status=ModelRequest.Status.FREE,
        held_microcredits=0,
        error_code="abandoned",
        finished_at=timezone.now(),
    )
