"""The live transport of the portal: every live message goes out through here. It knows the
group names and how to send; it builds no message (each domain builds its own: the launcher's
sandbox messages in launcher/messages.py, metering's in metering/messages.py) and imports none.

Messages are small versioned JSON objects, documented in MESSAGES.md beside this file. They are
sent after the surrounding transaction commits, so nobody sees a state the database then rolls
back, and all the messages of one call go out in ONE `async_to_sync` call: in a sync worker each
such call runs a fresh event loop, and channels-redis opens (and closes) a connection pool per
loop, so a metering tick that sent message by message would reconnect to Redis for each one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import translation

logger = logging.getLogger(__name__)

VERSION = 1
CLUSTER_GROUP = "live.cluster"
# What the consumer's handler is called: LiveConsumer.portal_message.
EVENT_TYPE = "portal.message"
# The channel layer's rule for group names (channels/layers.py); checked here, before the send,
# so that one bad name cannot stop the rest of a batch.
_GROUP_NAME = re.compile(r"[a-zA-Z\d\-_.]{1,99}")
# A message built once for readers of several languages carries its words in each under this
# key, `{field: {language: text}}`; the consumer puts the connection's into the fields and
# drops the key (`localized`), so clients never see it.
IN_EACH_LANGUAGE = "in_each_language"


def user_group(user_id: int) -> str:
    """A person's own stream: their sandboxes, their samples, a student's balance."""
    return f"live.user.{user_id}"


def organisation_group(organisation_id: int) -> str:
    """Every member of an organisation (and its service keys): all its members' sandboxes and
    the organisation's balance."""
    return f"live.org.{organisation_id}"


def sandbox_groups(sandbox) -> list[str]:
    """Who watches a sandbox: its owner and, when an organisation pays for it, that
    organisation's members."""
    groups = [user_group(sandbox.user_id)]
    if sandbox.organisation_id:
        groups.append(organisation_group(sandbox.organisation_id))
    return groups


def in_each_language(render) -> dict[str, str]:
    """`render()` in each of the portal's languages: `{language: text}`, for IN_EACH_LANGUAGE."""
    texts = {}
    for language, _name in settings.LANGUAGES:
        with translation.override(language):
            texts[language] = str(render())
    return texts


def localized(message: dict, language: str) -> dict:
    """The message as a reader of `language` gets it: each field given IN_EACH_LANGUAGE in
    their language (left as it is when theirs is missing), and the key itself dropped. The
    message is not changed: the one object may be delivered to several sockets."""
    texts = message.get(IN_EACH_LANGUAGE)
    if texts is None:
        return message
    reader = {key: value for key, value in message.items() if key != IN_EACH_LANGUAGE}
    for name, by_language in texts.items():
        if language in by_language:
            reader[name] = by_language[language]
    return reader


def _prepared(message: dict) -> dict:
    """The message as it travels: `type` first, `v` set, and plain JSON values only (datetimes
    become ISO 8601 with Z, Decimals and UUIDs strings), which the Redis layer can carry."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("a live message is a dict with a 'type'")
    body = {key: value for key, value in message.items() if key not in ("type", "v")}
    return {
        "type": message["type"],
        "v": VERSION,
        **json.loads(json.dumps(body, cls=DjangoJSONEncoder)),
    }


def send_after_commit(messages: Iterable[tuple[str, dict]]) -> int:
    """Queue `(group, message)` pairs to be sent when the current transaction commits (at once
    when none is open); a rollback sends nothing. Returns how many were queued.

    Never raises: a lost live update must not fail a launch, a stop or a metering tick. A
    malformed message (no `type`, a value JSON cannot carry) is logged and left out; a failure
    to send is logged.
    """
    batch = []
    for item in messages:
        try:
            group, message = item
            if not isinstance(group, str) or not _GROUP_NAME.fullmatch(group):
                raise ValueError(f"not a group name: {group!r}")
            batch.append((group, _prepared(message)))
        except (TypeError, ValueError):
            logger.exception("live message left out: %r", item)
    if batch:
        transaction.on_commit(lambda: _send_now(batch))
    return len(batch)


def _send_now(batch: list[tuple[str, dict]]) -> None:
    try:
        layer = get_channel_layer()
        if layer is None:
            return

        async def send_all() -> None:
            if not await _publish_pipelined(layer, batch):
                for group, message in batch:
                    await layer.group_send(group, {"type": EVENT_TYPE, "message": message})

        async_to_sync(send_all)()
    except Exception:  # Redis away, or called from an event loop: log, never fail the caller
        logger.exception("could not broadcast %d live message(s)", len(batch))


async def _publish_pipelined(layer, batch: list[tuple[str, dict]]) -> bool:
    """On the Redis Pub/Sub layer, PUBLISH a whole batch in one pipeline: one round trip for a
    tick's thousand messages instead of one each (the layer's group_send takes a lock and waits
    for each). Uses the layer's own group naming and serializer, so consumers read the messages
    exactly as if group_send had sent them. False (nothing sent) on any other layer, or if the
    layer's internals are not what this expects; the caller then sends one by one."""
    try:
        # Inside the try: any other channel layer works without channels_redis.
        from channels_redis.pubsub import RedisPubSubChannelLayer  # noqa: PLC0415 - optional

        if not isinstance(layer, RedisPubSubChannelLayer):
            return False
        inner = layer._get_layer()
        if len(inner._shards) != 1:
            return False
        shard = inner._shards[0]
        shard._ensure_redis()
        redis = shard._redis
    except (ImportError, AttributeError):
        return False
    async with redis.pipeline(transaction=False) as pipe:
        for group, message in batch:
            pipe.publish(
                inner._get_group_channel_name(group),
                layer.serialize({"type": EVENT_TYPE, "message": message}),
            )
        await pipe.execute()
    return True
