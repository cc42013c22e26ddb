"""Two programme managers add models whose names differ only in case at the same moment: the
database decides, exactly one is added, the other gets the name's error."""

import threading

import pytest
from django.db import connection

from inference.catalogue.models import ServedModel
from inference.catalogue.services import served_model_create
from portal.core.exceptions import ApplicationError

from .conftest import model_fields


@pytest.mark.django_db(transaction=True)
def test_names_differing_only_in_case_race_and_one_wins(store, programme_manager):
    if connection.vendor != "postgresql":
        pytest.skip("the race needs PostgreSQL's concurrent transactions")
    # given two threads ready to add "Qalam-Chat" and "qalam-chat" at once
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def add(name: str) -> None:
        try:
            start.wait(timeout=10)
            served_model_create(acting_user=programme_manager, **model_fields(name=name))
            outcomes.append("added")
        except ApplicationError as error:
            outcomes.append(f"refused:{error.field}")
        finally:
            connection.close()

    threads = [threading.Thread(target=add, args=(name,)) for name in ("Qalam-Chat", "qalam-chat")]

    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # then
    assert sorted(outcomes) == ["added", "refused:name"]
    assert ServedModel.objects.filter(name__iexact="qalam-chat").count() == 1
