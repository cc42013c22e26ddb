"""The portal as JupyterHub's OpenID Connect provider, driven over HTTP as the hub drives it."""

import base64
import hashlib
import json
import secrets
import stat
from io import StringIO
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth.hashers import check_password
from django.core.management import call_command
from django.urls import reverse
from jwcrypto import jwk, jwt
from oauth2_provider.models import AccessToken, Application, Grant

from portal.users.oidc import hub_client_ensure
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

CLIENT_ID = "hub-test-client"
CLIENT_SECRET = "hub-test-secret-" + "x" * 40  # noqa: S105
HUB = "https://hub.example.pk"
REDIRECT_URI = f"{HUB}/hub/oauth_callback"
HUB_ENV_KEYS = [
    "HUB_PUBLIC_URL",
    "HUB_API_URL",
    "HUB_API_TOKEN",
    "HUB_SPAWN_SECRET",
    "PORTAL_INTERNAL_URL",
    "PORTAL_PUBLIC_URL",
    "HUB_OIDC_CLIENT_ID",
    "HUB_OIDC_CLIENT_SECRET",
    "JUPYTERHUB_CRYPT_KEY",
    "HUB_DATA_DIR",
    "HUB_PROXY_API_PORT",
    "HUB_INTERNAL_PORT",
    "SANDBOX_NETWORK",
    "SANDBOX_NETWORK_INTERNAL",
    "HUB_IDLE_TIMEOUT",
    "HUB_MAX_AGE",
]


@pytest.fixture
def hub_client(db):
    application, _changed = hub_client_ensure(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, hub_public_url=HUB
    )
    return application


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _authorize_url(challenge: str, **overrides) -> str:
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile email",
        "state": "state-123",
        "nonce": "nonce-456",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return "/o/authorize/?" + urlencode({k: v for k, v in params.items() if v is not None})


def _callback_params(response) -> dict[str, str]:
    assert response.status_code == 302
    location = urlparse(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    return {key: values[0] for key, values in parse_qs(location.query).items()}


def _code_for(client, user) -> tuple[str, str]:
    client.force_login(user)
    verifier, challenge = _pkce()
    params = _callback_params(client.get(_authorize_url(challenge)))
    assert params["state"] == "state-123"
    return params["code"], verifier


def _exchange(client, code: str, verifier: str, **overrides):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    data.update(overrides)
    return client.post("/o/token/", data)  # form-encoded, as OAuthenticator sends it


def _userinfo(client, access_token: str):
    return client.get("/o/userinfo/", headers={"authorization": f"Bearer {access_token}"})


def test_discovery_lists_rs256_pkce_s256_and_the_portal_endpoints(client):
    response = client.get("/o/.well-known/openid-configuration")
    assert response.status_code == 200
    config = response.json()
    assert config["issuer"] == "http://testserver/o"
    assert config["authorization_endpoint"] == "http://testserver/o/authorize/"
    assert config["token_endpoint"] == "http://testserver/o/token/"
    assert config["userinfo_endpoint"] == "http://testserver/o/userinfo/"
    assert config["jwks_uri"] == "http://testserver/o/.well-known/jwks.json"
    assert config["end_session_endpoint"] == "http://testserver/o/logout/"
    assert "RS256" in config["id_token_signing_alg_values_supported"]
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["response_types_supported"] == ["code"]
    assert {"openid", "profile", "email"} <= set(config["scopes_supported"])
    assert {"sub", "preferred_username", "email", "email_verified", "name"} <= set(
        config["claims_supported"]
    )
    keys = client.get(config["jwks_uri"].removeprefix("http://testserver")).json()["keys"]
    assert [(key["kty"], key["alg"], key["use"]) for key in keys] == [("RSA", "RS256", "sig")]
    assert "d" not in keys[0]  # the public half only


def test_only_the_relying_party_endpoints_are_mounted(client, hub_client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    for path in ["/o/applications/", "/o/authorized_tokens/", "/o/introspect/", "/o/register/"]:
        assert client.get(path).status_code == 404, path


def test_code_flow_with_pkce_gives_a_verifiable_id_token_and_matching_userinfo(client, hub_client):
    # given a verified, active person signed in to the portal
    user = UserFactory(email="ayesha@example.pk", name="Ayesha Khan")
    code, verifier = _code_for(client, user)
    # when the hub exchanges the code with its secret and the PKCE verifier
    response = _exchange(client, code, verifier)
    # then it gets an access token and an RS256 ID token the portal's JWKS verifies
    assert response.status_code == 200, response.content
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert 0 < tokens["expires_in"] <= 600
    keys = jwk.JWKSet.from_json(client.get("/o/.well-known/jwks.json").content)
    id_token = jwt.JWT(
        jwt=tokens["id_token"],
        key=keys,
        algs=["RS256"],
        check_claims={"iss": "http://testserver/o", "aud": CLIENT_ID, "exp": None},
    )
    assert json.loads(id_token.header)["alg"] == "RS256"
    claims = json.loads(id_token.claims)
    assert claims["sub"] == str(user.pk)
    assert claims["preferred_username"] == user.hub_username
    assert claims["email"] == "ayesha@example.pk"
    assert claims["email_verified"] is True
    assert claims["name"] == "Ayesha Khan"
    assert claims["nonce"] == "nonce-456"
    # and userinfo, which the hub reads for the user name, says the same
    info = _userinfo(client, tokens["access_token"])
    assert info.status_code == 200
    assert info.json() == {
        "sub": str(user.pk),
        "preferred_username": user.hub_username,
        "email": "ayesha@example.pk",
        "email_verified": True,
        "name": "Ayesha Khan",
    }
    # and the token is stored hashed only (RFC 9700), the code works once
    assert AccessToken.objects.get(user=user).token == ""
    assert _exchange(client, code, verifier).status_code == 400


def test_the_code_needs_the_matching_pkce_verifier_and_the_client_secret(client, hub_client):
    user = UserFactory()
    code, verifier = _code_for(client, user)
    assert _exchange(client, code, _pkce()[0]).json()["error"] == "invalid_grant"
    code, verifier = _code_for(client, user)
    assert _exchange(client, code, verifier, client_secret="wrong").status_code == 401
    assert not AccessToken.objects.exists()


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"code_challenge": None, "code_challenge_method": None}, id="no-pkce"),
        pytest.param({"code_challenge_method": "plain"}, id="plain-pkce"),
        pytest.param({"response_type": "token"}, id="implicit"),
    ],
)
def test_authorisation_without_s256_pkce_or_with_another_flow_is_refused(
    client, hub_client, overrides
):
    client.force_login(UserFactory())
    params = _callback_params(client.get(_authorize_url(_pkce()[1], **overrides)))
    assert "code" not in params
    assert params["error"] in {"invalid_request", "unauthorized_client"}
    assert not Grant.objects.exists()


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/hub/oauth_callback",
        f"{HUB}/hub/oauth_callback/../../steal",
        f"{HUB}/other",
        "http://hub.example.pk/hub/oauth_callback",
    ],
)
def test_an_unregistered_redirect_uri_is_refused_without_redirecting(
    client, hub_client, redirect_uri
):
    client.force_login(UserFactory())
    response = client.get(_authorize_url(_pkce()[1], redirect_uri=redirect_uri))
    assert response.status_code == 400
    assert "Location" not in response
    assert "This sign-in request cannot be completed" in response.content.decode()
    assert not Grant.objects.exists()


def test_an_unknown_client_is_refused_without_redirecting(client, hub_client):
    client.force_login(UserFactory())
    response = client.get(_authorize_url(_pkce()[1], client_id="nobody"))
    assert response.status_code == 400
    assert "Location" not in response


def test_a_person_with_an_unverified_address_is_sent_back_with_access_denied(client, hub_client):
    client.force_login(UserFactory(verified=False))
    params = _callback_params(client.get(_authorize_url(_pkce()[1])))
    assert params["error"] == "access_denied"
    assert "Verify your e-mail address" in params["error_description"]
    assert params["state"] == "state-123"
    assert params["iss"] == "http://testserver/o"
    assert "code" not in params
    assert not Grant.objects.exists()


def test_the_refusal_the_hub_shows_is_in_the_persons_language(client, hub_client):
    client.force_login(UserFactory(verified=False))
    response = client.get(_authorize_url(_pkce()[1]), headers={"accept-language": "ur"})
    description = _callback_params(response)["error_description"]
    assert description == "نوٹ بک کھولنے سے پہلے پورٹل میں اپنے ای میل پتے کی تصدیق کریں۔"


def test_a_suspended_person_is_not_signed_in_and_gets_no_code(client, hub_client):
    user = UserFactory()
    client.force_login(user)
    user.is_active = False
    user.save()
    response = client.get(_authorize_url(_pkce()[1]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login") + "?next=")
    assert not Grant.objects.exists()


def _suspend(user):
    user.is_active = False
    user.save()


def _unverify(user):
    EmailAddress.objects.filter(user=user).update(verified=False)


@pytest.mark.parametrize("withdraw", [_suspend, _unverify], ids=["suspended", "unverified"])
def test_a_code_issued_before_a_suspension_or_unverification_is_not_exchanged(
    client, hub_client, withdraw
):
    user = UserFactory()
    code, verifier = _code_for(client, user)
    withdraw(user)
    response = _exchange(client, code, verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert not AccessToken.objects.exists()


@pytest.mark.parametrize("withdraw", [_suspend, _unverify], ids=["suspended", "unverified"])
def test_userinfo_stops_answering_once_a_person_is_suspended_or_unverified(
    client, hub_client, withdraw
):
    user = UserFactory()
    code, verifier = _code_for(client, user)
    access_token = _exchange(client, code, verifier).json()["access_token"]
    assert _userinfo(client, access_token).status_code == 200
    withdraw(user)
    response = _userinfo(client, access_token)
    assert response.status_code in {401, 403}
    assert "preferred_username" not in response.content.decode()


def test_anonymous_authorisation_goes_through_the_portal_sign_in_and_back(client, hub_client):
    # given someone with no portal session following the hub's redirect
    user = UserFactory(email="bilal@example.pk")
    _verifier, challenge = _pkce()
    authorize = _authorize_url(challenge)
    response = client.get(authorize)
    # then the portal's (allauth) sign-in page is shown first, with the way back kept
    assert response.status_code == 302
    login = urlparse(response["Location"])
    assert login.path == reverse("account_login")
    assert parse_qs(login.query)["next"] == [authorize]
    assert "Content-Security-Policy" in response
    page = client.get(response["Location"])
    assert page.status_code == 200
    # when they sign in with their password
    signed_in = client.post(
        response["Location"], {"login": "bilal@example.pk", "password": PASSWORD}
    )
    # then they come back to the authorisation endpoint, which sends the hub its code
    assert signed_in.status_code == 302
    assert signed_in["Location"] == authorize
    params = _callback_params(client.get(signed_in["Location"]))
    assert Grant.objects.get(code=params["code"]).user == user


def test_forms_may_lead_to_the_hub_so_sign_in_can_end_at_its_callback(client, settings):
    # Chrome applies form-action to the redirects after a form: the sign-in form's POST ends
    # in a redirect to the hub's callback, which must be allowed, and nothing else is added.
    policy = client.get(reverse("account_login"))["Content-Security-Policy"]
    form_action = next(d for d in policy.split("; ") if d.startswith("form-action "))
    hub = urlparse(settings.HUB_PUBLIC_URL)
    assert form_action == f"form-action 'self' {hub.scheme}://{hub.netloc}"


def test_the_hub_logout_ends_the_portal_session_after_confirmation(client, hub_client):
    user = UserFactory()
    code, verifier = _code_for(client, user)
    access_token = _exchange(client, code, verifier).json()["access_token"]
    page = client.get("/o/logout/")
    assert page.status_code == 200
    assert "Sign out of the portal too?" in page.content.decode()
    response = client.post("/o/logout/", {"allow": "Logout"})
    assert response.status_code == 302
    assert response["Location"] == "http://testserver/"
    assert "_auth_user_id" not in client.session
    assert _userinfo(client, access_token).status_code in {401, 403}


def _run_hub_configure(*args) -> str:
    out = StringIO()
    call_command("hub_configure", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def hub_env_file(tmp_path, settings, monkeypatch):
    for key in HUB_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    settings.HUB_ENV_FILE = tmp_path / "hub.env"
    return settings.HUB_ENV_FILE


def _env_values(path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_hub_configure_is_idempotent_and_writes_a_private_file(hub_env_file):
    # when it runs the first time
    _run_hub_configure()
    first = hub_env_file.read_text()
    values = _env_values(hub_env_file)
    # then every shared variable is there, secrets generated, the file readable by its owner only
    assert list(values) == HUB_ENV_KEYS
    assert stat.S_IMODE(hub_env_file.stat().st_mode) == 0o600
    assert len(values["HUB_API_TOKEN"]) == 64
    assert len(values["JUPYTERHUB_CRYPT_KEY"]) == 64
    bytes.fromhex(values["JUPYTERHUB_CRYPT_KEY"])
    assert values["HUB_PUBLIC_URL"] == "http://hub.localhost:8001"
    assert values["HUB_API_URL"] == "http://hub.localhost:8001/hub/api"
    application = Application.objects.get()
    assert application.name == "JupyterHub"
    assert application.client_id == values["HUB_OIDC_CLIENT_ID"]
    assert check_password(values["HUB_OIDC_CLIENT_SECRET"], application.client_secret)
    assert application.client_secret != values["HUB_OIDC_CLIENT_SECRET"]  # stored hashed
    assert application.client_type == Application.CLIENT_CONFIDENTIAL
    assert application.authorization_grant_type == Application.GRANT_AUTHORIZATION_CODE
    assert application.algorithm == Application.RS256_ALGORITHM
    assert application.skip_authorization
    assert application.redirect_uris == "http://hub.localhost:8001/hub/oauth_callback"
    # when it runs again
    assert "unchanged" in _run_hub_configure()
    # then nothing changes: same secrets, same file, one client
    assert hub_env_file.read_text() == first
    again = Application.objects.get()
    assert (again.pk, again.client_id, again.client_secret) == (
        application.pk,
        application.client_id,
        application.client_secret,
    )


def test_hub_configure_follows_the_environment_and_keeps_the_secrets(hub_env_file, monkeypatch):
    _run_hub_configure()
    before = _env_values(hub_env_file)
    hub_env_file.chmod(0o644)
    monkeypatch.setenv("HUB_PUBLIC_URL", "https://hub.example.pk/")
    assert _run_hub_configure("--print").strip() == str(hub_env_file)
    after = _env_values(hub_env_file)
    assert after["HUB_PUBLIC_URL"] == "https://hub.example.pk"
    assert {k: v for k, v in after.items() if k != "HUB_PUBLIC_URL"} == {
        k: v for k, v in before.items() if k != "HUB_PUBLIC_URL"
    }
    assert stat.S_IMODE(hub_env_file.stat().st_mode) == 0o600
    application = Application.objects.get()
    assert application.redirect_uris == "https://hub.example.pk/hub/oauth_callback"
    assert check_password(after["HUB_OIDC_CLIENT_SECRET"], application.client_secret)


def test_the_client_hub_configure_writes_completes_the_flow(client, hub_env_file, monkeypatch):
    monkeypatch.setenv("HUB_PUBLIC_URL", HUB)
    monkeypatch.setenv("HUB_OIDC_CLIENT_ID", CLIENT_ID)
    _run_hub_configure()
    secret = _env_values(hub_env_file)["HUB_OIDC_CLIENT_SECRET"]
    code, verifier = _code_for(client, UserFactory())
    assert _exchange(client, code, verifier, client_secret=secret).status_code == 200
