"""Every view under api/v1/ declares the scopes it needs, from the known list, for every method
it implements, and is guarded by HasScopes."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

from portal.apikeys.permissions import HasScopes
from portal.apikeys.scopes import ALL_SCOPES

NAMESPACE = "api-v1"
FRAMEWORK_METHODS = {"options", "head"}  # answered by Django and DRF themselves


def _walk(patterns, namespaces=(), prefix=""):
    """(route, namespaces, URLPattern) for every pattern, recursing into includes."""
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = (*namespaces, entry.namespace) if entry.namespace else namespaces
            yield from _walk(entry.url_patterns, inner, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), namespaces, entry


def api_v1_views() -> list[tuple[str, type]]:
    found = []
    for route, namespaces, pattern in _walk(get_resolver().url_patterns):
        if NAMESPACE in namespaces:
            view_class = getattr(pattern.callback, "view_class", None) or getattr(
                pattern.callback, "cls", None
            )
            found.append((route, view_class or pattern.callback))
    return found


def implemented_methods(view_class) -> set[str]:
    return {
        name.upper()
        for name in view_class.http_method_names
        if name not in FRAMEWORK_METHODS and callable(getattr(view_class, name, None))
    }


def problems_of(view_class) -> list[str]:
    """What is wrong with one view's scope declaration (empty: nothing)."""
    name = getattr(view_class, "__name__", repr(view_class))
    if not (isinstance(view_class, type) and issubclass(view_class, APIView)):
        return [f"{name} is not a DRF APIView, so HasScopes never runs on it"]
    problems = []
    if not any(
        isinstance(p, type) and issubclass(p, HasScopes) for p in view_class.permission_classes
    ):
        problems.append(f"{name}.permission_classes does not include HasScopes")
    declared = getattr(view_class, "required_scopes", None)
    methods = implemented_methods(view_class)
    if declared is None:
        return [*problems, f"{name} lacks required_scopes"]
    if isinstance(declared, dict):
        per_method = {str(m).upper(): scopes for m, scopes in declared.items()}
        for method in sorted(methods):
            if method not in per_method and "*" not in per_method:
                problems.append(f"{name}.required_scopes misses {method}, which it implements")
        lists = per_method.items()
    elif isinstance(declared, list | tuple | set | frozenset):
        lists = [("*", declared)]
    else:
        return [*problems, f"{name}.required_scopes is a {type(declared).__name__}"]
    for method, scopes in lists:
        if isinstance(scopes, str) or not isinstance(scopes, list | tuple | set | frozenset):
            problems.append(f"{name}.required_scopes[{method}] is not a list of scopes")
            continue
        unknown = sorted(set(scopes) - ALL_SCOPES)
        if unknown:
            problems.append(f"{name}.required_scopes[{method}] has unknown scopes {unknown}")
    return problems


def test_the_walk_finds_the_api():
    routes = {route for route, _ in api_v1_views()}
    assert len(routes) >= 9, routes
    assert "api/v1/me" in routes
    assert "api/v1/credit-applications/<uuid:public_id>/approve" in routes


@pytest.mark.parametrize(("route", "view_class"), api_v1_views(), ids=lambda v: str(v))
def test_view_declares_known_scopes_for_each_method(route, view_class):
    assert problems_of(view_class) == [], route


# --- The checker itself catches what it must ------------------------------------------------


class _Ok(APIView):
    required_scopes = {"GET": ["credits:read"], "POST": ["applications:write"]}

    def get(self, request): ...

    def post(self, request): ...


class _Missing(APIView):
    def get(self, request): ...


class _Unknown(APIView):
    required_scopes = ["credits:read", "credits:everything"]

    def get(self, request): ...


class _MethodMissing(APIView):
    required_scopes = {"GET": ["credits:read"]}

    def get(self, request): ...

    def delete(self, request): ...


class _ExplicitlyOpen(APIView):  # an explicit empty list is a declaration (a 404 catch-all)
    required_scopes = []

    def get(self, request): ...


class _Unguarded(APIView):
    required_scopes = ["credits:read"]
    permission_classes = []

    def get(self, request): ...


@pytest.mark.parametrize(
    ("view_class", "expected"),
    [
        (_Ok, None),
        (_ExplicitlyOpen, None),
        (_Missing, "lacks required_scopes"),
        (_Unknown, "unknown scopes ['credits:everything']"),
        (_MethodMissing, "misses DELETE"),
        (_Unguarded, "does not include HasScopes"),
    ],
)
def test_checker(view_class, expected):
    problems = problems_of(view_class)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems
