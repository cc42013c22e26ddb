"""What every CSV export shares: cells a spreadsheet will not run as formulas, and one way to
answer with a CSV file, whole or streamed."""

import csv
import itertools
from collections.abc import Iterable, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

# A spreadsheet runs text that starts with one of these as a formula (CSV injection): such text
# is written with a leading apostrophe, which spreadsheets read as "this is text". A line break
# is among them: some spreadsheets drop a leading newline and read what follows as the cell.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
STREAM_CHUNK_ROWS = 500


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


def csv_lines(rows: Iterable[Iterable]) -> Iterator[str]:
    """Each row as a line of CSV, every cell through the formula guard (`csv_cell`)."""
    writer = csv.writer(Echo())
    for row in rows:
        yield writer.writerow([csv_cell(value) for value in row])


def _chunk(lines: Iterator[str]) -> str:
    return "".join(itertools.islice(lines, STREAM_CHUNK_ROWS))


async def _chunks_async(lines: Iterator[str]):
    """The same lines for the ASGI server: Django would read a plain iterator into a list before
    sending a byte, so each chunk is read (from the database cursor, say) in the request's own
    sync thread and sent before the next is read."""
    while chunk := await sync_to_async(_chunk)(lines):
        yield chunk


def csv_response(
    rows: Iterable[Iterable], *, filename: str, request: HttpRequest | None = None
) -> HttpResponse:
    """A CSV file to download: `rows` (the header first), every cell through the formula guard.

    Given the request, the rows are streamed as they are produced, so an export read from a
    database cursor is never held whole (under ASGI, chunk by chunk: see `_chunks_async`).
    Without it, the file is written whole into the response: for a small file, a statement."""
    lines = csv_lines(rows)
    if request is None:
        response = HttpResponse("".join(lines), content_type=CSV_CONTENT_TYPE)
    else:
        if isinstance(request, ASGIRequest):
            lines = _chunks_async(lines)
        response = StreamingHttpResponse(lines, content_type=CSV_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
