"""The models the programme offers through /llm/v1: what each is, where its weights are, who may
call it and what a token costs.

A model's `name` is the `model` a client sends and what `GET /llm/v1/models` lists. Weights live
in the deployment's own model store (settings.MODEL_STORE_DIR): nothing is fetched from outside
at run time. Prices are credit-seconds per 1,000 tokens with three decimals, so a request's cost
is an exact integer of microcredit-seconds (tokens × price × 1,000); the ledger is charged whole
credit-seconds of the running total (inference.usage).
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils.translation import gettext_lazy as _

from portal.core.models import PublicIdModel

# What a client may send as `model`: OpenAI's ids look like this (letters, digits, . _ : -).
MODEL_NAME_REGEX = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
# A path inside the model store: no leading slash, no `..`, no empty or hidden segments.
WEIGHTS_PATH_REGEX = r"^(?!.*(?:^|/)\.)[A-Za-z0-9_][A-Za-z0-9._/-]{0,299}$"
MICROCREDITS_PER_CREDIT_SECOND = 1_000_000


class ServedModelQuerySet(models.QuerySet):
    def offered(self) -> "ServedModelQuerySet":
        return self.filter(is_active=True)

    def visible_to(self, *, organisation=None, user=None) -> "ServedModelQuerySet":
        """Models an organisation (a startup's key) or a person (a student, or a member using
        the playground) may call: offered to all, to that organisation, or to their cohort."""
        visible = Q(visibility=ServedModel.Visibility.ALL)
        if organisation is not None:
            visible |= Q(visibility=ServedModel.Visibility.ORGANISATION, organisation=organisation)
        if user is not None:
            visible |= Q(
                visibility=ServedModel.Visibility.COHORT,
                cohort__students__user=user,
            )
        return self.offered().filter(visible).distinct()

    def visible_to_person(self, *, user) -> "ServedModelQuerySet":
        """Models a signed-in person may call by any way they have: offered to all, to an
        organisation they belong to (paid from it), or to their cohort. The model pages and the
        playground list these; the gateway still decides per request who pays."""
        if not getattr(user, "is_authenticated", False):
            return self.none()
        visible = (
            Q(visibility=ServedModel.Visibility.ALL)
            | Q(
                visibility=ServedModel.Visibility.ORGANISATION,
                organisation__memberships__user=user,
            )
            | Q(visibility=ServedModel.Visibility.COHORT, cohort__students__user=user)
        )
        return self.offered().filter(visible).distinct()


class ServedModel(PublicIdModel):
    """A model in the catalogue: one name clients call, one engine, one set of weights."""

    class Task(models.TextChoices):
        CHAT = "chat", _("Chat and completions")
        EMBEDDING = "embedding", _("Embeddings")

    class Engine(models.TextChoices):
        VLLM = "vllm", _("vLLM (OpenAI-compatible server)")
        LLAMA_CPP = "llama.cpp", _("llama.cpp (OpenAI-compatible server, CPU or GPU)")

    class Visibility(models.TextChoices):
        ALL = "all", _("Everyone with credits")
        ORGANISATION = "organisation", _("One organisation")
        COHORT = "cohort", _("One student cohort")

    name = models.CharField(
        _("name"),
        max_length=100,
        unique=True,
        validators=[RegexValidator(MODEL_NAME_REGEX)],
        help_text=_("What clients send as `model`, e.g. qalam-7b-chat."),
    )
    display_name = models.CharField(_("display name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    task = models.CharField(_("task"), max_length=16, choices=Task.choices)
    engine = models.CharField(_("engine"), max_length=16, choices=Engine.choices)
    weights_path = models.CharField(
        _("weights"),
        max_length=300,
        validators=[RegexValidator(WEIGHTS_PATH_REGEX)],
        help_text=_("A file or folder inside the model store, e.g. qalam/7b-q4.gguf."),
    )
    weights_sha256 = models.CharField(
        _("weights SHA-256"),
        max_length=64,
        blank=True,
        validators=[RegexValidator(r"^[0-9a-f]{64}$")],
    )
    licence = models.CharField(_("licence"), max_length=200)
    context_length = models.PositiveIntegerField(
        _("context length (tokens)"), validators=[MinValueValidator(16)]
    )
    languages = models.JSONField(
        _("languages"), default=list, help_text=_('Language codes, e.g. ["en", "ur"].')
    )
    input_price = models.DecimalField(
        _("input price (credit-seconds per 1,000 tokens)"),
        max_digits=12,
        decimal_places=3,
        validators=[MinValueValidator(Decimal("0"))],
    )
    output_price = models.DecimalField(
        _("output price (credit-seconds per 1,000 tokens)"),
        max_digits=12,
        decimal_places=3,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text=_("Embeddings have input tokens only."),
    )
    visibility = models.CharField(
        _("offered to"), max_length=16, choices=Visibility.choices, default=Visibility.ALL
    )
    organisation = models.ForeignKey(
        "organisations.Organisation",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="served_models",
    )
    cohort = models.ForeignKey(
        "onboarding.Cohort",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="served_models",
    )
    is_active = models.BooleanField(_("offered"), default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = ServedModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                name="llm_model_visibility_names_its_holder",
                condition=(
                    Q(visibility="all", organisation__isnull=True, cohort__isnull=True)
                    | Q(visibility="organisation", organisation__isnull=False, cohort__isnull=True)
                    | Q(visibility="cohort", organisation__isnull=True, cohort__isnull=False)
                ),
            ),
            models.CheckConstraint(
                name="llm_model_prices_not_negative",
                condition=Q(input_price__gte=0, output_price__gte=0),
            ),
            models.CheckConstraint(
                name="llm_embedding_has_no_output_price",
                condition=~Q(task="embedding") | Q(output_price=0),
            ),
            # Two models whose names differ only in case would confuse every reader of a
            # statement or a log; the catalogue's service checks first, this decides a race.
            models.UniqueConstraint(Lower("name"), name="llm_model_name_unique_any_case"),
        ]

    def __str__(self) -> str:
        return self.name

    def cost_microcredits(self, *, prompt_tokens: int, completion_tokens: int = 0) -> int:
        """The exact price of a request's tokens, in millionths of a credit-second."""
        price_in = int(self.input_price * 1000)  # thousandths of a credit-second per 1k tokens
        price_out = int(self.output_price * 1000)
        return prompt_tokens * price_in + completion_tokens * price_out
