"""Shared set-ups for the sandbox tests: funded people, the seeded catalogue, simulated GPUs."""

import importlib

from django.apps import apps as django_apps
from django.test import TestCase

from portal.credits.services import account_for_organisation, account_for_student
from portal.organisations.models import Role
from sandboxes.gpus.backends import SimulatedBackend
from sandboxes.gpus.services import inventory_sync
from sandboxes.jobs import registered_task
from sandboxes.launcher.models import ResourceProfile, SandboxImage
from tests.factories import MembershipFactory, StudentProfileFactory
from tests.portal.credits.helpers import lot

HOUR = 3600


class TaskRecorder:
    """Stands in for a Celery task's `delay` and `apply_async`: each call is recorded as
    (name, args, kwargs), options such as `countdown` among the kwargs."""

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def delay(self, *args, **kwargs):
        self.calls.append((self.name, args, kwargs))

    def apply_async(self, args=(), kwargs=None, **options):
        self.calls.append((self.name, tuple(args), {**(kwargs or {}), **options}))


def tasks_recorded(monkeypatch, calls: list, *names: str) -> list:
    """Record, instead of running, the launcher's Celery tasks `names` (their registered names
    without "launcher."; the calls are recorded under them). The services enqueue tasks by their
    registered names (sandboxes/jobs.py), so the registered task itself is patched."""
    for name in names:
        task = registered_task(f"launcher.{name}")
        recorder = TaskRecorder(name, calls)
        monkeypatch.setattr(task, "delay", recorder.delay)
        monkeypatch.setattr(task, "apply_async", recorder.apply_async)
    return calls


def committed(service, **kwargs):
    """Call a service and run what it left for after the commit (the test's transaction never
    commits): Celery enqueues, queue advances, broadcasts."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return service(**kwargs)


def gpus(count: int = 2) -> None:
    inventory_sync(backend=SimulatedBackend(f"{count}xH100-80GB", host="test-host"))


def funded_student(hours: float = 10):
    student = StudentProfileFactory().user
    lot(account_for_student(student), int(hours * HOUR))
    return student


def funded_founder(hours: float = 100, organisation=None):
    if organisation is None:
        membership = MembershipFactory(role=Role.OWNER)
    else:  # a colleague in an existing organisation
        membership = MembershipFactory(role=Role.MEMBER, organisation=organisation)
    lot(account_for_organisation(membership.organisation), int(hours * HOUR))
    return membership.user


def catalogue() -> None:
    """The seeded catalogue, again if a test that commits (transaction=True) flushed it."""
    if not SandboxImage.objects.exists():
        seed = importlib.import_module("sandboxes.launcher.migrations.0002_seed_catalogue")
        seed.seed(django_apps, None)


def image(slug: str = "python-cpu") -> SandboxImage:
    catalogue()
    return SandboxImage.objects.get(slug=slug)


def profile(slug: str) -> ResourceProfile:
    catalogue()
    return ResourceProfile.objects.get(slug=slug)
