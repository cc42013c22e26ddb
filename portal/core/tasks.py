"""Background jobs shared by every app."""

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail


@shared_task(
    name="core.mail_send",
    autoretry_for=(OSError,),
    retry_backoff=True,
    retry_kwargs={"max_retries": 8},
)
def mail_send(*, to: str, subject: str, body: str) -> None:
    """Deliver one message; SMTP hiccups are retried with backoff."""
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to])
