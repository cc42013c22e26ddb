"""A usage charge's metadata, by name: stored exactly as metering stored it before it had a type."""

import datetime as dt
import zoneinfo

import pytest

from portal.credits.charge_metadata import ChargeMetadata, charge_metadata_text

# A row as metering wrote it before ChargeMetadata existed (keys in the order it wrote them).
STORED = {
    "sandbox": "1b7f8a52-6a0e-4bd1-8d4c-2f52f0a1c9d3",
    "sandbox_name": "whisper-urdu",
    "profile": "gpu-1",
    "run": "0c2e4d1b-9a3f-4c6e-b1d2-7e8f9a0b1c2d",
    "interval_start": "2026-11-03T10:05:00Z",
    "milliseconds": 60000,
    "due": 1200,
}
CHARGE = ChargeMetadata(
    sandbox=STORED["sandbox"],
    sandbox_name="whisper-urdu",
    profile="gpu-1",
    run=STORED["run"],
    interval_start=dt.datetime(2026, 11, 3, 15, 5, tzinfo=zoneinfo.ZoneInfo("Asia/Karachi")),
    milliseconds=60000,
    due=1200,
)


def test_a_charge_is_stored_as_metering_stored_it_before():
    assert list(CHARGE.to_json().items()) == list(STORED.items())


def test_a_stored_charge_reads_back_as_it_was_written():
    assert ChargeMetadata.from_json(STORED) == CHARGE
    assert ChargeMetadata.from_json({**STORED, "unpaid": 24}).unpaid == 24
    assert ChargeMetadata.from_json({**STORED, "unpaid": 24}).to_json() == {**STORED, "unpaid": 24}


def test_what_is_not_known_is_not_stored_and_other_metadata_reads_as_empty():
    assert ChargeMetadata(sandbox="t").to_json() == {"sandbox": "t"}
    assert ChargeMetadata.from_json({"grant": "9d3c"}) == ChargeMetadata()
    assert ChargeMetadata.from_json({}).to_json() == {}


def test_a_database_read_names_a_field_of_the_metadata():
    assert charge_metadata_text("sandbox_name").key_name == "sandbox_name"
    with pytest.raises(ValueError, match="no field"):
        charge_metadata_text("sandbox_id")
