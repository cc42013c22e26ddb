"""Abstract bases shared by every app: timestamps, a public UUID for URLs and APIs, and tables
that are only ever appended to."""

import uuid

from django.db import models


class TimeStampedModel(models.Model):
    """Creation and last-change times, set by the database layer, never by hand."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class PublicIdModel(TimeStampedModel):
    """A model whose rows are named outside the database by a UUID, never by the integer key."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    class Meta:
        abstract = True


class AppendOnlyError(Exception):
    """Raised when code tries to change or remove a row of an append-only table."""


class AppendOnlyModel(models.Model):
    """A table whose rows are only ever inserted (the audit log, the ledger).

    `save()` refuses a row that is already stored and `delete()` refuses always, so code learns
    at once; the database refuses too, with the trigger each such table's migration installs
    (`core.migration_ops.AppendOnly`), which also stops `QuerySet.update()` and `.delete()` and
    hand-written SQL, none of which pass through these methods.
    """

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding or self.pk is not None:
            raise AppendOnlyError(f"{self._meta.label} rows are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{self._meta.label} rows are append-only.")
