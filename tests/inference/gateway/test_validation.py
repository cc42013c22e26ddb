"""The bodies the gateway accepts: checked field by field and rebuilt, so the engine never sees
a field it could refuse with its own (internal) error text."""

import pytest

from inference.gateway.errors import GatewayError
from inference.gateway.validation import (
    body_parse,
    chat_parse,
    completion_parse,
    embedding_parse,
)

HELLO = [{"role": "user", "content": "hello"}]


def test_a_chat_body_is_rebuilt_with_only_what_the_engine_may_see():
    parsed = chat_parse(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
                },
                {"role": "assistant", "content": None},
            ],
            "max_completion_tokens": 7,
            "temperature": 0,
            "stop": "\n",
            "user": "someone",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert parsed.upstream == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi there"},
            {"role": "assistant", "content": ""},
        ],
        "temperature": 0,
        "stop": ["\n"],
    }
    assert parsed.max_tokens == 7
    assert parsed.stream
    assert parsed.include_usage
    # the bound counts every byte, the roles and the template's tokens
    assert parsed.prompt_tokens_bound >= len("be brief") + len("hi there")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO}, "model"),
        ({"model": "", "messages": HELLO}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages.[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.[0].content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages.[0].content",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x", "tool_calls": []}]},
            "messages.[0]",
        ),
        ({"model": "m", "messages": HELLO, "max_tokens": True}, "max_tokens"),
        ({"model": "m", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        (
            {"model": "m", "messages": HELLO, "max_tokens": 5, "max_completion_tokens": 5},
            "max_tokens",
        ),
        ({"model": "m", "messages": HELLO, "top_p": 1.5}, "top_p"),
        ({"model": "m", "messages": HELLO, "stream": "yes"}, "stream"),
        (
            {"model": "m", "messages": HELLO, "stream_options": {"include_usage": True}},
            "stream_options",
        ),
        ({"model": "m", "messages": HELLO, "stop": ["a"] * 5}, "stop"),
        ({"model": "m", "messages": HELLO, "tools": []}, "tools"),
        ({"model": "m", "messages": HELLO, "seed": 1.5}, "seed"),
    ],
)
def test_a_bad_chat_body_is_refused_on_its_field(body, param):
    with pytest.raises(GatewayError) as caught:
        chat_parse(body)
    assert caught.value.status == 400
    assert caught.value.param == param


def test_completions_take_one_prompt():
    assert completion_parse({"model": "m", "prompt": ["once"]}).upstream == {"prompt": "once"}
    for prompt in (["a", "b"], [1, 2, 3], "", None):
        with pytest.raises(GatewayError):
            completion_parse({"model": "m", "prompt": prompt})


def test_embeddings_take_strings_and_an_encoding():
    parsed = embedding_parse({"model": "e", "input": "hello", "encoding_format": "base64"})
    assert parsed.upstream == {"input": ["hello"]}
    assert parsed.encoding_format == "base64"
    assert parsed.prompt_tokens_bound == len("hello") + 2
    for bad in (
        {"model": "e", "input": [[1, 2, 3]]},
        {"model": "e", "input": []},
        {"model": "e", "input": ["ok", ""]},
        {"model": "e", "input": "x", "encoding_format": "int8"},
        {"model": "e", "input": "x", "dimensions": 8},
    ):
        with pytest.raises(GatewayError):
            embedding_parse(bad)


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(raw):
    with pytest.raises(GatewayError) as caught:
        body_parse(raw)
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"
