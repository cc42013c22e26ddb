"""Calendar bounds the portal's data lives within."""

# Nothing in the books lies outside these years, and dates at the ends of the calendar overflow
# when moved between time zones (Python and DRF both raise): inputs outside them are refused.
YEARS = (2000, 2999)
