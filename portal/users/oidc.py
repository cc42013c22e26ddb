"""The portal as the OpenID Connect provider that JupyterHub signs people in with.

Claims (scope in brackets): `sub` [openid], `preferred_username` = the person's hub username and
`name` [profile], `email` and `email_verified` [email]. The hub names its users after
`preferred_username`, so it must be the system-made `hub_username`, never something a person
chose. `sub` is the user's primary key as a string: the User model has no public UUID, and
`sub` must never change for a person (the hub username is not used, on purpose).

Who may sign in to the hub: an active person whose sign-in address is verified. That rule is
checked at every step, so a suspension or an unverified address takes effect at once: the
authorisation request (the person is sent back to the hub with `access_denied`), the code
exchange, a refresh, and every userinfo request.
"""

from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

from django.contrib.auth.hashers import check_password
from django.db import transaction
from django.utils.translation import gettext as _
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.models import (
    AbstractApplication,
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views import AuthorizationView
from oauthlib.oauth2.rfc6749.errors import AccessDeniedError

from .selectors import user_has_verified_email


def hub_sign_in_refusal(*, user) -> str | None:
    """Why this person may not sign in to the hub, or None when they may."""
    if not user.is_active:
        return _("This account is suspended.")
    if not user_has_verified_email(user=user):
        return _("Verify your e-mail address in the portal before you open notebooks.")
    return None


def oidc_subject(*, user) -> str:
    """The `sub` claim: stable for the person's lifetime, unique on this provider."""
    return str(user.pk)


class PortalOIDCValidator(OAuth2Validator):
    """django-oauth-toolkit's validator with the portal's claims and sign-in rule."""

    def get_additional_claims(self):
        # The request-agnostic form (values are callables): the discovery document then lists
        # every claim, and DOT keeps each one only when its scope was granted.
        return {
            "sub": lambda request: oidc_subject(user=request.user),
            "preferred_username": lambda request: request.user.hub_username,
            "name": lambda request: request.user.name,
            "email": lambda request: request.user.email,
            "email_verified": lambda request: user_has_verified_email(user=request.user),
        }

    def get_oidc_claims(self, token, token_handler, request):
        # OIDC Core 5.1: a claim with no value is left out, not sent empty (a person with no name).
        claims = super().get_oidc_claims(token, token_handler, request)
        return {key: value for key, value in claims.items() if value not in ("", None)}

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        valid = super().validate_code(client_id, code, client, request, *args, **kwargs)
        return valid and hub_sign_in_refusal(user=request.user) is None

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        valid = super().validate_refresh_token(refresh_token, client, request, *args, **kwargs)
        return valid and hub_sign_in_refusal(user=request.user) is None

    def validate_bearer_token(self, token, scopes, request):
        if not super().validate_bearer_token(token, scopes, request):
            return False
        refusal = hub_sign_in_refusal(user=request.user)
        if refusal is not None:
            request.oauth2_error = {"error": "invalid_token", "error_description": refusal}
            return False
        return True


class PortalAuthorizationView(AuthorizationView):
    """DOT's authorisation endpoint, refusing people who may not sign in to the hub.

    Anonymous visitors are sent to the portal's sign-in page and come back here (DOT's
    LoginRequiredMixin with LOGIN_URL). A signed-in person who may not use the hub goes back to
    the client with `error=access_denied` and the reason, as OAuth 2.0 (RFC 6749 4.1.2.1)
    prescribes; a request from an unknown client or to an unregistered redirect URI never
    redirects anywhere.
    """

    def get(self, request, *args, **kwargs):
        refusal = hub_sign_in_refusal(user=request.user)
        if refusal is None:
            return super().get(request, *args, **kwargs)
        try:
            _scopes, credentials = self.validate_authorization_request(request)
        except OAuthToolkitError as error:
            return self.error_response(error, application=None)
        application = get_application_model().objects.get(client_id=credentials["client_id"])
        error = OAuthToolkitError(
            error=AccessDeniedError(description=refusal, state=credentials.get("state")),
            redirect_uri=credentials["redirect_uri"],
        )
        response = self.error_response(error, application)
        if oauth2_settings.COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS:
            response = _with_issuer(response, oauth2_settings.oidc_issuer(request))
        return response

    def post(self, request, *args, **kwargs):
        # The consent form (the hub skips it) obeys the same rule; the code exchange does too.
        refusal = hub_sign_in_refusal(user=request.user)
        if refusal is not None:
            error = AccessDeniedError(description=refusal)
            return self.render_to_response({"error": error}, status=403)
        return super().post(request, *args, **kwargs)


def _with_issuer(response, issuer: str):
    """Add RFC 9207's `iss` to an error redirect, as DOT does for its own responses."""
    location = response.get("Location")
    if location is None:
        return response
    parts = urlparse(location)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "iss"]
    response["Location"] = urlunparse(parts._replace(query=urlencode([*query, ("iss", issuer)])))
    return response


HUB_CLIENT_NAME = "JupyterHub"


def hub_client_redirect_uri(*, hub_public_url: str) -> str:
    """Where OAuthenticator receives the code: `<hub>/hub/oauth_callback`."""
    return f"{hub_public_url.rstrip('/')}/hub/oauth_callback"


@transaction.atomic
def hub_client_ensure(
    *, client_id: str, client_secret: str, hub_public_url: str
) -> tuple[AbstractApplication, bool]:
    """Make the hub's OAuth client exist exactly as configured; return (application, changed).

    One Application named "JupyterHub": confidential, authorization code, RS256 ID tokens, no
    consent screen, one redirect URI. DOT stores only a hash of the secret, so the plain secret
    is compared with the hash and set again (hashed on save) only when it differs.
    """
    Application = get_application_model()
    wanted = {
        "client_id": client_id,
        "client_type": Application.CLIENT_CONFIDENTIAL,
        "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
        "algorithm": Application.RS256_ALGORITHM,
        "skip_authorization": True,
        "hash_client_secret": True,
        "redirect_uris": hub_client_redirect_uri(hub_public_url=hub_public_url),
        "post_logout_redirect_uris": "",
        "allowed_origins": "",
        "user": None,
    }
    application = (
        Application.objects.select_for_update().filter(name=HUB_CLIENT_NAME).order_by("pk").first()
    )
    if application is None:
        application = Application(name=HUB_CLIENT_NAME)
    changed = application.pk is None
    for field, value in wanted.items():
        if getattr(application, field) != value:
            setattr(application, field, value)
            changed = True
    if application.pk is None or not check_password(client_secret, application.client_secret):
        application.client_secret = client_secret
        changed = True
    if changed:
        application.clean()  # e.g. an http redirect URI where only https is allowed
        application.save()
    return application, changed


def hub_oidc_tokens_revoke(*, user_ids) -> int:
    """Revoke what the portal issued to the hub for these people: refresh tokens (the hub can
    no longer get fresh tokens), access and ID tokens (its userinfo checks fail), codes not yet
    exchanged. Part of ending their hub session; the hub's auth refresh (with auth state kept)
    then asks them to sign in again. Returns how many tokens and codes were revoked."""
    user_ids = list(user_ids)
    hub = get_application_model().objects.filter(name=HUB_CLIENT_NAME)
    revoked = 0
    for refresh in (
        get_refresh_token_model()
        .objects.filter(user_id__in=user_ids, application__in=hub, revoked__isnull=True)
        .order_by("pk")
    ):
        refresh.revoke()  # revokes its access token too
        revoked += 1
    for model in (get_access_token_model(), get_id_token_model(), get_grant_model()):
        deleted, _by_model = model.objects.filter(
            user_id__in=user_ids, application__in=hub
        ).delete()
        revoked += deleted
    return revoked
