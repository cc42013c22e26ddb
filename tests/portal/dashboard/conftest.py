"""The directory pages' tests use the suspension tests' world: a startup and a student with
credits, usage and running sandboxes, and the programme managers' client."""

from tests.portal.suspension.conftest import (  # noqa: F401 (fixtures)
    hub_tasks,
    people,
    pm_client,
    startup,
    student,
)
