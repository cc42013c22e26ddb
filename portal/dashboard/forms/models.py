"""The catalogue's forms: what a programme manager types to add or change a model. They parse
input only; the rules (a name free, weights in the store, prices, visibility) are the services'."""

from decimal import Decimal

from django import forms
from django.utils.translation import gettext_lazy as _

from inference.catalogue.models import ServedModel
from portal.onboarding.models import Cohort
from portal.organisations.models import Organisation

PRICE_HELP = _("Credit-seconds per 1,000 tokens, up to three decimals (0 is free).")


class LanguagesField(forms.CharField):
    """Language codes typed as "en, ur": a list for the service, a line for the person."""

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value)
        return [code.strip() for code in text.replace(";", ",").split(",") if code.strip()]


class ServedModelEditForm(forms.Form):
    """What can change once a model is in the catalogue."""

    display_name = forms.CharField(label=_("Display name"), max_length=200)
    description = forms.CharField(
        label=_("Description"),
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    weights_path = forms.CharField(
        label=_("Weights"),
        max_length=300,
        help_text=_("A file or folder inside the model store, e.g. qalam/7b-q4.gguf."),
    )
    licence = forms.CharField(label=_("Licence"), max_length=200)
    context_length = forms.IntegerField(
        label=_("Context length (tokens)"), min_value=16, max_value=10_000_000
    )
    languages = LanguagesField(
        label=_("Languages"),
        max_length=500,
        help_text=_("Language codes separated by commas, e.g. en, ur."),
    )
    input_price = forms.DecimalField(
        label=_("Input price"),
        min_value=Decimal("0"),
        max_digits=12,
        decimal_places=3,
        help_text=PRICE_HELP,
    )
    output_price = forms.DecimalField(
        label=_("Output price"),
        min_value=Decimal("0"),
        max_digits=12,
        decimal_places=3,
        initial=Decimal("0"),
        help_text=_("Credit-seconds per 1,000 generated tokens. Embedding models: 0."),
    )
    visibility = forms.ChoiceField(label=_("Offered to"), choices=ServedModel.Visibility.choices)
    organisation = forms.ModelChoiceField(
        label=_("Organisation"),
        queryset=Organisation.objects.filter(is_active=True).order_by("legal_name"),
        to_field_name="public_id",
        required=False,
        help_text=_("When the model is offered to one organisation."),
    )
    cohort = forms.ModelChoiceField(
        label=_("Cohort"),
        queryset=Cohort.objects.order_by("-created_at"),
        to_field_name="public_id",
        required=False,
        help_text=_("When the model is offered to one student cohort."),
    )

    def __init__(self, *args, model: ServedModel | None = None, **kwargs):
        if model is not None:
            kwargs.setdefault(
                "initial",
                {
                    "display_name": model.display_name,
                    "description": model.description,
                    "weights_path": model.weights_path,
                    "licence": model.licence,
                    "context_length": model.context_length,
                    "languages": model.languages,
                    "input_price": model.input_price,
                    "output_price": model.output_price,
                    "visibility": model.visibility,
                    "organisation": model.organisation,
                    "cohort": model.cohort,
                },
            )
        super().__init__(*args, **kwargs)


class ServedModelForm(ServedModelEditForm):
    """A new model: its name, task and engine too, which do not change afterwards."""

    name = forms.CharField(
        label=_("Name"),
        max_length=100,
        help_text=_("What clients send as `model`, e.g. qalam-7b-chat. It cannot change later."),
    )
    task = forms.ChoiceField(label=_("Task"), choices=ServedModel.Task.choices)
    engine = forms.ChoiceField(
        label=_("Engine"),
        choices=ServedModel.Engine.choices,
        initial=ServedModel.Engine.VLLM,
    )

    field_order = ["name", "display_name", "task", "engine"]


class DeployForm(forms.Form):
    """Put a model into service: R replicas of N GPUs each (0 GPUs: on CPU, small models)."""

    gpus_per_replica = forms.IntegerField(
        label=_("GPUs per replica"),
        min_value=0,
        max_value=16,
        initial=1,
        help_text=_("0 runs the engine on CPU (small models, development)."),
    )
    replicas = forms.IntegerField(label=_("Replicas"), min_value=1, max_value=64, initial=1)
    gpu_model = forms.CharField(
        label=_("GPU model"),
        max_length=100,
        required=False,
        help_text=_("Empty: any model."),
    )


class ScaleForm(forms.Form):
    replicas = forms.IntegerField(label=_("Replicas"), min_value=0, max_value=64)
