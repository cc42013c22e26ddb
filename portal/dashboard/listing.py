"""The programme pages' filtered lists: one way to read a filter form, paginate and link on."""

from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.http import HttpRequest
from django.utils.translation import gettext as _


def filtered_page(request: HttpRequest, form, queryset_for, page_size: int) -> tuple[dict, int]:
    """A filtered, paginated list: (context with the form, the page, the query string without
    the page for the pagination links, and `page_error`; the status to answer). An invalid
    filter shows everything, with the form's errors, answered 400; so is a page that is not a
    whole number from 1 or past the last one (the first page is shown, with `page_error`).
    `queryset_for` gets the cleaned filters."""
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    paginator = Paginator(queryset_for(filters), page_size)
    asked, page_error = request.GET.get("page") or "1", ""
    try:
        page = paginator.page(asked)
    except PageNotAnInteger:
        page, page_error = paginator.page(1), _("A page is a whole number from 1.")
    except EmptyPage:
        page = paginator.page(1)
        page_error = _("There is no page %(asked)s: the list has %(pages)d.") % {
            "asked": asked,
            "pages": paginator.num_pages,
        }
    query = request.GET.copy()
    query.pop("page", None)
    status = 400 if (form.is_bound and form.errors) or page_error else 200
    context = {"form": form, "page": page, "query": query.urlencode(), "page_error": page_error}
    return context, status
