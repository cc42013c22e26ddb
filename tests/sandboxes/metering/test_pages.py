"""The live usage pages: a sandbox's own page, an organisation's live page and the programme
managers' cluster view. Who may see them, and the first paint the live stream then updates."""

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone

from portal.organisations.models import Organisation, Role
from sandboxes.gpus.models import GpuAllocation
from sandboxes.metering.models import DeviceSample, SandboxRun, Step, UsageRollup, UsageSample
from tests.factories import MembershipFactory, StudentProfileFactory
from tests.sandboxes.launcher.helpers import funded_founder, funded_student, gpus

from .helpers import running

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[3]
LIVE_TEMPLATES = [
    "templates/sandboxes/detail.html",
    "templates/sandboxes/organisation.html",
    "templates/sandboxes/list.html",
    "templates/dashboard/cluster.html",
    "templates/dashboard/_gpu_tile.html",
    "templates/base.html",
]


def live_data(page: str, element_id: str) -> dict:
    """The JSON a page embeds for its script (json_script)."""
    found = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', page)
    assert found, f"no {element_id} on the page"
    return json.loads(found.group(1))


def sample(sandbox, seconds_ago: int, **values) -> UsageSample:
    return UsageSample.objects.create(
        sandbox=sandbox, taken_at=timezone.now() - dt.timedelta(seconds=seconds_ago), **values
    )


def visible(page: str, element_id: str) -> bool:
    tag = re.search(rf'<[^>]*id="{element_id}"[^>]*>', page)
    assert tag, f"no #{element_id} on the page"
    return " hidden" not in tag.group(0)


# --- The sandbox page -----------------------------------------------------------------------


def test_the_owner_sees_the_sandbox_page_others_get_404_and_anonymous_signs_in(client, enqueued):
    gpus(2)
    owner = funded_student()
    sandbox, _run = running(owner, "gpu-1")
    url = reverse("launcher:detail", args=[sandbox.public_id])

    anonymous = client.get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("account_login"))

    client.force_login(funded_student())
    assert client.get(url).status_code == 404

    client.force_login(owner)
    assert client.get(url).status_code == 200


def test_a_deleted_sandbox_page_is_a_404_even_for_its_owner(client, enqueued):
    owner = funded_student()
    sandbox, _run = running(owner, "cpu-small")
    type(sandbox).objects.filter(pk=sandbox.pk).update(deleted_at=timezone.now())
    client.force_login(owner)
    assert client.get(reverse("launcher:detail", args=[sandbox.public_id])).status_code == 404


def test_the_sandbox_page_paints_the_last_hour_the_credits_and_the_gpus(client, enqueued):
    gpus(2)
    owner = funded_student(hours=10)
    sandbox, run = running(owner, "gpu-1")
    sample(sandbox, 7200, gpu_util_pct=99.0, cpu_pct=99.0)  # older than the hour: not drawn
    sample(sandbox, 40, gpu_util_pct=10.0, gpu_memory_used_mib=1000, cpu_pct=5.0)
    sample(
        sandbox,
        20,
        gpu_count=1,
        gpu_util_pct=42.5,
        gpu_memory_used_mib=2048,
        gpu_power_w=151.25,
        gpu_temperature_c=61,
        cpu_pct=73.4,
        memory_used_mib=900,
    )
    SandboxRun.objects.filter(pk=run.pk).update(charged_credit_seconds=1800)
    device = GpuAllocation.objects.get(sandbox=sandbox, released_at__isnull=True).device
    client.force_login(owner)

    page = client.get(reverse("launcher:detail", args=[sandbox.public_id])).content.decode()

    # the charts' first paint: the last hour, raw samples, oldest first
    data = live_data(page, "sandbox-live-data")
    assert data["sandbox"] == str(sandbox.public_id)
    assert data["account"] == str(sandbox.account.public_id)
    assert data["series"]["step"] == "raw"
    assert data["series"]["gpu_util_pct"] == [10.0, 42.5]
    assert data["series"]["cpu_pct"] == [5.0, 73.4]
    assert len(data["series"]["t"]) == 2
    assert data["usage_url"] == "/api/v1/usage"
    assert data["stop_at"] is None
    assert data["charged_before_run"] == 0  # usage.sample carries the open run's 1800
    # the text equivalents of the charts: the latest reading
    for name, text in [
        ("gpu_util_pct", "42.5"),
        ("gpu_memory_used_mib", "2048"),
        ("gpu_power_w", "151.3"),  # rounded half up, as JavaScript's toFixed does
        ("cpu_pct", "73.4"),
        ("memory_used_mib", "900"),
        ("gpu_memory_total_mib", str(device.memory_mib)),  # the one GPU it holds
        ("memory_limit_mib", str(sandbox.profile.memory_mib)),
    ]:
        assert re.search(rf'data-reading="{name}">{text}<', page), name
    assert 'aria-live="polite"' in page
    # the credits: 10 GPU-hours, one GPU burning, 30 minutes charged
    assert re.search(r'data-stat="balance">10\.0000<', page)
    assert re.search(r'data-stat="burn">1\.00<', page)
    assert re.search(r'data-stat="runway">10 h 0 min<', page)
    assert re.search(r'data-stat="charged">0\.50<', page)
    # what it runs on, simulated as it is here
    assert device.uuid in page
    assert sandbox.image.name in page
    assert sandbox.profile.name in page
    assert visible(page, "simulated-badge")
    assert not visible(page, "countdown")


def test_charges_of_earlier_runs_count_in_the_page_total(client, enqueued):
    owner = funded_student()
    sandbox, run = running(owner, "cpu-small")
    SandboxRun.objects.filter(pk=run.pk).update(charged_credit_seconds=360)
    SandboxRun.objects.create(
        sandbox=sandbox,
        account=sandbox.account,
        rate_millicredits=1000,
        interval_seconds=10,
        started_at=run.started_at - dt.timedelta(hours=2),
        ended_at=run.started_at - dt.timedelta(hours=1),
        charged_until=run.started_at - dt.timedelta(hours=1),
        settled=True,
        charged_credit_seconds=3600,
    )
    client.force_login(owner)
    page = client.get(reverse("launcher:detail", args=[sandbox.public_id])).content.decode()
    assert re.search(r'data-stat="charged">1\.10<', page)
    assert live_data(page, "sandbox-live-data")["charged_before_run"] == 3600
    assert not visible(page, "simulated-badge")  # CPU only: no GPU, simulated or not
    assert "CPU only" in page


def test_an_exhausted_sandbox_shows_the_countdown_on_first_paint(client, enqueued):
    gpus(1)
    owner = funded_student()
    sandbox, run = running(owner, "gpu-1")
    stop_at = timezone.now() + dt.timedelta(seconds=95)
    SandboxRun.objects.filter(pk=run.pk).update(exhausted_at=timezone.now(), stop_at=stop_at)
    client.force_login(owner)

    page = client.get(reverse("launcher:detail", args=[sandbox.public_id])).content.decode()

    assert visible(page, "countdown")
    assert re.search(r'data-field="clock">1:3\d<', page)
    data = live_data(page, "sandbox-live-data")
    assert dt.datetime.fromisoformat(data["stop_at"]) == stop_at


def test_longer_ranges_read_the_roll_ups(client, enqueued):
    owner = funded_student()
    sandbox, _run = running(owner, "cpu-small")
    now = timezone.now().replace(second=0, microsecond=0)
    for hours_ago, cpu in [(3, 20.0), (30, 99.0)]:  # the second is older than a day
        UsageRollup.objects.create(
            sandbox=sandbox,
            step=Step.MINUTE,
            bucket=now - dt.timedelta(hours=hours_ago),
            samples=6,
            cpu_pct=cpu,
        )
    UsageRollup.objects.create(
        sandbox=sandbox,
        step=Step.HOUR,
        bucket=now - dt.timedelta(days=3),
        samples=360,
        cpu_pct=55.0,
    )
    client.force_login(owner)
    url = reverse("launcher:detail", args=[sandbox.public_id])

    day = live_data(client.get(url, {"range": "24h"}).content.decode(), "sandbox-live-data")
    week = live_data(client.get(url, {"range": "7d"}).content.decode(), "sandbox-live-data")
    bogus = live_data(client.get(url, {"range": "1y"}).content.decode(), "sandbox-live-data")

    assert (day["range"], day["series"]["step"], day["series"]["cpu_pct"]) == (
        "24h",
        "minute",
        [20.0],
    )
    assert (week["range"], week["series"]["step"], week["series"]["cpu_pct"]) == (
        "7d",
        "hour",
        [55.0],
    )
    assert (bogus["range"], bogus["series"]["step"]) == ("1h", "raw")
    assert day["ranges"] == {
        "1h": {"seconds": 3600, "step": "raw"},
        "24h": {"seconds": 86400, "step": "minute"},
        "7d": {"seconds": 604800, "step": "hour"},
    }


def test_the_sandboxes_list_links_each_row_to_its_page(client, enqueued):
    owner = funded_student()
    sandbox, _run = running(owner, "cpu-small")
    client.force_login(owner)
    page = client.get(reverse("launcher:list")).content.decode()
    assert f'href="{reverse("launcher:detail", args=[sandbox.public_id])}"' in page
    assert 'data-ws-path="/ws/live/"' in page


# --- The organisation's live page -----------------------------------------------------------


def test_members_see_every_members_live_sandbox_with_its_latest_usage(client, enqueued):
    gpus(2)
    founder = funded_founder(hours=20)
    organisation = founder.memberships.get().organisation
    colleague = funded_founder(organisation=organisation)
    theirs, _run = running(colleague, "gpu-1")
    mine, _run = running(founder, "cpu-small")
    sample(theirs, 15, gpu_util_pct=87.5, gpu_memory_used_mib=4096, gpu_power_w=250.0, cpu_pct=12.0)
    sample(theirs, 5, gpu_util_pct=88.5, gpu_memory_used_mib=4100, gpu_power_w=251.0, cpu_pct=13.0)
    student_sandbox, _run = running(funded_student(), "cpu-small")  # not the organisation's
    client.force_login(founder)

    page = client.get(
        reverse("launcher:organisation_live", args=[organisation.public_id])
    ).content.decode()

    row = re.search(rf'<tr data-sandbox="{theirs.public_id}".*?</tr>', page, re.S).group(0)
    assert colleague.email in row or colleague.get_full_name() in row
    assert theirs.profile.name in row
    assert re.search(r'data-reading="gpu_util_pct">88\.5<', row)
    assert re.search(r'data-reading="gpu_memory_used_mib">4100<', row)
    assert re.search(r'data-reading="gpu_power_w">251\.0<', row)
    assert re.search(r'data-reading="cpu_pct">13\.0<', row)
    # only their own sandbox links to its page (another member's would be a 404)
    assert reverse("launcher:detail", args=[theirs.public_id]) not in page
    assert reverse("launcher:detail", args=[mine.public_id]) in page
    assert str(student_sandbox.public_id) not in page
    # the organisation's credits: 20 + 100 GPU-hours, a GPU and a small CPU burning
    assert re.search(r'data-stat="balance">120\.00<', page)
    data = live_data(page, "organisation-live-data")
    assert data["ws_path"] == f"/ws/live/organisation/{organisation.public_id}/"
    assert data["account"] == str(organisation.credit_account.public_id)


@pytest.mark.parametrize("who", ["anonymous", "student", "other organisation", "suspended"])
def test_the_organisation_page_is_for_its_active_members_only(client, who, enqueued):
    founder = funded_founder()
    organisation = founder.memberships.get().organisation
    url = reverse("launcher:organisation_live", args=[organisation.public_id])
    if who == "anonymous":
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))
        return
    if who == "student":
        client.force_login(StudentProfileFactory().user)
    elif who == "other organisation":
        client.force_login(MembershipFactory(role=Role.OWNER).user)
    else:  # a member of a suspended organisation
        Organisation.objects.filter(pk=organisation.pk).update(is_active=False)
        client.force_login(founder)
    assert client.get(url).status_code == 404


def test_members_find_the_live_page_from_the_sandboxes_and_organisation_pages(client):
    founder = funded_founder()
    organisation = founder.memberships.get().organisation
    live_url = reverse("launcher:organisation_live", args=[organisation.public_id])
    client.force_login(founder)
    assert live_url in client.get(reverse("launcher:list")).content.decode()
    detail = reverse("organisations:detail", kwargs={"slug": organisation.slug})
    assert live_url in client.get(detail).content.decode()
    client.force_login(funded_student())
    assert "/sandboxes/organisations/" not in client.get(reverse("launcher:list")).content.decode()


# --- The cluster view -----------------------------------------------------------------------


PEOPLE = {
    "student": lambda: StudentProfileFactory().user,
    "startup member": lambda: MembershipFactory(role=Role.MEMBER).user,
}


@pytest.mark.parametrize(
    ("who", "status", "location"),
    [
        ("anonymous", 302, "account_login"),
        ("student", 403, None),
        ("startup member", 403, None),
        ("programme_manager_without_mfa", 302, "mfa_activate_totp"),
        ("programme_manager", 200, None),
    ],
)
def test_the_cluster_view_is_for_programme_managers_with_mfa(
    client, request, who, status, location
):
    if who in PEOPLE:
        client.force_login(PEOPLE[who]())
    elif who != "anonymous":  # the programme managers' fixtures (the second adds MFA)
        client.force_login(request.getfixturevalue(who))
    response = client.get(reverse("dashboard:cluster"))
    assert response.status_code == status
    if location:
        assert response["Location"].startswith(reverse(location))
    page = response.content.decode()
    assert ('data-ws-path="/ws/live/cluster/"' in page) == (status == 200)


def test_the_cluster_view_paints_every_gpu_with_its_holder_and_readings(
    client, programme_manager, enqueued
):
    gpus(2)
    founder = funded_founder()
    organisation = founder.memberships.get().organisation
    sandbox, _run = running(founder, "gpu-1")
    held = GpuAllocation.objects.get(sandbox=sandbox, released_at__isnull=True).device
    DeviceSample.objects.create(
        device=held,
        sandbox=sandbox,
        taken_at=timezone.now(),
        util_pct=64.0,
        memory_used_mib=30000,
        power_w=320.5,
        temperature_c=70,
    )
    client.force_login(programme_manager)

    page = client.get(reverse("dashboard:cluster")).content.decode()

    tiles = re.findall(r'<li class="gpu-tile" data-gpu="([^"]+)"', page)
    assert len(tiles) == 2
    assert held.uuid in tiles
    tile = re.search(rf'<li class="gpu-tile" data-gpu="{held.uuid}".*?</li>', page, re.S).group(0)
    assert 'data-held="yes"' in tile
    assert organisation.legal_name in tile
    assert founder.email in tile or founder.get_full_name() in tile
    assert re.search(r'data-field="util_pct">64\.0<', tile)
    assert 'value="64"' in tile  # the utilisation bar
    assert re.search(r'data-field="memory_used_mib">30000<', tile)
    assert re.search(rf'data-field="memory_total_mib">{held.memory_mib}<', tile)
    assert re.search(r'data-field="power_w">320\.5<', tile)
    assert re.search(r'data-field="temperature_c">70<', tile)
    assert "Healthy" in tile
    assert 'data-field="simulated" hidden' not in tile
    free = next(uuid for uuid in tiles if uuid != held.uuid)
    other = re.search(rf'<li class="gpu-tile" data-gpu="{free}".*?</li>', page, re.S).group(0)
    assert 'data-held="no"' in other
    assert "Free" in other
    # no private link: the holder's sandbox page is its owner's alone
    assert str(sandbox.public_id) not in page


def test_programme_managers_find_the_cluster_view_in_the_navigation(client, programme_manager):
    client.force_login(programme_manager)
    page = client.get(reverse("dashboard:overview")).content.decode()
    assert f'href="{reverse("dashboard:cluster")}"' in page


# --- Nothing from another host --------------------------------------------------------------


def test_the_vendored_chart_library_is_served_from_this_origin(client):
    script = client.get(static("vendor/uplot/uPlot.iife.min.js"))
    style = client.get(static("vendor/uplot/uPlot.min.css"))
    assert script.status_code == 200
    assert b"uPlot" in b"".join(script.streaming_content)
    assert style.status_code == 200
    licence = (REPO / "static/vendor/uplot/LICENSE").read_text()
    assert "MIT" in licence
    version = (REPO / "static/vendor/uplot/VERSION").read_text()
    assert version.startswith("uplot@1.6.")


def test_the_live_pages_load_their_scripts_and_styles_from_this_origin(
    client, programme_manager, enqueued
):
    owner = funded_founder()
    organisation = owner.memberships.get().organisation
    sandbox, _run = running(owner, "cpu-small")
    pages = []
    client.force_login(owner)
    for url in [
        reverse("launcher:detail", args=[sandbox.public_id]),
        reverse("launcher:organisation_live", args=[organisation.public_id]),
        reverse("launcher:list"),
    ]:
        pages.append(client.get(url).content.decode())
    client.force_login(programme_manager)
    pages.append(client.get(reverse("dashboard:cluster")).content.decode())

    assert static("vendor/uplot/uPlot.iife.min.js") in pages[0]
    assert static("vendor/uplot/uPlot.min.css") in pages[0]
    for page in pages:
        assert static("js/live.js") in page
        loaded = re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="([^"]+)"', page)
        assert loaded
        assert all(url.startswith("/") and not url.startswith("//") for url in loaded), loaded
        assert "<script>" not in page  # CSP: no inline script, only json_script data


def test_no_live_template_names_another_host():
    for name in LIVE_TEMPLATES:
        text = (REPO / name).read_text()
        assert not re.search(r'(?:src|href|action)="(?:https?:)?//', text), name
        assert "cdn" not in text.lower(), name
