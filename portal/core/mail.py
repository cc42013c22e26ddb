"""Outgoing e-mail: rendered in the recipient's language, sent by Celery after commit."""

from django.db import transaction
from django.template.loader import render_to_string
from django.utils import translation

from .tasks import mail_send


def mail_render(*, template: str, context: dict, language: str | None = None) -> tuple[str, str]:
    """Render `<template>_subject.txt` and `<template>_message.txt` in `language`."""
    with translation.override(language or translation.get_language()):
        subject = render_to_string(f"{template}_subject.txt", context).strip()
        body = render_to_string(f"{template}_message.txt", context)
    return " ".join(subject.splitlines()), body


def mail_send_after_commit(
    *, template: str, to: str, context: dict, language: str | None = None
) -> None:
    """Queue the message once the surrounding transaction commits; nothing goes out on rollback."""
    subject, body = mail_render(template=template, context=context, language=language)
    transaction.on_commit(lambda: mail_send.delay(to=to, subject=subject, body=body))
