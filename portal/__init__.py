"""The national AI cloud portal: people, organisations and money."""

from .celery import app as celery_app

__all__ = ["celery_app"]
