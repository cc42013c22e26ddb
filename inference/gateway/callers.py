"""Who calls and what they call, resolved in one synchronous step (one thread hop from the
async views): the key or the signed-in person, the account that pays, the model they may see,
and its ready replicas.

Who pays and who sees what:
- an organisation's key: the organisation's account; models offered to all or to it;
- a person's own key: their own (student) account, never an organisation's they belong to;
  models offered to all or to their cohort;
- the playground: the signed-in person's own account, or an organisation's they name and
  belong to (then also that organisation's models).
"""

import datetime as dt
import hashlib
import time
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef
from django.utils import timezone

from inference.catalogue.models import ServedModel
from inference.deployments.selectors import ReplicaTarget, replicas_serving
from inference.usage.models import RequestLogPolicy
from inference.usage.selectors import account_for_key, account_for_user
from portal.apikeys.models import ApiKey
from portal.apikeys.services import (
    KeyRejected,
    apikey_authenticate,
    apikey_effective_scopes,
    apikey_use_due,
)
from portal.credits.models import CreditAccount
from portal.organisations.models import Organisation

from . import errors
from .limits import Holder

SCOPE = "models:invoke"


@dataclass
class Caller:
    api_key: ApiKey | None
    user: object | None  # the person calling (None for an organisation's key)
    organisation: Organisation | None  # the organisation paying, if one does
    account: object | None  # CreditAccount, or None when it was never opened
    holder: Holder
    keeps_content: bool  # the paying organisation opted in to request logging

    def models(self):
        return ServedModel.objects.visible_to(organisation=self.organisation, user=self.user)


def _keeps_content(organisation) -> bool:
    if organisation is None:
        return False
    return RequestLogPolicy.objects.filter(organisation=organisation, retention_days__gt=0).exists()


def _organisation_account(organisation):
    """An organisation's account (what `account_for_key` gives for its keys) and whether it
    opted in to request logging, in one query."""
    policy = RequestLogPolicy.objects.filter(
        organisation_id=OuterRef("organisation_id"), retention_days__gt=0
    )
    account = (
        CreditAccount.objects.filter(organisation=organisation)
        .annotate(keeps_content=Exists(policy))
        .first()
    )
    if account is None:
        return None, _keeps_content(organisation)
    return account, account.keeps_content


def caller_for_key(*, raw: str, ip: str | None) -> Caller:
    """The caller a bearer key stands for; GatewayError 401/403 otherwise."""
    try:
        key = apikey_authenticate(raw=raw, ip=ip)
    except KeyRejected as exc:
        raise errors.key_invalid() from exc
    if SCOPE not in apikey_effective_scopes(key):
        raise errors.scope_missing()
    organisation = key.organisation if key.organisation_id else None
    if organisation is not None:
        account, keeps_content = _organisation_account(organisation)
    else:  # a person's key pays from their own account, never an organisation's
        account, keeps_content = account_for_key(key), False
    return Caller(
        api_key=key,
        user=key.user if key.user_id else None,
        organisation=organisation,
        account=account,
        holder=Holder(key=key.key_id, organisation=str(organisation.pk) if organisation else None),
        keeps_content=keeps_content,
    )


def caller_for_person(*, user, organisation_public_id: str | None) -> Caller:
    """The playground's caller: the signed-in person, paying from their own account or from an
    organisation they name and belong to (any other is told apart from nothing: 404)."""
    organisation = None
    if organisation_public_id:
        try:
            organisation = (
                Organisation.objects.for_user(user).filter(public_id=organisation_public_id).first()
            )
        except (ValidationError, ValueError):  # not a UUID: no such organisation either
            organisation = None
        if organisation is None:
            raise errors.GatewayError(
                404, "No such organisation.", param="organisation", code="not_found"
            )
    return Caller(
        api_key=None,
        user=user,
        organisation=organisation,
        account=account_for_user(user, organisation=organisation),
        holder=Holder(
            key=f"user:{user.pk}", organisation=str(organisation.pk) if organisation else None
        ),
        keeps_content=_keeps_content(organisation),
    )


# Which model a name is for a caller, and its ready replicas, are read at most once per
# ROUTE_CACHE_SECONDS per process: a catalogue or health change reaches the gateway within that
# time, and a request spends two queries less. Keys and accounts are read on every request.
ROUTE_CACHE_SECONDS = 2.0
ROUTE_CACHE_MAX = 10_000
_routes: dict[tuple, tuple[float, ServedModel | None, list[ReplicaTarget]]] = {}


def _route(name: str, organisation, user) -> tuple[ServedModel | None, list[ReplicaTarget]]:
    key = (name, organisation.pk if organisation else None, user.pk if user else None)
    now = time.monotonic()
    cached = _routes.get(key)
    if cached is not None and cached[0] > now:
        return cached[1], cached[2]
    model = (
        ServedModel.objects.visible_to(organisation=organisation, user=user)
        .filter(name=name)
        .first()
    )
    targets = replicas_serving(model=model) if model is not None else []
    if len(_routes) >= ROUTE_CACHE_MAX:
        _routes.clear()
    _routes[key] = (now + ROUTE_CACHE_SECONDS, model, targets)
    return model, targets


def routes_forget() -> None:
    """Forget what was read (tests that change the catalogue between two requests)."""
    _routes.clear()


def model_for(*, caller: Caller, name: str, task: str) -> tuple[ServedModel, list[ReplicaTarget]]:
    """The model `name` as `caller` may call it for `task`, and its ready replicas. A model the
    caller may not see is answered exactly as one that does not exist."""
    model, targets = _route(name, caller.organisation, caller.user)
    return _model_checked(model, targets, name=name, task=task)


def _model_checked(model, targets, *, name: str, task: str):
    if model is None:
        raise errors.model_not_found(name)
    if model.task != task:
        raise errors.model_wrong_task(
            name, "chat or completions" if task == ServedModel.Task.CHAT else "embeddings"
        )
    return model, targets


def prepare_for_key(*, raw: str, ip: str | None, name: str, task: str, epoch=None):
    """The caller, the model and its replicas, read from the database; the caller is then
    remembered under `epoch` (the keys' generation read before this began) when given."""
    caller = caller_for_key(raw=raw, ip=ip)
    if epoch is not None:
        _caller_remember(raw, epoch, caller)
    model, targets = model_for(caller=caller, name=name, task=task)
    return caller, model, targets


# --- Callers remembered -------------------------------------------------------------------------
#
# Who a key is (its owner, the account that pays, whether content is kept) is remembered per
# process for at most CALLER_CACHE_SECONDS, and only while the keys' generation in Redis
# (portal.apikeys.keycache) is the one read before the database was: a revocation, a scope or
# membership change, a person or organisation deactivated, an account opened or a logging
# policy changed moves it on, and the very next request reads the database again. A key's
# expiry is checked on every use. Its last use is still written at most once a minute, off the
# request's path. Entries are found by the SHA-256 of the presented secret (only a key that
# passed `apikey_authenticate` is ever filed).
CALLER_CACHE_SECONDS = 15.0
CALLER_CACHE_MAX = 10_000


@dataclass
class _Remembered:
    epoch: bytes
    until: float  # time.monotonic()
    caller: Caller
    expires_at: dt.datetime
    last_used_at: dt.datetime | None


_callers: dict[bytes, _Remembered] = {}


def _fingerprint(raw: str) -> bytes:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).digest()


def _caller_remember(raw: str, epoch: bytes, caller: Caller) -> None:
    key = caller.api_key
    if len(_callers) >= CALLER_CACHE_MAX:
        _callers.clear()
    _callers[_fingerprint(raw)] = _Remembered(
        epoch=epoch,
        until=time.monotonic() + CALLER_CACHE_SECONDS,
        caller=caller,
        expires_at=key.expires_at,
        # apikey_authenticate has just written it if it was due
        last_used_at=timezone.now()
        if apikey_use_due(last_used_at=key.last_used_at, now=timezone.now())
        else key.last_used_at,
    )


def caller_known(*, raw: str, epoch: bytes | None) -> tuple[Caller | None, bool]:
    """(the caller remembered for this secret under the current generation, or None; whether
    its last use is due to be written now). No database."""
    if epoch is None:
        return None, False
    fingerprint = _fingerprint(raw)
    known = _callers.get(fingerprint)
    if known is None:
        return None, False
    now = timezone.now()
    if known.epoch != epoch or known.until <= time.monotonic() or known.expires_at <= now:
        _callers.pop(fingerprint, None)
        return None, False
    due = apikey_use_due(last_used_at=known.last_used_at, now=now)
    if due:
        known.last_used_at = now
    return known.caller, due


def model_known(*, caller: Caller, name: str, task: str):
    """`model_for` from the route cache alone: (model, targets), or None when it must read the
    database."""
    key = (name, caller.organisation.pk if caller.organisation else None,
           caller.user.pk if caller.user else None)  # fmt: skip
    cached = _routes.get(key)
    if cached is None or cached[0] <= time.monotonic():
        return None
    return _model_checked(cached[1], cached[2], name=name, task=task)


def callers_forget() -> None:
    """Forget the callers remembered (tests)."""
    _callers.clear()


def prepare_for_person(*, user, organisation_public_id: str | None, name: str, task: str):
    caller = caller_for_person(user=user, organisation_public_id=organisation_public_id)
    model, targets = model_for(caller=caller, name=name, task=task)
    return caller, model, targets


def models_for_key(*, raw: str, ip: str | None) -> list[ServedModel]:
    caller = caller_for_key(raw=raw, ip=ip)
    return list(caller.models().order_by("name"))
