"""What each model request used and cost, and how it reaches the ledger.

A request is held before it runs and charged after: `ModelRequest` is written when the gateway
accepts a request, holding its maximum cost (prompt + max_tokens at the model's prices) against
the account, and finished with the tokens the engine reported. Holds and finished-but-unposted
costs both count against what an account may still spend, so a burst of requests can never spend
more than the balance. A Celery task posts each account's finished requests through the ledger
(`usage_charge_batch`), one transaction per account per interval, keyed so a retry posts nothing
twice; `ModelSpend` carries the fraction of a credit-second not yet charged, so the charges add up
to exactly the priced tokens.

Nothing of a prompt or a completion is stored here. `RequestLog` (opt-in per organisation, with
its own retention) is the only place request content is kept.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from portal.core.models import PublicIdModel


class ModelRequest(models.Model):
    """One call to /llm/v1 (or the playground) that reached a model: its tokens and its cost."""

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")  # holds its maximum cost
        FINISHED = "finished", _("Finished")  # costs what it used; not yet in the ledger
        POSTED = "posted", _("Charged")  # in the ledger, in `charge`
        FREE = "free", _("Not charged")  # failed before the engine produced anything

    class Endpoint(models.TextChoices):
        CHAT = "chat.completions", _("Chat")
        COMPLETIONS = "completions", _("Completions")
        EMBEDDINGS = "embeddings", _("Embeddings")

    request_id = models.CharField(max_length=64, unique=True)  # returned to the client as `id`
    account = models.ForeignKey(
        "credits.CreditAccount", on_delete=models.PROTECT, related_name="model_requests"
    )
    api_key = models.ForeignKey(
        "apikeys.ApiKey",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="model_requests",
    )
    user = models.ForeignKey(  # who called: the key's owner, or the person in the playground
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="model_requests",
    )
    model = models.ForeignKey(
        "llm_catalogue.ServedModel", on_delete=models.PROTECT, related_name="requests"
    )
    replica = models.ForeignKey(
        "llm_deployments.Replica",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="requests",
    )
    endpoint = models.CharField(max_length=20, choices=Endpoint.choices)
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    held_microcredits = models.BigIntegerField(default=0)  # while running: the maximum cost
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_microcredits = models.BigIntegerField(default=0)  # once finished: what it used
    error_code = models.CharField(max_length=40, blank=True)  # OpenAI's `code`, when it failed
    charge = models.ForeignKey(
        "ModelCharge", null=True, blank=True, on_delete=models.PROTECT, related_name="requests"
    )
    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                name="llm_request_amounts_not_negative",
                condition=Q(held_microcredits__gte=0, cost_microcredits__gte=0),
            ),
        ]
        indexes = [
            # What an account still owes or holds: the pre-authorisation sums these rows.
            models.Index(
                fields=["account", "status"],
                condition=Q(status__in=["running", "finished"]),
                name="llm_requests_unposted",
            ),
            models.Index(fields=["api_key", "started_at"], name="llm_requests_by_key"),
        ]

    def __str__(self) -> str:
        return self.request_id


class ModelSpend(models.Model):
    """Per account: priced model use so far, and how much of it the ledger has been charged.

    charged_credit_seconds = priced_microcredits // 1,000,000 after each posting, so the ledger's
    charges add up exactly to the priced tokens and the fraction carries to the next batch. It
    counts what was asked of the ledger: when an account's lots could not pay it all (a grant
    expired between the hold and the posting), the ledger recorded the rest as unpaid and it is
    not asked again (ModelCharge.charged says what was taken). The row is the account's lock for
    model spending: holds and postings take it first (inference.usage.services).
    """

    account = models.OneToOneField(
        "credits.CreditAccount", on_delete=models.PROTECT, related_name="model_spend"
    )
    priced_microcredits = models.BigIntegerField(default=0)
    charged_credit_seconds = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.account_id}: {self.charged_credit_seconds} credit-seconds"


class ModelCharge(PublicIdModel):
    """One posting of an account's finished requests to the ledger (one per account per
    interval): `idempotency_key` is the ledger transaction's."""

    account = models.ForeignKey(
        "credits.CreditAccount", on_delete=models.PROTECT, related_name="model_charges"
    )
    idempotency_key = models.CharField(max_length=200, unique=True)
    credit_seconds = models.BigIntegerField()  # what the ledger was asked to take
    charged = models.BigIntegerField(default=0)  # what it took (less if the account ran dry)
    transaction_public_id = models.UUIDField(null=True, blank=True)

    def __str__(self) -> str:
        return self.idempotency_key


class RequestLogPolicy(models.Model):
    """An organisation's opt-in to keep its own prompts and completions, for its debugging."""

    organisation = models.OneToOneField(
        "organisations.Organisation", on_delete=models.CASCADE, related_name="model_log_policy"
    )
    retention_days = models.PositiveSmallIntegerField(
        _("keep for (days)"), default=0, help_text=_("0 keeps nothing (the default).")
    )
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.organisation_id}: {self.retention_days} days"


class RequestLog(models.Model):
    """A request's content, kept only under its organisation's policy and deleted after it."""

    request = models.OneToOneField(ModelRequest, on_delete=models.CASCADE, related_name="log")
    organisation = models.ForeignKey(
        "organisations.Organisation", on_delete=models.CASCADE, related_name="+"
    )
    request_body = models.JSONField()
    response_text = models.TextField(blank=True)
    delete_after = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"log of {self.request_id}"
