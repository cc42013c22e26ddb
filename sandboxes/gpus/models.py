"""The GPUs of this deployment and who holds them.

A device is named by its UUID everywhere (NVML, Docker `device_ids`, the database, the API):
NVML's index order is not stable across reboots. The index is kept for people to read only.
"""

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from portal.core.models import TimeStampedModel


class GpuDeviceQuerySet(models.QuerySet):
    def allocatable(self) -> "GpuDeviceQuerySet":
        """Healthy devices a sandbox can be given: whole GPUs without MIG, and MIG instances."""
        return self.filter(health=GpuDevice.Health.HEALTHY, mig_enabled=False)

    def of_kind(self, *, model: str = "", mig_profile: str = "") -> "GpuDeviceQuerySet":
        """Devices a profile asks for: its MIG profile (or whole GPUs), and its model if named."""
        devices = self.filter(mig_profile=mig_profile)
        return devices.filter(model=model) if model else devices

    def free(self) -> "GpuDeviceQuerySet":
        held = GpuAllocation.objects.filter(device=models.OuterRef("pk"), released_at__isnull=True)
        return self.allocatable().filter(~models.Exists(held))


class GpuDevice(TimeStampedModel):
    """One GPU, or one MIG instance of a GPU, as discovered by the inventory backend."""

    class Health(models.TextChoices):
        HEALTHY = "healthy", _("Healthy")
        UNHEALTHY = "unhealthy", _("Unhealthy")
        MISSING = "missing", _("Missing")  # no longer reported by the backend

    uuid = models.CharField(_("UUID"), max_length=96, unique=True)
    index = models.PositiveSmallIntegerField(_("index"), help_text=_("For display only."))
    model = models.CharField(_("model"), max_length=100)
    memory_mib = models.PositiveIntegerField(_("memory (MiB)"))
    mig_parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="mig_instances"
    )
    mig_profile = models.CharField(_("MIG profile"), max_length=32, blank=True)
    mig_enabled = models.BooleanField(
        _("MIG enabled"),
        default=False,
        help_text=_("A GPU split into MIG instances is handed out by instance, never whole."),
    )
    health = models.CharField(
        _("health"), max_length=16, choices=Health.choices, default=Health.HEALTHY
    )
    simulated = models.BooleanField(
        _("simulated"),
        default=False,
        help_text=_("Stands in for a real GPU on a machine without an NVIDIA driver."),
    )
    last_seen_at = models.DateTimeField(_("last seen"))

    objects = GpuDeviceQuerySet.as_manager()

    class Meta:
        ordering = ["index", "mig_profile", "uuid"]

    def __str__(self) -> str:
        label = f"{self.model} {self.mig_profile}".strip()
        return f"#{self.index} {label} ({self.uuid})"


class GpuAllocation(TimeStampedModel):
    """A device given to a sandbox or to a model replica (exactly one), from allocation until
    release.

    The partial unique constraint is the last wall against handing one device to two live
    holders (two sandboxes, or a sandbox and a replica), whatever the code above it does: the
    database refuses a second open allocation.
    """

    device = models.ForeignKey(GpuDevice, on_delete=models.PROTECT, related_name="allocations")
    sandbox = models.ForeignKey(
        "launcher.Sandbox",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="gpu_allocations",
    )
    # A model replica (inference, the floor above): named by string, never imported here.
    replica = models.ForeignKey(
        "llm_deployments.Replica",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="gpu_allocations",
    )
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device"],
                condition=Q(released_at__isnull=True),
                name="gpus_one_open_allocation_per_device",
            ),
            models.CheckConstraint(
                condition=(
                    Q(sandbox__isnull=False, replica__isnull=True)
                    | Q(sandbox__isnull=True, replica__isnull=False)
                ),
                name="gpus_allocation_has_one_holder",
            ),
        ]
        indexes = [
            models.Index(
                fields=["sandbox"],
                condition=Q(released_at__isnull=True),
                name="gpus_open_allocations_by_box",
            ),
            models.Index(
                fields=["replica"],
                condition=Q(released_at__isnull=True),
                name="gpus_open_allocations_by_rep",
            ),
        ]

    def __str__(self) -> str:
        holder = f"sandbox {self.sandbox_id}" if self.sandbox_id else f"replica {self.replica_id}"
        return f"{self.device.uuid} → {holder}"


class GpuWait(TimeStampedModel):
    """A model replica in line for devices, beside the sandboxes' own queue (their QUEUED rows).

    The allocator reads these before it gives devices to a sandbox: a sandbox that came later
    than a waiting replica of an overlapping kind of GPU does not take the devices first, so
    replicas are served in the same first-come order as sandboxes and are never starved by
    the sandboxes' queue. Written only by `gpu_wait_join` / `gpu_wait_leave`.
    """

    replica = models.OneToOneField(
        "llm_deployments.Replica", on_delete=models.CASCADE, related_name="gpu_wait"
    )
    count = models.PositiveSmallIntegerField()
    model = models.CharField(max_length=100, blank=True)  # '' = any model
    mig_profile = models.CharField(max_length=32, blank=True)
    queued_at = models.DateTimeField()

    class Meta:
        ordering = ["queued_at", "pk"]
        indexes = [models.Index(fields=["mig_profile", "queued_at"], name="gpus_waits_in_line")]

    def __str__(self) -> str:
        return f"replica {self.replica_id} waits for {self.count} × {self.model or 'any'}"
