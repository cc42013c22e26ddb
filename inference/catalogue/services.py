"""Writes to the model catalogue: a programme manager adds a model, changes it, takes it out of
the catalogue and offers it again. Every change is validated here (the pages and any future API
call the same functions) and audited in the same transaction.

What a model may be, in one place:
- its `name` is what clients send as `model`: OpenAI-style (letters, digits, . _ : -), unique
  whatever the case (two models that differ only in case would confuse people), and not one of
  the words the model pages use in their own addresses;
- its weights are a file or folder that exists inside the deployment's model store
  (`store.weights_resolve`: no `..`, no absolute path, no symlink out of the store);
- its prices are credit-seconds per 1,000 tokens, never negative, at most three decimals (a
  request's cost is then a whole number of microcredit-seconds); an embedding model has no
  output price;
- its visibility names exactly its holder: everyone (no organisation, no cohort), one
  organisation, or one cohort.
"""

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError

from .models import MODEL_NAME_REGEX, WEIGHTS_PATH_REGEX, ServedModel
from .store import weights_resolve

# Words the model pages use after /models/ (the playground, the logging opt-in): a model named
# like one of them would have a page no one could open.
RESERVED_NAMES = frozenset({"playground", "request-logging", "new"})
LANGUAGE_CODE_REGEX = r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$"
MAX_LANGUAGES = 50
MAX_CONTEXT_LENGTH = 10_000_000
MIN_CONTEXT_LENGTH = 16
# max_digits=12, decimal_places=3 on the column: nine digits before the point.
MAX_PRICE = Decimal("999999999.999")

# What `served_model_update` may change. The name is not among them: clients and keys' users
# call a model by it, and requests already made point to it.
UPDATABLE_FIELDS = (
    "display_name",
    "description",
    "weights_path",
    "licence",
    "context_length",
    "languages",
    "input_price",
    "output_price",
    "visibility",
    "organisation",
    "cohort",
)


def _error(message: str, field: str) -> ApplicationError:
    return ApplicationError(message, field=field)


def _name_clean(name: str, *, exclude_pk: int | None = None) -> str:
    name = (name or "").strip()
    if not re.match(MODEL_NAME_REGEX, name):
        raise _error(
            _(
                "A model's name is what clients send as `model`: start with a letter or digit, "
                "then up to 99 letters, digits, dots, underscores, colons or hyphens."
            ),
            "name",
        )
    if name.lower() in RESERVED_NAMES:
        raise _error(_("This name is reserved for the model pages. Choose another."), "name")
    taken = ServedModel.objects.filter(name__iexact=name)
    if exclude_pk is not None:
        taken = taken.exclude(pk=exclude_pk)
    if taken.exists():
        raise _error(_("A model with this name is already in the catalogue."), "name")
    return name


def _text_clean(value: str, *, field: str, max_length: int, required: bool = True) -> str:
    value = (value or "").strip()
    if required and not value:
        raise _error(_("This field is required."), field)
    if len(value) > max_length:
        raise _error(
            _("At most %(n)d characters.") % {"n": max_length},
            field,
        )
    if "\x00" in value:
        raise _error(_("This text contains a character that cannot be stored."), field)
    return value


def _weights_clean(weights_path: str) -> str:
    weights_path = (weights_path or "").strip()
    message = _(
        "The weights must be a file or folder inside the model store, written as a path "
        "relative to it (for example qalam/7b-q4.gguf)."
    )
    if not re.match(WEIGHTS_PATH_REGEX, weights_path):
        raise _error(message, "weights_path")
    try:
        resolved = weights_resolve(weights_path=weights_path)
    except ValueError:
        raise _error(message, "weights_path") from None
    if not resolved.exists():
        raise _error(
            _("There is nothing at %(path)s in the model store. Copy the weights there first.")
            % {"path": weights_path},
            "weights_path",
        )
    return weights_path


def _price_clean(value: Any, *, field: str) -> Decimal:
    try:
        price = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise _error(_("Enter a price such as 0.125."), field) from None
    if not price.is_finite():
        raise _error(_("Enter a price such as 0.125."), field)
    if price < 0:
        raise _error(_("A price cannot be negative."), field)
    if price > MAX_PRICE:
        raise _error(_("This price is too large."), field)
    if price != price.quantize(Decimal("0.001")):
        raise _error(_("Prices have at most three decimals."), field)
    return price.quantize(Decimal("0.001"))


def _context_length_clean(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(_("Enter a whole number of tokens."), "context_length")
    if not MIN_CONTEXT_LENGTH <= value <= MAX_CONTEXT_LENGTH:
        raise _error(
            _("The context length is between %(low)d and %(high)d tokens.")
            % {"low": MIN_CONTEXT_LENGTH, "high": MAX_CONTEXT_LENGTH},
            "context_length",
        )
    return value


def _languages_clean(languages: Any) -> list[str]:
    if isinstance(languages, str) or not isinstance(languages, list | tuple):
        raise _error(_("Give the languages as a list of codes."), "languages")
    cleaned: list[str] = []
    for code in languages:
        code = str(code).strip()
        if not re.match(LANGUAGE_CODE_REGEX, code):
            raise _error(
                _("%(code)s is not a language code such as en, ur or pa-Arab.")
                % {"code": code[:20]},
                "languages",
            )
        if code not in cleaned:
            cleaned.append(code)
    if not cleaned:
        raise _error(_("Give at least one language code, such as en or ur."), "languages")
    if len(cleaned) > MAX_LANGUAGES:
        raise _error(_("Too many languages."), "languages")
    return cleaned


def _visibility_clean(*, visibility: str, organisation, cohort) -> tuple[str, Any, Any]:
    """The visibility and the one holder it names; the other holder is dropped, never kept."""
    if visibility == ServedModel.Visibility.ALL:
        return visibility, None, None
    if visibility == ServedModel.Visibility.ORGANISATION:
        if organisation is None:
            raise _error(_("Choose the organisation that may call this model."), "organisation")
        return visibility, organisation, None
    if visibility == ServedModel.Visibility.COHORT:
        if cohort is None:
            raise _error(_("Choose the cohort that may call this model."), "cohort")
        return visibility, None, cohort
    raise _error(_("Choose who may call this model."), "visibility")


def _choice_clean(value: str, choices, *, field: str) -> str:
    if value not in choices.values:
        raise _error(_("Choose one of the options."), field)
    return value


def _fields_clean(*, task: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The updatable fields, validated; `fields` holds all of them."""
    cleaned = {
        "display_name": _text_clean(fields["display_name"], field="display_name", max_length=200),
        "description": _text_clean(
            fields.get("description") or "", field="description", max_length=5000, required=False
        ),
        "weights_path": _weights_clean(fields["weights_path"]),
        "licence": _text_clean(fields["licence"], field="licence", max_length=200),
        "context_length": _context_length_clean(fields["context_length"]),
        "languages": _languages_clean(fields.get("languages") or []),
        "input_price": _price_clean(fields["input_price"], field="input_price"),
        "output_price": _price_clean(fields.get("output_price", 0), field="output_price"),
    }
    if task == ServedModel.Task.EMBEDDING and cleaned["output_price"] != 0:
        raise _error(
            _("An embedding model has input tokens only: no output price."), "output_price"
        )
    (
        cleaned["visibility"],
        cleaned["organisation"],
        cleaned["cohort"],
    ) = _visibility_clean(
        visibility=fields.get("visibility") or ServedModel.Visibility.ALL,
        organisation=fields.get("organisation"),
        cohort=fields.get("cohort"),
    )
    return cleaned


def _audit_value(value: Any) -> Any:
    """A field's value as the audit log keeps it (JSON): holders by public id, prices as text."""
    if value is None or isinstance(value, bool | int | str | list):
        return value
    if isinstance(value, Decimal):
        return str(value)
    public_id = getattr(value, "public_id", None)
    return str(public_id) if public_id is not None else str(value)


def _save(model: ServedModel) -> ServedModel:
    """Save, letting the database's own constraints have the last word: a name taken (in any
    case) by a request that committed between our check and this insert, say. Field rules are
    checked here first; constraints only by the database, so a race ends in its error."""
    try:
        model.full_clean(exclude=["created_by", "weights_sha256"], validate_constraints=False)
        with transaction.atomic():
            model.save()
    except ValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        raise _error(messages[0], field if field != "__all__" else None) from None
    except IntegrityError as error:
        diag = getattr(error.__cause__, "diag", None)
        constraint = getattr(diag, "constraint_name", None) or ""
        text = str(error)
        if (
            constraint.startswith("llm_catalogue_servedmodel_name")  # the column's own
            or constraint == "llm_model_name_unique_any_case"
            or "llm_model_name_unique_any_case" in text
            or "servedmodel.name" in text  # SQLite says it so
        ):
            raise _error(_("A model with this name is already in the catalogue."), "name") from None
        raise ApplicationError(_("The catalogue cannot hold this model as it is.")) from None
    return model


@transaction.atomic
def served_model_create(
    *,
    acting_user,
    name: str,
    display_name: str,
    task: str,
    engine: str,
    weights_path: str,
    licence: str,
    context_length: int,
    input_price: Decimal | str,
    output_price: Decimal | str = Decimal("0"),
    languages: list[str] | None = None,
    description: str = "",
    visibility: str = ServedModel.Visibility.ALL,
    organisation=None,
    cohort=None,
    ip: str | None = None,
) -> ServedModel:
    """A programme manager adds a model to the catalogue. It is offered at once to whom its
    visibility names, but no one can call it until it is deployed."""
    name = _name_clean(name)
    task = _choice_clean(task, ServedModel.Task, field="task")
    engine = _choice_clean(engine, ServedModel.Engine, field="engine")
    cleaned = _fields_clean(
        task=task,
        fields={
            "display_name": display_name,
            "description": description,
            "weights_path": weights_path,
            "licence": licence,
            "context_length": context_length,
            "languages": languages or [],
            "input_price": input_price,
            "output_price": output_price,
            "visibility": visibility,
            "organisation": organisation,
            "cohort": cohort,
        },
    )
    model = _save(
        ServedModel(name=name, task=task, engine=engine, created_by=acting_user, **cleaned)
    )
    audit_record(
        actor=acting_user,
        action=AuditAction.MODEL_CREATED,
        target=model,
        ip=ip,
        data={
            "name": model.name,
            "task": task,
            "engine": engine,
            **{field: _audit_value(value) for field, value in cleaned.items()},
        },
    )
    return model


@transaction.atomic
def served_model_update(
    *, model: ServedModel, acting_user, ip: str | None = None, **fields: Any
) -> ServedModel:
    """A programme manager changes a model: its description, weights, licence, context length,
    languages, prices or who may call it. Fields not given keep their values; a field that is
    not one of `UPDATABLE_FIELDS` (the name, the task, the engine) is refused. A new price
    applies to requests that start after it is saved (a running request's hold and cost use the
    model row it read). Only what changed is audited, as before → after."""
    unknown = sorted(set(fields) - set(UPDATABLE_FIELDS))
    if unknown:
        raise ApplicationError(
            _("These cannot be changed: %(fields)s.") % {"fields": ", ".join(unknown)},
            field=unknown[0],
        )
    locked = ServedModel.objects.select_for_update().get(pk=model.pk)
    current = {field: getattr(locked, field) for field in UPDATABLE_FIELDS}
    cleaned = _fields_clean(task=locked.task, fields={**current, **fields})
    changes = {
        field: {"before": _audit_value(current[field]), "after": _audit_value(value)}
        for field, value in cleaned.items()
        if _audit_value(current[field]) != _audit_value(value)
    }
    if not changes:
        return locked
    for field, value in cleaned.items():
        setattr(locked, field, value)
    _save(locked)
    audit_record(
        actor=acting_user, action=AuditAction.MODEL_UPDATED, target=locked, ip=ip, data=changes
    )
    model.refresh_from_db()
    return locked


@transaction.atomic
def served_model_withdraw(*, model: ServedModel, acting_user, ip: str | None = None) -> ServedModel:
    """Take a model out of the catalogue: no page lists it and the gateway answers
    `model_not_found` for it. Refused while it is deployed (stop the deployment first: its
    replicas would hold GPUs for a model no one may call). Requests already made keep it."""
    locked = ServedModel.objects.select_for_update().get(pk=model.pk)
    if not locked.is_active:
        raise ApplicationError(_("This model is already out of the catalogue."), code="conflict")
    if locked.deployments.filter(state="active").exists():
        raise ApplicationError(
            _("The model is deployed. Stop its deployment before taking it out of the catalogue."),
            code="conflict",
        )
    locked.is_active = False
    locked.save(update_fields=["is_active", "updated_at"])
    audit_record(actor=acting_user, action=AuditAction.MODEL_WITHDRAWN, target=locked, ip=ip)
    model.refresh_from_db()
    return locked


@transaction.atomic
def served_model_restore(*, model: ServedModel, acting_user, ip: str | None = None) -> ServedModel:
    """Offer a model taken out of the catalogue again, with the prices and visibility it had."""
    locked = ServedModel.objects.select_for_update().get(pk=model.pk)
    if locked.is_active:
        raise ApplicationError(_("This model is already in the catalogue."), code="conflict")
    locked.is_active = True
    locked.save(update_fields=["is_active", "updated_at"])
    audit_record(actor=acting_user, action=AuditAction.MODEL_RESTORED, target=locked, ip=ip)
    model.refresh_from_db()
    return locked
