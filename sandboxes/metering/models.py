"""What a running sandbox used and what it was charged.

- `SandboxRun`: one stretch of allocated time, from the moment the sandbox's resources are
  allocated (it is `starting`) to the moment they are released, whether the server became ready
  or the start failed. This is what is billed (allocation, not utilisation). The rate and the
  interval are fixed when the run opens, so a later change of either never re-prices or re-slices
  time already used.
- `UsageCharge`: one interval of one run, what was due and what the ledger took. Its key is the
  ledger transaction's idempotency key, so an interval is charged once however often it is tried.
- `UsageSample` / `DeviceSample`: telemetry, one row per sandbox (per device) per tick; pruned after
  a retention period. Charts read `UsageRollup` (per minute and per hour) and `DeviceRollup`.
"""

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from portal.core.models import PublicIdModel


class SandboxRun(PublicIdModel):
    sandbox = models.ForeignKey("launcher.Sandbox", on_delete=models.PROTECT, related_name="runs")
    account = models.ForeignKey(
        "credits.CreditAccount", on_delete=models.PROTECT, related_name="sandbox_runs"
    )
    rate_millicredits = models.PositiveIntegerField(
        _("charge (thousandths of a credit-second per second)")
    )
    interval_seconds = models.PositiveIntegerField(_("metering interval (seconds)"))
    started_at = models.DateTimeField(_("allocated from"))
    ended_at = models.DateTimeField(_("released at"), null=True, blank=True)
    charged_until = models.DateTimeField(
        _("charged until"), help_text=_("Every interval before this instant has been charged.")
    )
    settled = models.BooleanField(
        default=False, help_text=_("Ended and charged to the end: nothing more to do.")
    )
    exhausted_at = models.DateTimeField(
        _("credits ran out at"),
        null=True,
        blank=True,
        help_text=_("The paying account could not cover a charge; the sandbox stops at stop_at."),
    )
    stop_at = models.DateTimeField(_("stops at"), null=True, blank=True)
    charged_credit_seconds = models.BigIntegerField(default=0)
    unpaid_credit_seconds = models.BigIntegerField(
        default=0, help_text=_("Used while the account could not pay (the stop countdown).")
    )

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["sandbox"],
                condition=Q(ended_at__isnull=True),
                name="metering_one_open_run_per_sandbox",
            ),
        ]
        indexes = [
            models.Index(fields=["id"], condition=Q(settled=False), name="metering_unsettled"),
        ]

    def __str__(self) -> str:
        return f"run {self.public_id} of sandbox {self.sandbox_id}"


class UsageCharge(models.Model):
    run = models.ForeignKey(SandboxRun, on_delete=models.PROTECT, related_name="charges")
    interval_start = models.DateTimeField()
    milliseconds = models.PositiveIntegerField(help_text=_("Allocated time in this interval."))
    due = models.BigIntegerField(_("due (credit-seconds)"))
    charged = models.BigIntegerField(_("charged (credit-seconds)"), null=True, blank=True)
    idempotency_key = models.CharField(max_length=200, unique=True)
    transaction = models.ForeignKey(
        "credits.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )

    class Meta:
        ordering = ["interval_start"]
        indexes = [
            models.Index(fields=["run", "interval_start"], name="metering_charge_run"),
            models.Index(
                fields=["id"], condition=Q(charged__isnull=True), name="metering_charge_unposted"
            ),
        ]
        constraints = [
            models.CheckConstraint(name="metering_charge_due_positive", condition=Q(due__gt=0)),
        ]

    def __str__(self) -> str:
        return self.idempotency_key

    @property
    def unpaid(self) -> int:
        return self.due - (self.charged or 0)


class UsageSample(models.Model):
    """One sandbox at one tick: its GPUs summed or averaged, its container's CPU and memory."""

    sandbox = models.ForeignKey(
        "launcher.Sandbox", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    taken_at = models.DateTimeField()
    gpu_count = models.PositiveSmallIntegerField(default=0)
    gpu_util_pct = models.FloatField(null=True, blank=True)
    gpu_memory_used_mib = models.IntegerField(null=True, blank=True)
    gpu_power_w = models.FloatField(null=True, blank=True)
    gpu_temperature_c = models.SmallIntegerField(null=True, blank=True)
    cpu_pct = models.FloatField(null=True, blank=True)
    memory_used_mib = models.IntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sandbox", "taken_at"], name="metering_sample_once"),
        ]
        indexes = [models.Index(fields=["taken_at"], name="metering_sample_time")]

    def __str__(self) -> str:
        return f"sandbox {self.sandbox_id} at {self.taken_at:%Y-%m-%d %H:%M:%S}"


class DeviceSample(models.Model):
    """One GPU (or MIG instance) at one tick, and which sandbox held it."""

    device = models.ForeignKey(
        "gpus.GpuDevice", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    sandbox = models.ForeignKey(
        "launcher.Sandbox",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    taken_at = models.DateTimeField()
    util_pct = models.FloatField(null=True, blank=True)
    memory_used_mib = models.IntegerField(null=True, blank=True)
    power_w = models.FloatField(null=True, blank=True)
    temperature_c = models.SmallIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "taken_at"], name="metering_device_once"),
        ]
        indexes = [models.Index(fields=["taken_at"], name="metering_device_time")]

    def __str__(self) -> str:
        return f"device {self.device_id} at {self.taken_at:%Y-%m-%d %H:%M:%S}"


class Step(models.TextChoices):
    MINUTE = "minute", _("Minute")
    HOUR = "hour", _("Hour")


class UsageRollup(models.Model):
    """A sandbox's samples over one minute or one hour: averages, and peaks where a peak is what
    matters (memory, temperature)."""

    sandbox = models.ForeignKey(
        "launcher.Sandbox", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    step = models.CharField(max_length=8, choices=Step.choices)
    bucket = models.DateTimeField()
    samples = models.PositiveIntegerField()
    gpu_util_pct = models.FloatField(null=True, blank=True)
    gpu_memory_used_mib = models.FloatField(null=True, blank=True)
    gpu_power_w = models.FloatField(null=True, blank=True)
    gpu_temperature_c = models.FloatField(null=True, blank=True)
    cpu_pct = models.FloatField(null=True, blank=True)
    memory_used_mib = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sandbox", "step", "bucket"], name="metering_rollup_once"
            ),
        ]
        indexes = [models.Index(fields=["step", "bucket"], name="metering_rollup_time")]

    def __str__(self) -> str:
        return f"sandbox {self.sandbox_id} {self.step} {self.bucket:%Y-%m-%d %H:%M}"


class DeviceRollup(models.Model):
    """A device over one hour: average utilisation, and how much of the hour it was held, and
    held while idle (allocated but under 5% busy: the programme's waste)."""

    device = models.ForeignKey(
        "gpus.GpuDevice", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    bucket = models.DateTimeField()
    samples = models.PositiveIntegerField()
    util_pct = models.FloatField(null=True, blank=True)
    held_samples = models.PositiveIntegerField(default=0)
    idle_held_samples = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device", "bucket"], name="metering_device_rollup_once"
            ),
        ]

    def __str__(self) -> str:
        return f"device {self.device_id} hour {self.bucket:%Y-%m-%d %H:%M}"
