"""Pakistani company identifiers: SECP registration number (CUIN) and FBR NTN.

Both are normalised to one canonical spelling before they are stored, so that "CUIN-0123456",
"0123456" and " 0123456 " are recognised as the same company.
"""

import re

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

_SECP = re.compile(r"^(?:CUIN[\s-]*)?(\d{7})$", re.IGNORECASE)
_NTN = re.compile(r"^(\d{7})-?(\d)$")


def secp_registration_number_normalise(value: str) -> str:
    """Return the 7-digit CUIN, or raise ValidationError with a message a founder can act on."""
    match = _SECP.match((value or "").strip())
    if not match:
        raise ValidationError(
            _(
                "Enter the 7-digit company registration number (CUIN) from your SECP certificate "
                "of incorporation, for example 0123456 or CUIN-0123456."
            ),
            code="invalid_secp",
        )
    return match.group(1)


def ntn_normalise(value: str) -> str:
    """Return the NTN as 1234567-8, or raise ValidationError."""
    match = _NTN.match((value or "").strip())
    if not match:
        raise ValidationError(
            _("Enter the NTN as seven digits, a dash and a check digit, for example 1234567-8."),
            code="invalid_ntn",
        )
    return f"{match.group(1)}-{match.group(2)}"
