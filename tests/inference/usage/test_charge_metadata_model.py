"""Model usage in a usage transaction's metadata: written and read back by name; rows written
before (a sandbox's interval) read back exactly as they did."""

from portal.credits.charge_metadata import ChargeMetadata

SANDBOX_ROW = {"sandbox": "1b7f8a52", "profile": "gpu-1", "due": 60, "unpaid": 4}
MODEL_ROW = {
    "due": 3,
    "model_microcredits": 2_398_500,
    "model_usage": [
        {
            "model": "tiny-chat",
            "key": "5f1c2b1e-1111-4a2b-9c3d-000000000001",
            "key_name": "ci",
            "requests": 2,
            "prompt_tokens": 1200,
            "completion_tokens": 266,
            "microcredits": 2_398_500,
        }
    ],
}


def test_a_sandbox_row_reads_back_the_same_and_is_not_model_usage():
    metadata = ChargeMetadata.from_json(SANDBOX_ROW)
    assert metadata.to_json() == SANDBOX_ROW
    assert metadata.is_model_usage is False
    assert metadata.model_usage is None


def test_a_model_usage_row_reads_back_the_same():
    metadata = ChargeMetadata.from_json(MODEL_ROW)
    assert metadata.is_model_usage is True
    assert metadata.model_microcredits == 2_398_500
    assert metadata.to_json() == MODEL_ROW
    assert metadata.sandbox is None


def test_the_ledger_adds_unpaid_to_a_model_row_as_to_any():
    row = {**MODEL_ROW, "unpaid": 2}
    assert ChargeMetadata.from_json(row).unpaid == 2
    assert ChargeMetadata.from_json(row).to_json() == row
