import pytest
from django.core.exceptions import ValidationError

from portal.organisations.validators import ntn_normalise, secp_registration_number_normalise


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0123456", "0123456"),
        ("CUIN-0123456", "0123456"),
        ("cuin 0123456", "0123456"),
        ("  0123456 ", "0123456"),
    ],
)
def test_secp_number_accepts_the_spellings_on_certificates(raw, expected):
    assert secp_registration_number_normalise(raw) == expected


@pytest.mark.parametrize("raw", ["", "12AB", "123456", "12345678", "CUIN-", "0123456-7", "O123456"])
def test_secp_number_rejects_malformed_values_with_a_clear_message(raw):
    with pytest.raises(ValidationError) as excinfo:
        secp_registration_number_normalise(raw)
    assert "7-digit" in excinfo.value.messages[0]


@pytest.mark.parametrize(
    ("raw", "expected"), [("1234567-8", "1234567-8"), ("12345678", "1234567-8")]
)
def test_ntn_is_stored_in_one_spelling(raw, expected):
    assert ntn_normalise(raw) == expected


@pytest.mark.parametrize("raw", ["1234567", "123456-78", "ABCDEFG-1", "1234567-89"])
def test_ntn_rejects_malformed_values(raw):
    with pytest.raises(ValidationError):
        ntn_normalise(raw)
