"""Django's and allauth's authentication backends, loading a signed-in person with what every
request asks next.

Each request with a session loads its person (AuthenticationMiddleware, through the backend
that signed them in); the API then asks whether they are a programme manager, which decides
their scopes: a second query, that a request with an API key does not make (its key is read
with its owner and that answer in one, apikeys.services.apikey_authenticate). Read here in the
same statement, a session's request costs no more than a key's. Everything else is Django's
and allauth's own.
"""

from allauth.account.auth_backends import AuthenticationBackend as AllauthBackend
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.db.models import OuterRef

from .models import User
from .selectors import programme_manager_exists, user_programme_manager_known


def _user_with_programme_role(backend, user_id):
    user = (
        User._default_manager.annotate(in_programme_group=programme_manager_exists(OuterRef("pk")))
        .filter(pk=user_id)
        .first()
    )
    if user is None or not backend.user_can_authenticate(user):
        return None
    user_programme_manager_known(user=user, is_manager=user.in_programme_group)
    return user


class ModelBackend(DjangoModelBackend):
    def get_user(self, user_id):
        return _user_with_programme_role(self, user_id)


class AuthenticationBackend(AllauthBackend):
    def get_user(self, user_id):
        return _user_with_programme_role(self, user_id)
