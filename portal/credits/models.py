"""GPU credits: applications, grants (lots) and the append-only double-entry ledger.

Amounts are integers in credit-seconds (see units.py). The ledger is the truth; an account's
`balance` and a grant's `remaining` are caches that only `services.ledger_post` changes, with F()
expressions, under row locks, in the transaction that writes the entries.
"""

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.core.models import AppendOnlyModel, PublicIdModel, TimeStampedModel
from portal.organisations.models import DataSensitivity, Sector


class CreditAccount(PublicIdModel):
    """Where credits sit: an organisation's, a student's, or one of the programme's own.

    Holder accounts (organisation, student) cache their balance and can never go negative.
    System accounts are the other side of every posting (grants issued, usage, expired,
    adjustments); they carry no cached balance, because every debit in the country would
    otherwise queue on their one row. Their balance is the sum of their entries.
    """

    class Kind(models.TextChoices):
        ORGANISATION = "organisation", _("Organisation")
        STUDENT = "student", _("Student")
        SYSTEM = "system", _("System")

    class System(models.TextChoices):
        GRANTS_ISSUED = "grants_issued", _("Grants issued")
        USAGE = "usage", _("Usage")
        EXPIRED = "expired", _("Expired")
        ADJUSTMENTS = "adjustments", _("Adjustments")

    kind = models.CharField(max_length=16, choices=Kind.choices)
    organisation = models.OneToOneField(
        "organisations.Organisation",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="credit_account",
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="credit_account",
    )
    system_code = models.CharField(
        max_length=32, choices=System.choices, null=True, blank=True, unique=True
    )
    balance = models.BigIntegerField(
        _("balance (credit-seconds)"), null=True, blank=True, default=None
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="credits_account_one_holder",
                condition=(
                    Q(
                        kind="organisation",
                        organisation__isnull=False,
                        user__isnull=True,
                        system_code__isnull=True,
                    )
                    | Q(
                        kind="student",
                        organisation__isnull=True,
                        user__isnull=False,
                        system_code__isnull=True,
                    )
                    | Q(
                        kind="system",
                        organisation__isnull=True,
                        user__isnull=True,
                        system_code__isnull=False,
                    )
                ),
            ),
            models.CheckConstraint(
                name="credits_account_holder_balance_never_negative",
                condition=Q(kind="system", balance__isnull=True)
                | (~Q(kind="system") & Q(balance__gte=0)),
            ),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.SYSTEM:
            return f"system:{self.system_code}"
        holder = self.organisation if self.organisation_id else self.user
        return f"{self.get_kind_display()}: {holder}"

    @property
    def is_system(self) -> bool:
        return self.kind == self.Kind.SYSTEM


class CreditGrant(PublicIdModel):
    """A lot of credits on a holder account, with its own expiry and its own PKR rate.

    Usage draws from the lot that expires first. At expiry only the unused remainder moves to
    the expired account. `remaining` is the lot's share of the account's balance.
    """

    class Source(models.TextChoices):
        APPLICATION = "application", _("Approved application")
        ALLOWANCE = "allowance", _("Monthly student allowance")
        ADJUSTMENT = "adjustment", _("Manual adjustment")

    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="grants")
    source = models.CharField(max_length=16, choices=Source.choices)
    application = models.OneToOneField(
        "credits.CreditApplication",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="grant",
    )
    amount = models.BigIntegerField(_("granted (credit-seconds)"))
    remaining = models.BigIntegerField(_("remaining (credit-seconds)"))
    rate_pkr_per_gpu_hour = models.DecimalField(
        _("PKR per GPU-hour"), max_digits=12, decimal_places=2, validators=[MinValueValidator(0)]
    )
    expires_at = models.DateTimeField(_("expires at"), db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    note = models.CharField(max_length=500, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["expires_at", "pk"]
        # Not a partial index on `remaining > 0`: a column in an index's predicate makes every
        # change of `remaining` a non-HOT update that rewrites all of the table's indexes,
        # while the account's row lock is held. An account has few lots; this finds them.
        indexes = [models.Index(fields=["account", "expires_at"], name="credits_grant_lots")]
        constraints = [
            models.CheckConstraint(name="credits_grant_amount_positive", condition=Q(amount__gt=0)),
            models.CheckConstraint(
                name="credits_grant_remaining_within_amount",
                condition=Q(remaining__gte=0) & Q(remaining__lte=models.F("amount")),
            ),
            models.CheckConstraint(
                name="credits_grant_rate_not_negative", condition=Q(rate_pkr_per_gpu_hour__gte=0)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_source_display()} {self.amount}s → {self.account}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()


class LedgerTransaction(AppendOnlyModel):
    """One balanced event in the books: its entries sum to zero. Never changed, never removed.

    `idempotency_key` is unique: whoever posts the same event twice (a retried task, two beat
    instances, a double click) gets the first transaction back, not a second one.
    """

    class Kind(models.TextChoices):
        GRANT = "grant", _("Grant")
        ALLOWANCE = "allowance", _("Student allowance")
        USAGE = "usage", _("Usage")
        EXPIRY = "expiry", _("Expiry")
        REVOCATION = "revocation", _("Revocation")
        ADJUSTMENT = "adjustment", _("Adjustment")

    public_id = models.UUIDField(unique=True, editable=False)
    # Unique through Meta.constraints rather than unique=True, which on PostgreSQL also builds a
    # second, LIKE-only index that no query uses and every posting would have to write.
    idempotency_key = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    description = models.CharField(max_length=500, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,  # partial index below
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"], name="credits_transaction_idempotency_key"
            )
        ]
        # Who posted by hand (adjustments, revocations): usage and grants made by the system
        # carry no person, and a partial index is not written for them.
        indexes = [
            models.Index(
                fields=["created_by"],
                condition=Q(created_by__isnull=False),
                name="credits_transaction_by_person",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.idempotency_key}"


class LedgerEntry(AppendOnlyModel):
    """One leg of a transaction: a signed amount on one account (and, for holders, one lot)."""

    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries"
    )
    # Indexed by (account, created_at) below, which also serves lookups by account alone: every
    # index here is written once per leg of every debit.
    account = models.ForeignKey(
        CreditAccount, on_delete=models.PROTECT, related_name="entries", db_index=False
    )
    grant = models.ForeignKey(
        CreditGrant,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="entries",
        db_index=False,  # partial index below: system legs name no lot
    )
    amount = models.BigIntegerField(_("amount (credit-seconds)"))
    # A copy of the transaction's kind, written with the entry by the posting module: the
    # programme's figures filter and group entries by kind, and joining a million transactions
    # to read it was most of their cost.
    kind = models.CharField(max_length=16, choices=LedgerTransaction.Kind.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [
            models.Index(fields=["account", "created_at"], name="credits_entry_account_time"),
            models.Index(
                fields=["grant"], condition=Q(grant__isnull=False), name="credits_entry_lot"
            ),
        ]
        constraints = [
            models.CheckConstraint(name="credits_entry_not_zero", condition=~Q(amount=0)),
            # A writer that forgot the kind would store Django's blank default.
            models.CheckConstraint(name="credits_entry_kind_given", condition=~Q(kind="")),
        ]

    def __str__(self) -> str:
        return f"{self.amount:+d}s {self.account}"


class RollupPeriod(models.TextChoices):
    """How long a roll-up row's stretch of the ledger is: a local day or a local month (Pakistan
    time, as `units.month_bounds` cuts months), named by the date it starts on."""

    DAY = "day", _("Day")
    MONTH = "month", _("Month")


class AccountRollup(models.Model):
    """The sums of one holder account's ledger entries over a local day or month, per
    transaction kind and lot rate: what programme pages read instead of the entries.

    Written by the posting module in the transaction of the postings it sums, under the holder
    account's row lock the posting already holds, so it is never behind the ledger and adds no
    lock of its own. Only holder accounts (organisations', students') have roll-ups: a system
    account is the other side of every posting, and one row of its own would serialise them all.
    Every holder entry names a lot, hence a rate, so PKR is exact: `amount` × the row's rate.
    `manage.py credits_rollups_rebuild` recomputes the table from the entries; the nightly
    reconciliation compares a sample of accounts with their entries.

    An account with lots at two rates has two rows for one (period, starts, kind): a total per
    account sums over its rates.
    """

    account = models.ForeignKey(
        CreditAccount,
        on_delete=models.PROTECT,
        related_name="rollups",
        db_index=False,  # the unique key starts with the account
    )
    period = models.CharField(max_length=8, choices=RollupPeriod.choices)
    starts = models.DateField(_("first local day"))
    kind = models.CharField(max_length=16, choices=LedgerTransaction.Kind.choices)
    rate_pkr_per_gpu_hour = models.DecimalField(
        _("PKR per GPU-hour"), max_digits=12, decimal_places=2
    )
    amount = models.BigIntegerField(_("signed sum (credit-seconds)"))
    entries = models.BigIntegerField(_("entries summed"))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "period", "starts", "kind", "rate_pkr_per_gpu_hour"],
                name="credits_rollup_account_key",
            )
        ]
        # The directory's sorts: the accounts with the most of one kind in one day or month.
        indexes = [
            models.Index(fields=["period", "starts", "kind", "amount"], name="credits_rollup_sort")
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.period} {self.starts} {self.kind} {self.amount:+d}s"


class RollupDimension(models.TextChoices):
    """What a programme roll-up is cut by (the programme reports' dimensions, but organisation,
    which reads the accounts' roll-ups directly, and month, which is the period)."""

    PROGRAMME = "programme", _("Whole programme")
    SECTOR = "sector", _("Sector")
    PROVINCE = "province", _("Province")
    UNIVERSITY = "university", _("University")
    COHORT = "cohort", _("Cohort")


class ProgrammeRollup(models.Model):
    """The holders' entries of one local month (or, for the whole programme only, one local
    day), summed per value of a report dimension, holder kind, transaction kind and lot rate.

    Built from AccountRollup, never from the ledger, by `services.rollups_refresh` (on beat, and
    on commit of every grant, adjustment, revocation and expiry run), which replaces a period's
    rows in one transaction; ProgrammeRollupRefresh says when. A holder counts under the value
    it has when the refresh runs (a student who changes cohort moves with their history).

    `key` is the value: a sector or province code, a university's name, a cohort's public id,
    "" for the programme; holders the dimension does not describe have a row of their own:
    "~students" (students, by sector or province), "~organisations" (by university or cohort),
    "~none" (students without a listed university, or without a cohort). `holders` counts the
    distinct holder accounts behind the row: it is per rate, so it does not add up over rates.
    """

    period = models.CharField(max_length=8, choices=RollupPeriod.choices)
    starts = models.DateField(_("first local day"))
    dimension = models.CharField(max_length=16, choices=RollupDimension.choices)
    key = models.CharField(max_length=200, blank=True)
    holder_kind = models.CharField(max_length=16, choices=CreditAccount.Kind.choices)
    kind = models.CharField(max_length=16, choices=LedgerTransaction.Kind.choices)
    rate_pkr_per_gpu_hour = models.DecimalField(
        _("PKR per GPU-hour"), max_digits=12, decimal_places=2
    )
    amount = models.BigIntegerField(_("signed sum (credit-seconds)"))
    entries = models.BigIntegerField(_("entries summed"))
    holders = models.PositiveIntegerField(_("holder accounts"))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "period",
                    "dimension",
                    "starts",
                    "key",
                    "holder_kind",
                    "kind",
                    "rate_pkr_per_gpu_hour",
                ],
                name="credits_programme_rollup_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.starts} {self.dimension}={self.key} {self.kind}"


class ProgrammeRollupRefresh(models.Model):
    """When a period's programme roll-ups were last rebuilt: pages say "as of" this. A month
    refreshed after it closed (and the posting grace after it) is final: the ledger is
    append-only, so it never changes again."""

    period = models.CharField(max_length=8, choices=RollupPeriod.choices)
    starts = models.DateField(_("first local day"))
    refreshed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "starts"], name="credits_programme_rollup_refresh_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.starts} as of {self.refreshed_at:%Y-%m-%d %H:%M}"


class ApplicationState(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SUBMITTED = "submitted", _("Submitted")
    IN_REVIEW = "in_review", _("In review")
    CHANGES_REQUESTED = "changes_requested", _("Changes requested")
    APPROVED = "approved", _("Approved")
    PARTIALLY_APPROVED = "partially_approved", _("Partially approved")
    REJECTED = "rejected", _("Rejected")
    WITHDRAWN = "withdrawn", _("Withdrawn")


class GpuClass(models.TextChoices):
    ANY = "any", _("Any available GPU")
    H100 = "h100", _("NVIDIA H100 80 GB")
    H200 = "h200", _("NVIDIA H200 141 GB")
    A100 = "a100", _("NVIDIA A100 80 GB")
    L40S = "l40s", _("NVIDIA L40S 48 GB")
    MIG = "mig", _("A slice of a GPU (MIG)")


class CreditApplicationQuerySet(models.QuerySet):
    def for_user(self, user) -> "CreditApplicationQuerySet":
        """Applications of the organisations the person belongs to."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(organisation__memberships__user=user)


class CreditApplication(PublicIdModel):
    """A startup's request for GPU-hours, and the programme's decision on it."""

    organisation = models.ForeignKey(
        "organisations.Organisation", on_delete=models.PROTECT, related_name="credit_applications"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    title = models.CharField(_("project title"), max_length=200)
    summary = models.TextField(_("summary"), max_length=5000)
    sector = models.CharField(_("sector"), max_length=32, choices=Sector.choices)
    requested_gpu_hours = models.PositiveIntegerField(
        _("requested GPU-hours"), validators=[MinValueValidator(1)]
    )
    gpu_class = models.CharField(
        _("preferred GPU class"), max_length=8, choices=GpuClass.choices, default=GpuClass.ANY
    )
    duration_months = models.PositiveSmallIntegerField(
        _("duration (months)"), validators=[MinValueValidator(1)]
    )
    data_sensitivity = models.CharField(
        _("dataset sensitivity"), max_length=16, choices=DataSensitivity.choices
    )
    team_members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="+", verbose_name=_("team members")
    )
    state = models.CharField(
        max_length=20, choices=ApplicationState.choices, default=ApplicationState.DRAFT
    )
    state_changed_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    objects = CreditApplicationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "submitted_at"], name="credits_app_queue")]

    def __str__(self) -> str:
        return f"{self.title} ({self.organisation})"


class ApplicationEvent(models.Model):
    """The application's thread: state changes with who and when, and comments between them."""

    application = models.ForeignKey(
        CreditApplication, on_delete=models.CASCADE, related_name="events"
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    from_state = models.CharField(max_length=20, choices=ApplicationState.choices, blank=True)
    to_state = models.CharField(max_length=20, choices=ApplicationState.choices, blank=True)
    message = models.TextField(max_length=5000, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.application_id}: {self.from_state}→{self.to_state}"

    @property
    def is_comment(self) -> bool:
        return not self.to_state


class CreditWarning(TimeStampedModel):
    """A low-balance warning already sent: once per threshold per grant."""

    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="warnings")
    threshold_percent = models.PositiveSmallIntegerField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["grant", "threshold_percent"], name="credits_warning_once_per_threshold"
            )
        ]

    def __str__(self) -> str:
        return f"{self.grant} below {self.threshold_percent}%"
