"""Create the demo accounts: `manage.py seed_demo`. Safe to run again; refuses production.

It seeds people, an organisation, a university and a student's allowance, and the model API's
two starter models (a tiny chat model and an embedding model, written into the model store by
`manage.py models_prepare`) deployed on CPU, so it lives in the programme dashboard, a floor
above every app it fills."""

import datetime as dt

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from inference.catalogue.starter_models import starter_catalogue_seed
from inference.deployments.models import Deployment
from inference.deployments.services import deployment_create
from portal.credits.models import CreditGrant
from portal.credits.services import account_for_organisation, grant_issue
from portal.onboarding.allowance import student_allowance_grant
from portal.onboarding.models import StudentProfile, University, UniversityDomain
from portal.organisations.models import Organisation
from portal.organisations.services import organisation_create
from portal.users.models import User
from portal.users.services import programme_manager_grant

DEMO_ACCOUNTS = {
    "pm": ("pm@demo.local", "Programme Manager", "demo-pm-gpu-2026"),
    "founder": ("founder@demo.local", "Ayesha Founder", "demo-founder-gpu-2026"),
    "student": ("student@demo.local", "Bilal Student", "demo-student-gpu-2026"),
}
DEMO_ORGANISATION_GPU_HOURS = 20
DEMO_ORGANISATION = {
    "legal_name": "Demo AI Labs",
    "secp_registration_number": "0000001",
    "ntn": "0000001-1",
    "sector": "software",
    "city": "Lahore",
    "province": "punjab",
    "website": "https://demo.local",
    "team_size": "2-5",
    "data_sensitivity": "internal",
}


class Command(BaseCommand):
    help = "Create (or refresh) the demo programme manager, startup founder and student."

    def handle(self, *args, **options):
        if not settings.DEMO_SEED_ALLOWED:
            raise CommandError("seed_demo refuses to run with production settings.")
        with transaction.atomic():
            pm = self._user("pm")
            if not pm.groups.filter(name=settings.PROGRAMME_MANAGERS_GROUP).exists():
                programme_manager_grant(user=pm, acting_user=None)
            founder = self._user("founder")
            organisation = Organisation.objects.filter(
                secp_registration_number=DEMO_ORGANISATION["secp_registration_number"]
            ).first() or organisation_create(owner=founder, **DEMO_ORGANISATION)
            # Demo credits for the startup, so the founder can launch a sandbox and call the
            # model API at once (a real startup applies and a programme manager decides).
            # Idempotent by key.
            grant_issue(
                account=account_for_organisation(organisation),
                credit_seconds=DEMO_ORGANISATION_GPU_HOURS * 3600,
                rate_pkr_per_gpu_hour=settings.CREDITS_DEFAULT_RATE_PKR_PER_GPU_HOUR,
                expires_at=timezone.now() + dt.timedelta(days=365),
                source=CreditGrant.Source.ADJUSTMENT,
                idempotency_key="demo:organisation-credits",
                acting_user=pm,
                note="Demo credits (seed_demo)",
            )
            student = self._user("student")
            university, _ = University.objects.get_or_create(
                name="National Demo University", defaults={"short_name": "NDU", "city": "Islamabad"}
            )
            UniversityDomain.objects.get_or_create(
                domain="demo.local", defaults={"university": university}
            )
            StudentProfile.objects.get_or_create(
                user=student,
                defaults={
                    "route": StudentProfile.Route.EMAIL_DOMAIN,
                    "university": university,
                    "programme": "BS Artificial Intelligence",
                    "expected_graduation_year": 2028,
                },
            )
            # What onboarding does for a real student (there through Celery): this month's
            # allowance, so the demo student can launch a sandbox at once. Idempotent by key.
            student_allowance_grant(user=student)
            # The model API's starter models, each on one CPU replica: the worker starts their
            # engine containers after the commit, so /llm/v1 and the playground answer within
            # seconds of `make run`, with no GPU.
            for model in starter_catalogue_seed():
                if not Deployment.objects.filter(model=model, state="active").exists():
                    deployment_create(model=model, gpus_per_replica=0, replicas=1, acting_user=pm)
        self.stdout.write(self.style.SUCCESS("Demo accounts (e-mail / password):"))
        for key, (email, _name, password) in DEMO_ACCOUNTS.items():
            self.stdout.write(f"  {key:<8} {email:<22} {password}")
        self.stdout.write(
            "The programme manager sets up two-factor authentication (TOTP) on first sign-in."
        )

    def _user(self, key: str) -> User:
        """The demo user with its known password and a verified address."""
        email, name, password = DEMO_ACCOUNTS[key]
        user = User.objects.filter(email=email).first() or User.objects.create_user(
            email=email, name=name
        )
        user.set_password(password)
        user.save(update_fields=["password"])
        EmailAddress.objects.update_or_create(
            user=user, email=email, defaults={"verified": True, "primary": True}
        )
        return user
