"""Values every template needs: the role flags that drive the navigation."""

from .selectors import user_is_programme_manager


def portal(request):
    user = getattr(request, "user", None)
    return {
        "is_programme_manager": bool(user and user_is_programme_manager(user=user)),
    }
