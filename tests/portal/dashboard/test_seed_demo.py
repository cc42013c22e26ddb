import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management import CommandError, call_command

from inference.deployments.models import Deployment, Replica
from portal.credits.models import CreditGrant
from portal.onboarding.models import StudentProfile
from portal.organisations.models import Membership, Organisation, Role
from portal.users.models import User
from portal.users.selectors import user_is_programme_manager

pytestmark = pytest.mark.django_db


def test_seed_demo_is_idempotent_and_prints_working_passwords(capsys, client):
    call_command("seed_demo")
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert User.objects.filter(email__endswith="@demo.local").count() == 3
    assert Organisation.objects.filter(legal_name="Demo AI Labs").count() == 1
    organisation = Organisation.objects.get(legal_name="Demo AI Labs")
    founder = User.objects.get(email="founder@demo.local")
    assert Membership.objects.get(user=founder).role == Role.OWNER
    assert user_is_programme_manager(user=User.objects.get(email="pm@demo.local"))
    student = StudentProfile.objects.get(user__email="student@demo.local")
    assert student.university is not None
    # the demo student has this month's allowance once, however often the seed runs
    allowance = CreditGrant.objects.filter(account__user=student.user)
    assert allowance.count() == 1
    assert allowance.get().amount == settings.STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS * 3600
    # the demo startup has its demo credits once, so the founder can launch and call models
    organisation_grants = CreditGrant.objects.filter(account__organisation=organisation)
    assert [g.amount for g in organisation_grants] == [20 * 3600]
    assert EmailAddress.objects.filter(email__endswith="@demo.local", verified=True).count() == 3
    # the model API's two starter models, each deployed once on one CPU replica
    deployments = Deployment.objects.filter(state="active").select_related("model")
    assert sorted(d.model.name for d in deployments) == ["minilm-embed", "tiny-chat"]
    assert {(d.gpus_per_replica, d.replicas_wanted) for d in deployments} == {(0, 1)}
    assert Replica.objects.count() == 2
    # the printed password signs the founder in
    password = next(line.split()[-1] for line in out.splitlines() if "founder@demo.local" in line)
    assert client.login(email="founder@demo.local", password=password)


def test_seed_demo_refuses_production(settings):
    settings.DEMO_SEED_ALLOWED = False
    with pytest.raises(CommandError, match="production"):
        call_command("seed_demo")
    assert not User.objects.exists()
