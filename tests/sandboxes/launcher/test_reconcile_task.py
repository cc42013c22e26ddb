"""The reconciliation task while the hub is not up (the first seconds of `make run`, a hub
restart): one calm line, no traceback, nothing changed."""

from __future__ import annotations

import logging

import pytest

from sandboxes.launcher.models import Sandbox
from sandboxes.launcher.tasks import sandboxes_reconcile_task
from tests.sandboxes.metering.helpers import running

from .helpers import funded_student, gpus


@pytest.mark.django_db
def test_without_a_hub_reconciliation_waits_calmly_and_changes_nothing(settings, caplog):
    # given a running sandbox, and a hub that does not answer (nothing listens on port 1)
    settings.HUB_API_URL = "http://127.0.0.1:1/hub/api"
    gpus(1)
    sandbox, _run = running(funded_student(), "gpu-1")

    # when beat runs the reconciliation
    with caplog.at_level(logging.INFO, logger="sandboxes.launcher"):
        result = sandboxes_reconcile_task()

    # then it says so in one line, without a traceback, and touches no sandbox
    assert result == {"skipped": "hub unavailable"}
    lines = [r for r in caplog.records if r.name.startswith("sandboxes.launcher")]
    assert [r.levelno for r in lines] == [logging.WARNING]
    assert "waits for the hub" in lines[0].getMessage()
    assert lines[0].exc_info is None
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.RUNNING
