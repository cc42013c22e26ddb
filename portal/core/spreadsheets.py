"""What every CSV export shares: cells a spreadsheet will not run as formulas, and a file-like
that lets csv.writer rows be streamed instead of written into one response."""

# A spreadsheet runs text that starts with one of these as a formula (CSV injection): such text
# is written with a leading apostrophe, which spreadsheets read as "this is text". A line break
# is among them: some spreadsheets drop a leading newline and read what follows as the cell.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value):
    """Text made safe to open in a spreadsheet; numbers (a negative amount is not a formula)
    and None pass as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class Echo:
    """A file-like that hands back what csv.writer writes, so rows can be streamed."""

    def write(self, value: str) -> str:
        return value
