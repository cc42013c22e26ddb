"""What a usage transaction records about the time it charges: its `metadata` JSON, by name.

Metering writes it (sandboxes.metering, one per interval of a sandbox's run), and so does model
usage (inference.usage, one per posting of an account's model requests, with its breakdown by
model and key); statements group usage by sandbox and profile, and model usage by model and
key; the API shows the sandbox; metering's reconciliation sums the ledger by run. The ledger
itself adds `unpaid` when an account could not pay an interval in full (credits_post_usage, or
the one-by-one path).

Fields left None are not stored, so the JSON is exactly what was written before this class
existed, and rows written then read back the same. Every field may be missing from an old or a
hand-made row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from django.db.models.fields.json import KeyTextTransform


@dataclass(frozen=True)
class ChargeMetadata:
    sandbox: str | None = None  # the sandbox's public id
    sandbox_name: str | None = None  # its name when charged
    profile: str | None = None  # the resource profile's name
    run: str | None = None  # the run's public id
    interval_start: dt.datetime | None = None  # the start of the interval's slot on the grid
    milliseconds: int | None = None  # how long the resources were held in the interval
    due: int | None = None  # credit-seconds owed for it
    unpaid: int | None = None  # what the account could not pay of it (written by the ledger)
    # Model usage (inference.usage posts an account's finished model requests as one usage
    # transaction): the requests' priced cost in millionths of a credit-second, and its
    # breakdown, one item per model and key: {"model": name, "key": the key's public id or
    # null (the playground), "key_name", "requests", "prompt_tokens", "completion_tokens",
    # "microcredits"}. The ledger charges whole credit-seconds of the running total, so a
    # transaction's amount differs from its own priced cost by the fraction carried.
    model_microcredits: int | None = None
    model_usage: list[dict] | None = dataclasses.field(
        default=None, hash=False
    )  # a list: not hashable

    @property
    def is_model_usage(self) -> bool:
        return self.model_usage is not None

    def to_json(self) -> dict:
        data = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, dt.datetime):
                value = value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
            if value is not None:
                data[field.name] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> ChargeMetadata:
        """Read a stored row's metadata; keys this class does not name (another kind of
        transaction's) are left out."""
        values = {name: data[name] for name in FIELDS if data.get(name) is not None}
        if "interval_start" in values:
            values["interval_start"] = dt.datetime.fromisoformat(values["interval_start"])
        return cls(**values)


FIELDS = frozenset(field.name for field in dataclasses.fields(ChargeMetadata))


def charge_metadata_text(name: str, *, of: str = "transaction__metadata") -> KeyTextTransform:
    """One field of the metadata as text, read in the database (`of` is the path to the
    metadata column from the queryset's model)."""
    if name not in FIELDS:
        raise ValueError(f"ChargeMetadata has no field {name!r}")
    return KeyTextTransform(name, of)
