"""The request-logging opt-in page: an organisation's owner or admin reads exactly what is kept
and chooses for how long; a member is refused, another organisation does not find the page."""

import pytest
from django.urls import reverse

from inference.usage.models import RequestLogPolicy
from portal.audit.models import AuditEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def url(organisation) -> str:
    return reverse("request_logging:settings", args=[organisation.public_id])


def test_an_admin_turns_request_logging_on_for_seven_days(client, acme):
    # given
    client.force_login(acme["admin"])
    page = client.get(url(acme["organisation"])).content.decode()
    assert "the request as it was sent" in page
    assert "the text the model answered" in page
    assert "prompts or completions is kept." in page

    # when
    response = client.post(url(acme["organisation"]), {"retention_days": "7"})

    # then
    assert response.status_code == 302
    policy = RequestLogPolicy.objects.get(organisation=acme["organisation"])
    assert policy.retention_days == 7
    assert policy.changed_by == acme["admin"]
    assert AuditEvent.objects.filter(
        actor=acme["admin"], action="model.request_logging_set"
    ).exists()
    page = client.get(url(acme["organisation"])).content.decode()
    assert "Content of your requests is kept for 7 days." in page


def test_the_owner_turns_it_off_again(client, acme):
    RequestLogPolicy.objects.create(organisation=acme["organisation"], retention_days=30)
    client.force_login(acme["owner"])
    assert client.post(url(acme["organisation"]), {"retention_days": "0"}).status_code == 302
    assert RequestLogPolicy.objects.get(organisation=acme["organisation"]).retention_days == 0


@pytest.mark.parametrize("value", ["5", "-1", "91", "x", ""])
def test_a_value_not_offered_is_a_400_that_changes_nothing(client, acme, value):
    client.force_login(acme["owner"])
    response = client.post(url(acme["organisation"]), {"retention_days": value})
    assert response.status_code == 400
    assert not RequestLogPolicy.objects.exists()


@pytest.mark.parametrize("who", ["member", "rival", "outsider", "anonymous"])
def test_no_one_else_reads_or_changes_it(client, acme, rival, who):
    # given
    person = {
        "member": acme["member"],
        "rival": rival["owner"],
        "outsider": UserFactory(),
        "anonymous": None,
    }[who]
    if person is not None:
        client.force_login(person)
    events = AuditEvent.objects.count()

    # when
    read = client.get(url(acme["organisation"]))
    write = client.post(url(acme["organisation"]), {"retention_days": "90"})

    # then: a member is refused, others do not find it, nothing changes
    expected = {"member": 403, "anonymous": 302}.get(who, 404)
    assert (read.status_code, write.status_code) == (expected, expected)
    assert not RequestLogPolicy.objects.exists()
    assert AuditEvent.objects.count() == events


def test_the_catalogue_links_the_page_for_those_who_manage_an_organisation(client, acme):
    client.force_login(acme["admin"])
    assert url(acme["organisation"]) in client.get(reverse("models:list")).content.decode()
    client.force_login(acme["member"])
    assert url(acme["organisation"]) not in client.get(reverse("models:list")).content.decode()


def test_the_organisation_page_links_it_for_its_owner_and_admins_only(client, acme):
    organisation_page = reverse("organisations:detail", args=[acme["organisation"].slug])
    client.force_login(acme["owner"])
    assert url(acme["organisation"]) in client.get(organisation_page).content.decode()
    client.force_login(acme["member"])
    assert url(acme["organisation"]) not in client.get(organisation_page).content.decode()
