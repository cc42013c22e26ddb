"""People's model pages: the catalogue, one model's page and the playground, for each kind of
person; a model offered to one organisation is invisible to every other (attacker tests)."""

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from inference.catalogue.models import ServedModel
from portal.users.services import programme_manager_grant
from tests.conftest import totp_activate
from tests.factories import UserFactory

from .conftest import served_model

pytestmark = pytest.mark.django_db

ROLES = [
    "anonymous",
    "student",
    "startup member",
    "organisation admin",
    "programme manager without MFA",
    "programme manager with MFA",
]


@pytest.fixture
def people(acme, cohort_student):
    without_mfa = UserFactory()
    programme_manager_grant(user=without_mfa, acting_user=None)
    with_mfa = UserFactory()
    programme_manager_grant(user=with_mfa, acting_user=None)
    totp_activate(with_mfa)
    return {
        "anonymous": None,
        "student": cohort_student["student"],
        "startup member": acme["member"],
        "organisation admin": acme["admin"],
        "programme manager without MFA": without_mfa,
        "programme manager with MFA": with_mfa,
    }


@pytest.fixture
def models(acme, cohort_student):
    return {
        "all": served_model(name="qalam-chat", languages=["en", "ur"], licence="Apache-2.0"),
        "acme": served_model(
            name="acme-private", visibility="organisation", organisation=acme["organisation"]
        ),
        "cohort": served_model(
            name="cohort-chat", visibility="cohort", cohort=cohort_student["cohort"]
        ),
        "embed": served_model(
            name="minilm-embed", task=ServedModel.Task.EMBEDDING, output_price=Decimal("0")
        ),
    }


PAGES = [
    ("models:list", {}),
    ("models:detail", {"name": "qalam-chat"}),
    ("models:playground", {}),
]


@pytest.mark.parametrize(("url_name", "kwargs"), PAGES)
@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(client, people, models, role, url_name, kwargs):
    # given
    person = people[role]
    if person is not None:
        client.force_login(person)
    url = reverse(url_name, kwargs=kwargs)

    # when
    response = client.get(url)

    # then: anyone signed in reads the pages (they are not programme pages); no one else
    if person is None:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))
    else:
        assert response.status_code == 200
        assert b"qalam-chat" in response.content


def catalogue_names(client) -> set[str]:
    html = client.get(reverse("models:list")).content.decode()
    return set(re.findall(r'data-model="([^"]+)"', html))


def test_the_catalogue_lists_what_each_person_may_call(client, people, models):
    client.force_login(people["startup member"])
    assert catalogue_names(client) == {"qalam-chat", "acme-private", "minilm-embed"}
    client.force_login(people["student"])
    assert catalogue_names(client) == {"qalam-chat", "cohort-chat", "minilm-embed"}


def test_another_organisation_can_neither_see_nor_open_a_private_model(client, rival, models):
    # given the owner of another organisation
    client.force_login(rival["owner"])

    # then acme's model is not listed, its page is a 404 like a name that does not exist,
    # and the playground does not offer it
    assert "acme-private" not in catalogue_names(client)
    assert client.get(reverse("models:detail", args=["acme-private"])).status_code == 404
    assert client.get(reverse("models:detail", args=["no-such-model"])).status_code == 404
    playground = client.get(reverse("models:playground")).content.decode()
    assert "acme-private" not in playground
    assert client.get(reverse("models:playground") + "?model=acme-private").status_code == 200
    assert 'value="acme-private"' not in playground


def test_a_model_out_of_the_catalogue_has_no_page(client, people, models):
    ServedModel.objects.filter(pk=models["all"].pk).update(is_active=False)
    client.force_login(people["startup member"])
    assert client.get(reverse("models:detail", args=["qalam-chat"])).status_code == 404


def test_the_model_page_says_how_to_call_it_and_what_it_costs(client, people, models, settings):
    # given a price of 0.125 credit-seconds per 1,000 input tokens and 0.250 per 1,000 output
    settings.CREDITS_DEFAULT_RATE_PKR_PER_GPU_HOUR = Decimal("750.00")
    client.force_login(people["startup member"])

    # when
    html = client.get(reverse("models:detail", args=["qalam-chat"])).content.decode()

    # then: per 1M tokens, 125 credit-seconds = 125 × 750 / 3600 = 26.04 PKR; 250 = 52.08 PKR
    assert "125.000 credit-seconds (26.04 PKR) per 1M tokens" in html
    assert "250.000 credit-seconds (52.08 PKR) per 1M tokens" in html
    assert "4096 tokens" in html
    assert "<code>en</code>, <code>ur</code>" in html
    assert "Apache-2.0" in html
    assert '<code id="base-url">http://testserver/llm/v1</code>' in html
    assert "models:invoke" in html
    assert 'base_url="http://testserver/llm/v1"' in html
    assert 'model="qalam-chat"' in html
    assert "curl http://testserver/llm/v1/chat/completions" in html
    assert (
        "Nothing of a prompt or completion is stored or logged unless your organisation turns "
        "on request logging, and then only for the days it chose." in html
    )
    assert reverse("models:playground") + "?model=qalam-chat" in html


def test_an_embedding_model_page_shows_the_embeddings_call_and_no_output_price(
    client, people, models
):
    client.force_login(people["student"])
    html = client.get(reverse("models:detail", args=["minilm-embed"])).content.decode()
    assert "client.embeddings.create(" in html
    assert "/llm/v1/embeddings" in html
    assert 'id="output-price"' not in html
    assert reverse("models:playground") not in html.split('id="privacy-note"')[1]


def test_the_playground_offers_chat_models_and_the_payers_of_the_person(
    client, acme, people, models
):
    # given an organisation member
    client.force_login(people["startup member"])

    # when
    html = client.get(reverse("models:playground") + "?model=acme-private").content.decode()

    # then chat models only, the chosen one selected, paid from their organisation
    options = set(re.findall(r'<option value="([^"]*)"', html))
    assert {"qalam-chat", "acme-private"} <= options
    assert "minilm-embed" not in options
    assert '<option value="acme-private" selected>' in html
    assert f'<option value="{acme["organisation"].public_id}">' in html
    assert 'data-endpoint="/models/playground/chat"' in html
    assert 'id="pg-input" name="message" rows="3" dir="auto"' in html
    assert "js/playground.js" in html
    assert "csrfmiddlewaretoken" in html


def test_the_playground_in_urdu_reads_right_to_left(client, people, models):
    client.force_login(people["student"])
    html = client.get(reverse("models:playground"), HTTP_ACCEPT_LANGUAGE="ur").content.decode()
    assert '<html lang="ur" dir="rtl">' in html
    assert 'dir="auto"' in html
    assert "Playground" not in html.split("<main")[1].split("</h1>")[0]  # the heading translated


def test_the_model_api_is_in_the_main_navigation(client, people, models):
    client.force_login(people["student"])
    html = client.get(reverse("launcher:list")).content.decode()
    assert f'href="{reverse("models:list")}"' in html
