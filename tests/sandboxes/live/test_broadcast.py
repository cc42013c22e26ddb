"""send_after_commit: after the commit, nothing on a rollback, one async_to_sync call per batch,
plain JSON on the wire, and never an exception for the caller."""

import datetime as dt
import decimal
import uuid

import pytest
from django.db import transaction

from sandboxes.launcher.status_messages import MESSAGES
from sandboxes.live import broadcast
from sandboxes.live.broadcast import organisation_group, send_after_commit, user_group


class FakeLayer:
    def __init__(self, fail: bool = False):
        self.sent = []
        self.fail = fail

    async def group_send(self, group, message):
        if self.fail:
            raise ConnectionError("redis is away")
        self.sent.append((group, message))


@pytest.fixture
def layer(monkeypatch):
    fake = FakeLayer()
    monkeypatch.setattr(broadcast, "get_channel_layer", lambda: fake)
    return fake


@pytest.fixture
def loops(monkeypatch):
    calls = []
    real = broadcast.async_to_sync
    monkeypatch.setattr(broadcast, "async_to_sync", lambda f: calls.append(f) or real(f))
    return calls


def test_group_names():
    assert user_group(7) == "live.user.7"
    assert organisation_group(3) == "live.org.3"
    assert broadcast.CLUSTER_GROUP == "live.cluster"


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_everything_goes_at_once_in_one_call(layer, loops):
    messages = [(user_group(n), {"type": "usage.sample", "n": n}) for n in range(50)]

    assert send_after_commit(messages) == 50

    assert len(loops) == 1
    assert layer.sent == [
        (
            user_group(n),
            {"type": "portal.message", "message": {"type": "usage.sample", "v": 1, "n": n}},
        )
        for n in range(50)
    ]


@pytest.mark.django_db(transaction=True)
def test_a_rollback_sends_nothing_and_a_commit_sends_after_it(layer, loops):
    with transaction.atomic():
        send_after_commit([(user_group(1), {"type": "sandbox.status"})])
        transaction.set_rollback(True)
    assert layer.sent == []
    assert loops == []

    with transaction.atomic():
        send_after_commit([(user_group(1), {"type": "sandbox.status"})])
        assert layer.sent == []  # not before the commit
    assert [group for group, _ in layer.sent] == [user_group(1)]


def test_an_empty_batch_sends_nothing(layer, loops):
    assert send_after_commit([]) == 0
    assert loops == []


@pytest.mark.django_db(transaction=True)
def test_values_become_plain_json_and_v_is_always_1(layer):
    at = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    public_id = uuid.uuid4()
    send_after_commit(
        [
            (
                "live.cluster",
                {
                    "v": 99,
                    "type": "credits.balance",
                    "at": at,
                    "account": public_id,
                    "balance_gpu_hours": decimal.Decimal("12.34"),
                },
            )
        ]
    )
    message = layer.sent[0][1]["message"]
    assert list(message)[:2] == ["type", "v"]
    assert message == {
        "type": "credits.balance",
        "v": 1,
        "at": "2025-01-02T03:04:05Z",
        "account": str(public_id),
        "balance_gpu_hours": "12.34",
    }


@pytest.mark.django_db(transaction=True)
def test_malformed_messages_are_left_out_and_logged_never_raised(layer, caplog):
    queued = send_after_commit(
        [
            (user_group(1), {"no": "type"}),
            ("not a group name!", {"type": "usage.sample"}),
            (user_group(1), {"type": "usage.sample", "bad": object()}),
            (user_group(2), {"type": "usage.sample"}),
        ]
    )
    assert queued == 1
    assert [group for group, _ in layer.sent] == [user_group(2)]
    assert caplog.text.count("live message left out") == 3


@pytest.mark.django_db(transaction=True)
def test_a_failed_send_is_logged_not_raised(monkeypatch, caplog):
    monkeypatch.setattr(broadcast, "get_channel_layer", lambda: FakeLayer(fail=True))
    assert send_after_commit([(user_group(1), {"type": "sandbox.status"})]) == 1
    assert "could not broadcast 1 live message" in caplog.text


def test_words_in_each_language_become_the_readers_and_the_key_is_dropped():
    message = {
        "type": "sandbox.status",
        "message": "Ready.",
        broadcast.IN_EACH_LANGUAGE: {
            "message": broadcast.in_each_language(lambda: MESSAGES["ready"])
        },
    }

    assert broadcast.localized(message, "ur") == {"type": "sandbox.status", "message": "تیار۔"}
    assert broadcast.localized(message, "en") == {"type": "sandbox.status", "message": "Ready."}
    # a language the message lacks keeps the field as sent; the message itself is not changed
    assert broadcast.localized(message, "de") == {"type": "sandbox.status", "message": "Ready."}
    assert broadcast.IN_EACH_LANGUAGE in message
    plain = {"type": "usage.sample", "cpu_pct": 1.0}
    assert broadcast.localized(plain, "ur") is plain
