"""Sandboxes: the catalogue people choose from, and each notebook server they launch.

`Sandbox.status` changes only in `services.py`:

    requested → queued → starting → running → stopping → stopped
                   ╰────────╰──────────╰─────────────────╰──→ failed
    stopped / failed → starting | queued   (restart)
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from portal.core.models import PublicIdModel

from .status_messages import status_render

SERVER_NAME_REGEX = r"^sb-[a-z0-9]{10}$"


class Audience(models.TextChoices):
    STUDENTS = "students", _("Students")
    STARTUPS = "startups", _("Startups")
    BOTH = "both", _("Students and startups")


class Egress(models.TextChoices):
    OPEN = "open", _("Internet access")
    INTERNAL = "internal", _("No network access outside the sandbox")


class SandboxImage(PublicIdModel):
    """An image people may run: an allow-list managed by programme managers in the admin."""

    slug = models.SlugField(_("short name"), max_length=40, unique=True)
    name = models.CharField(_("name"), max_length=100)
    image = models.CharField(
        _("image tag"),
        max_length=200,
        unique=True,
        validators=[RegexValidator(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$")],
    )
    description = models.TextField(_("description"), blank=True)
    gpu_capable = models.BooleanField(_("GPU capable"), default=False)
    is_active = models.BooleanField(_("offered"), default=True)
    sort_order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["sort_order", "name"]

    def __str__(self) -> str:
        return self.name


class ResourceProfile(PublicIdModel):
    """A size of sandbox and what it costs per second.

    The charge rate is in thousandths of a credit-second per second, an integer: one whole GPU
    is 1000 (one credit-second per second), two GPUs 2000, CPU-only a small fraction.
    """

    slug = models.SlugField(_("short name"), max_length=40, unique=True)
    name = models.CharField(_("name"), max_length=100)
    description = models.TextField(_("description"), blank=True)
    cpu_cores = models.DecimalField(
        _("CPU cores"),
        max_digits=5,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0.25")), MaxValueValidator(Decimal("256"))],
    )
    memory_mib = models.PositiveIntegerField(_("memory (MiB)"), validators=[MinValueValidator(256)])
    shm_mib = models.PositiveIntegerField(
        _("shared memory (MiB)"),
        default=1024,
        help_text=_("Shared memory; PyTorch data loaders need more than Docker's 64 MiB."),
    )
    pids_limit = models.PositiveIntegerField(_("process limit"), default=2048)
    gpu_count = models.PositiveSmallIntegerField(_("GPUs"), default=0)
    gpu_model = models.CharField(
        _("GPU model"), max_length=100, blank=True, help_text=_("Empty: any model.")
    )
    mig_profile = models.CharField(
        _("MIG profile"), max_length=32, blank=True, help_text=_("For example 1g.10gb.")
    )
    charge_millicredits_per_second = models.PositiveIntegerField(
        _("charge (thousandths of a credit-second per second)"),
        validators=[MinValueValidator(1)],
    )
    audience = models.CharField(
        _("who may use it"), max_length=16, choices=Audience.choices, default=Audience.BOTH
    )
    egress = models.CharField(
        _("network access"), max_length=16, choices=Egress.choices, default=Egress.OPEN
    )
    max_age_seconds = models.PositiveIntegerField(
        _("maximum age (seconds)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(60)],
        help_text=_(
            "A sandbox of this profile is stopped this long after its start (its home folder "
            "stays). Empty: no limit."
        ),
    )
    home_quota_mib = models.PositiveIntegerField(
        _("home folder quota (MiB)"),
        default=10240,
        help_text=_(
            "A start is refused while the person's home folder holds more than this (they are "
            "warned from 80%). 0: no quota."
        ),
    )
    disk_mib = models.PositiveIntegerField(
        _("writable layer (MiB)"),
        default=20480,
        help_text=_(
            "Size limit of the container's own files outside the home folder, where the Docker "
            "storage driver can enforce one (overlay2 on XFS with pquota, btrfs, zfs). 0: none."
        ),
    )
    is_active = models.BooleanField(_("offered"), default=True)
    sort_order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["sort_order", "gpu_count", "name"]
        constraints = [
            models.CheckConstraint(
                name="launcher_profile_mig_needs_gpu",
                condition=Q(mig_profile="") | Q(gpu_count__gt=0),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def charge_rate(self) -> Decimal:
        """Credit-seconds charged per second allocated."""
        return Decimal(self.charge_millicredits_per_second) / 1000


class SandboxQuerySet(models.QuerySet):
    def for_user(self, user) -> "SandboxQuerySet":
        """The sandboxes a person may see and act on: their own. (Programme managers use the
        dashboard's selectors, not this.)"""
        if not user.is_authenticated:
            return self.none()
        return self.filter(user=user).exclude(deleted_at__isnull=False)

    def live(self) -> "SandboxQuerySet":
        return self.filter(status__in=Sandbox.LIVE)


class Sandbox(PublicIdModel):
    """One notebook server of one person: a JupyterHub named server in a Docker container."""

    class Status(models.TextChoices):
        REQUESTED = "requested", _("Requested")
        QUEUED = "queued", _("Waiting for a GPU")
        STARTING = "starting", _("Starting")
        RUNNING = "running", _("Running")
        STOPPING = "stopping", _("Stopping")
        STOPPED = "stopped", _("Stopped")
        FAILED = "failed", _("Failed")

    LIVE = (Status.REQUESTED, Status.QUEUED, Status.STARTING, Status.RUNNING, Status.STOPPING)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="sandboxes"
    )
    organisation = models.ForeignKey(
        "organisations.Organisation",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="sandboxes",
        help_text=_("Whose credits pay; empty for a student's own sandbox."),
    )
    account = models.ForeignKey(
        "credits.CreditAccount", on_delete=models.PROTECT, related_name="sandboxes"
    )
    image = models.ForeignKey(SandboxImage, on_delete=models.PROTECT, related_name="sandboxes")
    profile = models.ForeignKey(ResourceProfile, on_delete=models.PROTECT, related_name="sandboxes")
    server_name = models.CharField(
        max_length=30, unique=True, validators=[RegexValidator(SERVER_NAME_REGEX)]
    )
    name = models.CharField(_("name"), max_length=80, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.REQUESTED, db_index=True
    )
    # The status message: a code of status_messages.MESSAGES with its parameters, put into
    # words in each reader's language (`status_text`); `status_message` keeps it in English for
    # logs, the admin and the audit, and holds alone the hub's own words, which have no code.
    status_message = models.CharField(max_length=500, blank=True)
    status_code = models.CharField(max_length=40, blank=True)
    status_params = models.JSONField(default=dict, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    queued_at = models.DateTimeField(null=True, blank=True)
    starting_at = models.DateTimeField(null=True, blank=True)
    running_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = SandboxQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One launch at a time per person: a second press of Launch while the first is on
            # its way is refused by the database, not only by a check that could race.
            models.UniqueConstraint(
                fields=["user"],
                condition=Q(status__in=["requested", "starting"]),
                name="launcher_one_launch_at_a_time",
            ),
            models.CheckConstraint(
                name="launcher_sandbox_server_name_format",
                condition=Q(server_name__regex=SERVER_NAME_REGEX),
            ),
        ]
        indexes = [
            models.Index(
                fields=["queued_at"], condition=Q(status="queued"), name="launcher_queue_order"
            ),
        ]

    def __str__(self) -> str:
        return self.name or self.server_name

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE

    def held_devices(self) -> list:
        """Devices of the open allocations (uses `gpu_allocations__device` when prefetched)."""
        return [a.device for a in self.gpu_allocations.all() if a.released_at is None]

    @property
    def display_name(self) -> str:
        return self.name or f"{self.image.name} · {self.profile.name}"

    @property
    def status_text(self) -> str:
        """The status message in the current language (the stored text when it has no code)."""
        return status_render(self.status_code, self.status_params) or self.status_message


class SandboxStart(PublicIdModel):
    """One start of a sandbox: from the moment its resources were allocated (`starting`) to
    their release (`stopped` or `failed`).

    Its public id travels in the spawn spec and comes back with the hub's `server-stopped`, so
    a late report about an earlier start cannot end a later one (a restart reuses the server
    name). Failed starts are counted per person to rate-limit launches that keep failing.
    """

    class Outcome(models.TextChoices):
        STOPPED = "stopped", _("Stopped")
        FAILED = "failed", _("Failed")

    sandbox = models.ForeignKey(Sandbox, on_delete=models.PROTECT, related_name="starts")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        help_text=_("The sandbox's owner (failed starts are counted per person)."),
    )
    started_at = models.DateTimeField(_("allocated at"))
    ended_at = models.DateTimeField(_("released at"), null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["sandbox"],
                condition=Q(ended_at__isnull=True),
                name="launcher_one_open_start_per_sandbox",
            ),
        ]
        indexes = [
            models.Index(
                fields=["user", "ended_at"],
                condition=Q(outcome="failed"),
                name="launcher_failed_starts",
            ),
        ]

    def __str__(self) -> str:
        return f"start {self.public_id} of sandbox {self.sandbox_id}"


class HomeUsage(models.Model):
    """How much a person's home volume held when last measured (launcher.disk, on beat)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="home_usage"
    )
    volume = models.CharField(_("volume"), max_length=200)
    bytes = models.BigIntegerField(_("bytes"))
    measured_at = models.DateTimeField(_("measured at"))
    # When the owner was last told they are near a quota; cleared when they fall below it.
    warned_at = models.DateTimeField(_("warned at"), null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.volume}: {self.bytes} bytes"
