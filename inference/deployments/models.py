"""Deployments: a catalogue model served on N GPUs per replica, R replicas, by engine containers
the portal starts, watches and stops.

`Replica.state` changes only in `services.py`:

    requested → queued → starting → ready ⇄ unhealthy
                   ╰────────╰─────────╰───────╰──→ stopping → stopped
                            ╰──────────────────────────────────→ failed

A replica's GPUs are held through the same allocator as sandboxes' (sandboxes.gpus), so one
device is never given to a sandbox and a replica at once. The GPU time a replica holds is the
platform's own cost of serving, shown in the programme's reports.
"""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from portal.core.models import PublicIdModel


class Deployment(PublicIdModel):
    """A model put into service by a programme manager: how many replicas, how many GPUs each."""

    class State(models.TextChoices):
        ACTIVE = "active", _("Serving")
        STOPPED = "stopped", _("Stopped")

    model = models.ForeignKey(
        "llm_catalogue.ServedModel", on_delete=models.PROTECT, related_name="deployments"
    )
    gpus_per_replica = models.PositiveSmallIntegerField(
        _("GPUs per replica"),
        default=1,
        validators=[MaxValueValidator(16)],
        help_text=_("0 runs the engine on CPU (small models, development)."),
    )
    gpu_model = models.CharField(
        _("GPU model"), max_length=100, blank=True, help_text=_("Empty: any model.")
    )
    replicas_wanted = models.PositiveSmallIntegerField(
        _("replicas"), default=1, validators=[MinValueValidator(0), MaxValueValidator(64)]
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One live deployment per model: scaling changes its replica count.
            models.UniqueConstraint(
                fields=["model"], condition=Q(state="active"), name="llm_one_active_deployment"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} × {self.replicas_wanted}"


class Replica(PublicIdModel):
    """One engine container of a deployment, and the address the gateway sends requests to."""

    class State(models.TextChoices):
        REQUESTED = "requested", _("Requested")
        QUEUED = "queued", _("Waiting for GPUs")
        STARTING = "starting", _("Starting")
        READY = "ready", _("Ready")
        UNHEALTHY = "unhealthy", _("Not answering")
        STOPPING = "stopping", _("Stopping")
        STOPPED = "stopped", _("Stopped")
        FAILED = "failed", _("Failed")

    LIVE_STATES = ("requested", "queued", "starting", "ready", "unhealthy", "stopping")

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="replicas")
    state = models.CharField(max_length=16, choices=State.choices, default=State.REQUESTED)
    # Where the engine's OpenAI-compatible API answers, ending in /v1 (set when it starts).
    base_url = models.CharField(max_length=300, blank=True)
    # The engine's own bearer secret (its --api-key), made per replica: only the gateway and
    # the health probe send it. Never shown on a page or in an API.
    api_key = models.CharField(max_length=100, blank=True)
    # Registered by hand (replica_register_external: an engine the portal did not start, such
    # as a test's engine process). The reconciler neither counts, starts nor stops these.
    external = models.BooleanField(default=False)
    queued_at = models.DateTimeField(null=True, blank=True)  # in line for GPUs since
    container_id = models.CharField(max_length=80, blank=True)
    node = models.CharField(max_length=200, blank=True)  # the engine node it runs on, by name
    gpu_uuids = models.JSONField(default=list, blank=True)  # as allocated, for people to read
    message = models.CharField(max_length=500, blank=True)  # the last thing that happened
    health_failures = models.PositiveSmallIntegerField(default=0)
    last_healthy_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)  # GPUs held from
    stopped_at = models.DateTimeField(null=True, blank=True)  # GPUs released at

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["deployment", "state"],
                condition=Q(state__in=["ready", "unhealthy"]),
                name="llm_replicas_serving",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.deployment.model} replica {self.public_id} ({self.state})"
