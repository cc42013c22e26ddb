"""Programme reports: the page, its CSV and XLSX exports, and the printable monthly report.

Thin: the form validates, the report selectors read, these render. The exports carry the same
rows and totals as the page, with exact credit-seconds beside the rounded GPU-hours and PKR.
The screen shows a page of rows at a time (the organisation report has one per organisation);
the exports write every row as it is read, the CSV streamed, so their time per row stays flat.
"""

import io
import itertools

from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from portal.core.spreadsheets import csv_response
from portal.credits.units import display_gpu_hours, display_pkr, month_parse

from ..access import programme_manager_required
from ..forms.reports import ReportForm
from ..selectors.monthly_report import monthly_report
from ..selectors.reports import (
    FIGURES,
    MEASURE_LABELS,
    ORGANISATION_PAGE_SIZE,
    Dimension,
    OrganisationPage,
    Report,
    ReportRow,
    organisation_rows,
    organisation_rows_all,
    report_build,
)

REPORT_PAGE_SIZE = ORGANISATION_PAGE_SIZE  # rows on screen; totals and exports cover every row
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _report_or_errors(request: HttpRequest, template: str = "dashboard/reports/index.html"):
    """(form, report), or (form, the 400 page with the form's errors) when the input is bad."""
    form = ReportForm.from_query(request.GET)
    if not form.is_valid():
        return form, render(request, template, {"form": form}, status=400)
    data = form.cleaned_data
    return form, report_build(
        dimension=data["dimension"], month_from=data["month_from"], month_to=data["month_to"]
    )


def _page_of(report: Report, number: int) -> OrganisationPage:
    """The rows on page `number`: organisations a page at a time from the database, then (on
    the last page) the students' row; other dimensions' few rows are all in the report."""
    if report.dimension == Dimension.ORGANISATION:
        page = organisation_rows(
            month_from=report.month_from,
            month_to=report.month_to,
            page=number,
            page_size=REPORT_PAGE_SIZE,
        )
        if page.has_next:
            return page
        return OrganisationPage(number, [*page.rows, *report.rows], False, page.first_index)
    offset = (number - 1) * REPORT_PAGE_SIZE
    return OrganisationPage(
        number,
        report.rows[offset : offset + REPORT_PAGE_SIZE],
        len(report.rows) > offset + REPORT_PAGE_SIZE,
        offset + 1,
    )


@programme_manager_required
def reports(request: HttpRequest) -> HttpResponse:
    form, report = _report_or_errors(request)
    if isinstance(report, HttpResponse):
        return report
    page = _page_of(report, form.cleaned_data.get("page") or 1)
    if page.number > 1 and not page.rows:
        form.add_error(None, _("This report has no page %(n)d.") % {"n": page.number})
        return render(request, "dashboard/reports/index.html", {"form": form}, status=400)
    return render(
        request,
        "dashboard/reports/index.html",
        {
            "form": form,
            "report": report,
            "page": page,
            "last_index": page.first_index + len(page.rows) - 1,
            "query": form.query(),
            "figure_labels": [MEASURE_LABELS[name] for name in FIGURES],
            "this_month": timezone.localdate().replace(day=1),
        },
    )


def _filename(report: Report, extension: str) -> str:
    return (
        f"programme-report-{report.dimension}-"
        f"{report.month_from:%Y-%m}-to-{report.month_to:%Y-%m}.{extension}"
    )


def _export_header() -> list[str]:
    header = ["dimension", "key", "name"]
    for name in FIGURES:
        header += [f"{name}_credit_seconds", f"{name}_gpu_hours", f"{name}_pkr"]
    return header


def _export_rows(report: Report):
    """Every row, then the totals row: (dimension, key, name, then per figure its exact
    credit-seconds, its GPU-hours and its PKR, both rounded to two places). The organisation
    report's rows are read from the database as they are written out."""
    rows = report.rows
    if report.dimension == Dimension.ORGANISATION:
        organisations = organisation_rows_all(
            month_from=report.month_from, month_to=report.month_to
        )
        rows = itertools.chain(organisations, report.rows)
    row: ReportRow
    for row in itertools.chain(rows, [report.total]):
        values = [report.dimension, row.key, row.label]
        for _name, amount in row.figures():
            values += [
                amount.credit_seconds,
                display_gpu_hours(amount.credit_seconds),
                display_pkr(amount.pkr),
            ]
        yield values


@programme_manager_required
def reports_export(request: HttpRequest, extension: str) -> HttpResponse:
    """The report as a file: `export.csv` or `export.xlsx`, with the same query as the page."""
    _form, report = _report_or_errors(request)
    if isinstance(report, HttpResponse):
        return report
    if extension == "xlsx":
        return _xlsx(report)
    return _csv(request, report)


def _csv(request: HttpRequest, report: Report) -> HttpResponse:
    return csv_response(
        itertools.chain([_export_header()], _export_rows(report)),
        filename=_filename(report, "csv"),
        request=request,
    )


def _xlsx(report: Report) -> HttpResponse:
    workbook = Workbook(write_only=True)
    workbook.properties.title = _filename(report, "xlsx")
    sheet = workbook.create_sheet(title=f"{report.month_from:%Y-%m} {report.month_to:%Y-%m}")
    sheet.append(_export_header())
    for values in _export_rows(report):
        cells = []
        for index, value in enumerate(values):
            cell = WriteOnlyCell(sheet, value=value)
            if isinstance(value, str):
                cell.data_type = "s"  # never a formula, whatever a name starts with
            elif index >= 3:
                figure_column = (index - 3) % 3
                cell.number_format = "0" if figure_column == 0 else "#,##0.00"
            cells.append(cell)
        sheet.append(cells)
    buffer = io.BytesIO()
    workbook.save(buffer)
    buffer.seek(0)
    return FileResponse(
        buffer, as_attachment=True, filename=_filename(report, "xlsx"), content_type=XLSX_TYPE
    )


@programme_manager_required
def report_monthly(request: HttpRequest, month: str) -> HttpResponse:
    first_day = month_parse(month)
    if first_day is None:
        raise Http404(_("No such month."))
    return render(
        request,
        "dashboard/reports/monthly.html",
        {
            "report": monthly_report(month=first_day),
            "generated_at": timezone.now(),
        },
    )
