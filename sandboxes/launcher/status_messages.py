"""The portal's own sandbox status messages, kept as a code with parameters and put into words
when they are read, in the reader's language.

A status message is written by whoever changes the sandbox (a Celery worker, which speaks
English; a programme manager, who may speak Urdu) and read later by its owner, in theirs. So the
writers store a `StatusNote`: one of the codes below with its parameters (`Sandbox.status_code`,
`status_params`), and an English rendering in `Sandbox.status_message` for logs, the admin and
the audit. Free text that has no code (the hub's own progress and failure texts, which the
portal cannot translate) is kept as it is, in `status_message` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

STATUS_MESSAGE_MAX_LENGTH = 500

MESSAGES = {
    "queued": _("Waiting for a free GPU."),
    "queued_over_cap": _("Waiting: %(who)s already holds its maximum of %(cap)s GPUs."),
    # A student (their own holder): "you" would not agree with "holds its".
    "queued_over_own_cap": _("Waiting: you already hold your maximum of %(cap)s GPUs."),
    "starting": _("Starting…"),
    "starting_gpu_free": _("A GPU is free: starting…"),
    "ready": _("Ready."),
    "stopping": _("Stopping…"),
    "stopped": _("Stopped."),
    "left_queue": _("Left the queue."),
    "server_stopped": _("The notebook server stopped."),
    "server_stopped_outside": _("The notebook server stopped outside the portal."),
    "server_failed": _("The notebook server failed."),
    "server_not_ready": _("The notebook server did not become ready."),
    "hub_unavailable": _("The notebook service is unavailable; try again."),
    "hub_refused": _("The notebook service refused: %(e)s"),
    "container_gone": _("The sandbox's container is gone."),
    "start_lost": _("The start was lost; launch it again."),
    "max_age": _(
        "Stopped: this sandbox reached the maximum age of its profile (%(age)s). Your files "
        "are kept; start it again to continue."
    ),
    "out_of_credits": _("The GPU credits ran out."),
    "left_organisation": _(
        "Stopped: you no longer belong to %(organisation)s. Your files are kept."
    ),
    "suspended": _("Suspended by the programme"),
}


def age_label(seconds: int) -> str:
    """A maximum age for people to read: whole hours, else minutes."""
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return ngettext("%(n)s hour", "%(n)s hours", hours) % {"n": hours}
    minutes = max(1, seconds // 60)
    return ngettext("%(n)s minute", "%(n)s minutes", minutes) % {"n": minutes}


# Parameters that are themselves words are stored as facts (a number of seconds, a name or
# nothing) and put into words with the message, in the same language.
_WORDS: dict[str, Callable[[dict], dict]] = {
    "queued_over_cap": lambda params: {
        "who": params.get("organisation") or gettext("you"),
        "cap": params["cap"],
    },
    "max_age": lambda params: {"age": age_label(params["max_age_seconds"])},
}


def status_render(code: str, params: dict | None) -> str | None:
    """The message `code` with `params`, in the current language; None for an empty or unknown
    code, or parameters that do not fit it (the caller falls back to the stored English)."""
    text = MESSAGES.get(code or "")
    if text is None:
        return None
    params = params or {}
    try:
        words = _WORDS[code](params) if code in _WORDS else params
        return str(text) % words if words else str(text)
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class StatusNote:
    """What a sandbox's status message says: one of the portal's own messages (`code`, with
    `params`), or free `text` with no code (the hub's words)."""

    code: str = ""
    params: dict = field(default_factory=dict)
    text: str = ""

    def __post_init__(self):
        if self.code and self.code not in MESSAGES:
            raise ValueError(f"no sandbox status message {self.code!r}")

    def render(self) -> str:
        """In the current language."""
        rendered = status_render(self.code, self.params)
        return (self.text if rendered is None else rendered)[:STATUS_MESSAGE_MAX_LENGTH]

    @property
    def english(self) -> str:
        """In the portal's own language (English), as `Sandbox.status_message` keeps it."""
        with translation.override(settings.LANGUAGE_CODE):
            return self.render()

    def as_value(self) -> dict | str:
        """What a Celery task's arguments can carry (JSON): see `from_value`."""
        return {"code": self.code, "params": self.params} if self.code else self.text

    @classmethod
    def from_value(cls, value: StatusNote | dict | str | None) -> StatusNote:
        """A note from what a caller or a task's arguments give: a note, `as_value`'s dict, or
        free text (also what tasks queued before the codes carried)."""
        if isinstance(value, StatusNote):
            return value
        if isinstance(value, dict) and value.get("code") in MESSAGES:
            return cls(code=value["code"], params=dict(value.get("params") or {}))
        return cls(text=str(value or ""))

    def __bool__(self) -> bool:
        return bool(self.code or self.text)


def note(code: str, **params) -> StatusNote:
    """One of the portal's own status messages, with its parameters (plain JSON values)."""
    return StatusNote(code=code, params=params)
