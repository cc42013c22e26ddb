"""Leaving stops what you run: what a removal from an organisation, a suspension or a sign-out
does to a person's sandboxes and to their hub session.

- A person removed from an organisation (or whose new role no longer lets them run on its
  account) has their live sandboxes billed to that organisation stopped, through the launcher
  (`sandboxes_stop_live`); their home volume stays, and their student sandboxes or other
  organisations' are not touched.
- Their hub session ends: the hub's OIDC tokens are revoked at once (in the caller's
  transaction), and after the commit a Celery task deletes their hub tokens and, when nothing
  of theirs runs, their hub user, which is what voids the hub's login cookie (see
  `hub_client`: JupyterHub 6 has no other way to end it). The portal re-creates the hub user at
  their next launch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.organisations.models import Organisation
from portal.users.models import User
from portal.users.oidc import hub_oidc_tokens_revoke
from sandboxes.jobs import enqueue_after_commit

from .models import Sandbox
from .services import sandboxes_stop_live
from .status_messages import note

logger = logging.getLogger(__name__)
Status = Sandbox.Status


def organisation_sandboxes_enforce(
    *, user: User, organisation: Organisation, acting_user, ip: str | None = None
) -> list[str]:
    """Stop the person's live sandboxes on `organisation`'s account unless they may still run
    on it (the rule `holder_for` applies at launch: any member may). Call it in the transaction
    that removed or changed the membership. Returns the public ids of those asked to stop.

    The person's row is locked first, as launches lock it: a launch that raced the change
    either committed first (and its sandbox is stopped here) or waits, then re-checks the
    membership under the same lock (`entitlement.launch_check`) and is refused.
    """
    User.objects.select_for_update(no_key=True).filter(pk=user.pk).first()
    if Organisation.objects.for_user(user).filter(pk=organisation.pk).exists():
        return []
    stopped = sandboxes_stop_live(
        sandboxes=Sandbox.objects.filter(user=user, organisation=organisation),
        acting_user=acting_user,
        reason=note("left_organisation", organisation=str(organisation)),
        ip=ip,
    )
    return [str(sandbox.public_id) for sandbox in stopped]


def hub_sessions_end(*, user_ids, reason: str) -> None:
    """End these people's hub sessions: revoke the hub's OIDC tokens now, and after the commit
    ask Celery to revoke their hub tokens and end their hub login (`hub_session_end`). Only
    people who ever had a sandbox have a hub user (the portal creates it at the first start),
    so nobody else costs a task."""
    user_ids = sorted(set(user_ids))
    hub_oidc_tokens_revoke(user_ids=user_ids)
    with_hub_user = list(
        Sandbox.objects.filter(user_id__in=user_ids)
        .order_by("user_id")
        .values_list("user_id", flat=True)
        .distinct()
    )
    for user_id in with_hub_user:
        enqueue_after_commit("launcher.hub_session_end", user_id, reason=reason)


@dataclass(frozen=True)
class HubSessionEnded:
    """What `hub_session_end` did. `pending`: a sandbox of theirs is still stopping, so the hub
    user cannot be deleted yet (try again shortly)."""

    tokens_revoked: int = 0
    hub_user_deleted: bool = False
    pending: bool = False
    servers_running: bool = False


def hub_session_end(*, user_id: int, reason: str = "") -> HubSessionEnded:
    """Revoke the person's hub tokens, then delete their hub user when nothing of theirs is live,
    which voids the hub's login cookie at once. Idempotent. Raises HubError when the hub fails.

    While a sandbox of theirs runs, the hub user stays (deleting it would need the servers
    stopped): their notebook sessions still lose their tokens, and the hub's login cookie ends
    at the hub's next auth refresh, because the OIDC tokens behind it were revoked. The
    person's row is locked from the check to the deletion, so a launch (which locks it too)
    cannot start a server on the user being deleted; its start re-creates the hub user.
    """
    # Looked up when called, not bound at import: tests put a fake hub in hub_client's place.
    from .hub_client import hub_client  # noqa: PLC0415 - looked up at call time

    user = User.objects.filter(pk=user_id).first()
    if user is None:
        return HubSessionEnded()
    name = user.hub_username
    with hub_client() as hub:
        tokens = hub.user_tokens_revoke(name)
        with transaction.atomic():
            User.objects.select_for_update(no_key=True).filter(pk=user.pk).first()
            live = set(
                Sandbox.objects.filter(user=user, status__in=Sandbox.LIVE).values_list(
                    "status", flat=True
                )
            )
            servers = [] if live - {Status.STOPPING} else list(hub.user_servers(name).values())
            if not (live - {Status.STOPPING}) and (
                live or any(server.pending == "stop" for server in servers)
            ):
                # Only stopping ones (a suspension or removal stops them just before this):
                # deleting the user must wait until the hub lets go of them.
                return HubSessionEnded(tokens_revoked=tokens, pending=True)
            if live or servers:
                outcome = HubSessionEnded(tokens_revoked=tokens, servers_running=True)
            else:
                deleted = hub.user_delete(name)
                outcome = HubSessionEnded(tokens_revoked=tokens, hub_user_deleted=deleted)
            audit_record(
                actor=None,
                action=AuditAction.HUB_SESSION_ENDED,
                target=user,
                data={
                    "reason": reason,
                    "tokens_revoked": tokens,
                    "hub_user_deleted": outcome.hub_user_deleted,
                    "servers_running": outcome.servers_running,
                },
            )
    return outcome
