"""The programme pages' filtered lists: one way to read a filter form, paginate and link on."""

from django.core.paginator import Paginator
from django.http import HttpRequest


def filtered_page(request: HttpRequest, form, queryset_for, page_size: int) -> tuple[dict, int]:
    """A filtered, paginated list: (context with the form, the page and the query string without
    the page, for the pagination links; the status to answer). An invalid filter shows
    everything, with the form's errors, answered 400. `queryset_for` gets the cleaned filters."""
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    page = Paginator(queryset_for(filters), page_size).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    status = 400 if form.is_bound and form.errors else 200
    return {"form": form, "page": page, "query": query.urlencode()}, status
