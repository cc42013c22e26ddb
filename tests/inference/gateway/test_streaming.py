"""The stream normaliser, fed the lines llama.cpp and vLLM send (MODELS.md §6-8)."""

import json

from inference.gateway.streaming import CHAT, COMPLETIONS, StreamNormaliser


def _events(chunks: list[bytes]) -> list[dict]:
    out = []
    for chunk in chunks:
        assert chunk.startswith(b"data: ")
        assert chunk.endswith(b"\n\n")
        out.append(json.loads(chunk[6:]))
    return out


def _feed(normaliser: StreamNormaliser, lines: list[str]) -> list[bytes]:
    out = []
    for line in lines:
        out += normaliser.feed(line)
    return out + normaliser.end()


def _sse(payload) -> list[str]:
    return [f"data: {json.dumps(payload) if not isinstance(payload, str) else payload}", ""]


def _llama_chat_stream(tokens: list[str]) -> list[str]:
    """What llama-cpp-python 0.3.36 sends: a role chunk, a chunk per token (some empty), a
    last chunk with the finish reason, [DONE]; pings between; no usage anywhere."""
    base = {
        "id": "chatcmpl-engine",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "whatever-was-asked",
    }
    lines = _sse(
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    )
    lines += [": ping - 2026-12-03", ""]
    for token in tokens:
        lines += _sse(
            {**base, "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}]}
        )
    lines += _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    return lines + _sse("[DONE]")


def test_llama_chat_stream_counts_one_token_per_content_chunk_and_renames_everything():
    # given a stream of 5 token chunks, one of them empty (a held-back multi-byte character)
    normaliser = StreamNormaliser(
        request_id="chatcmpl-ours", model_name="tiny-chat", endpoint=CHAT, include_usage=False
    )
    # when it is fed through
    events = _events(_feed(normaliser, _llama_chat_stream(["He", "l", "", "lo", "!"])))
    # then 7 chunks reach the client (role, 5 tokens, finish), all under our id and name
    assert len(events) == 7
    assert {e["id"] for e in events} == {"chatcmpl-ours"}
    assert {e["model"] for e in events} == {"tiny-chat"}
    assert all("usage" not in e for e in events)
    assert normaliser.done
    assert not normaliser.failed
    # and the usage is made from the count: 5 completion tokens, the prompt as given
    assert normaliser.usage(prompt_tokens=11) == {
        "prompt_tokens": 11,
        "completion_tokens": 5,
        "total_tokens": 16,
    }


def test_the_engines_usage_chunk_is_used_and_kept_from_a_client_that_did_not_ask():
    # given vLLM's form: token chunks, then a usage chunk with no choices, then [DONE]
    normaliser = StreamNormaliser(
        request_id="r", model_name="m", endpoint=CHAT, include_usage=False
    )
    lines = _llama_chat_stream(["a", "b"])[:-2]
    lines += _sse(
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42},
        }
    )
    lines += _sse("[DONE]")
    events = _events(_feed(normaliser, lines))
    assert all(e["choices"] for e in events)  # the usage chunk was not forwarded
    assert normaliser.usage(prompt_tokens=999) == {
        "prompt_tokens": 40,
        "completion_tokens": 2,
        "total_tokens": 42,
    }


def test_a_client_that_asked_for_usage_gets_null_usage_on_chunks_and_a_usage_event():
    normaliser = StreamNormaliser(request_id="r", model_name="m", endpoint=CHAT, include_usage=True)
    events = _events(_feed(normaliser, _llama_chat_stream(["a"])))
    assert all(e["usage"] is None for e in events)
    last = json.loads(normaliser.usage_event(normaliser.usage(prompt_tokens=3))[6:])
    assert last["choices"] == []
    assert last["id"] == "r"
    assert last["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_continuous_usage_takes_the_last_running_total():
    normaliser = StreamNormaliser(
        request_id="r", model_name="m", endpoint=CHAT, include_usage=False
    )
    lines = []
    for n in (1, 2, 3):
        lines += _sse(
            {
                "choices": [{"index": 0, "delta": {"content": "x"}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": n},
            }
        )
    lines += _sse("[DONE]")
    _feed(normaliser, lines)
    assert normaliser.usage(prompt_tokens=0)["completion_tokens"] == 3


def test_a_stream_that_stops_without_done_is_not_over_cleanly():
    # given llama.cpp's engine dying after two tokens
    normaliser = StreamNormaliser(
        request_id="r", model_name="m", endpoint=CHAT, include_usage=False
    )
    lines = _llama_chat_stream(["a", "b", "c"])[:8]  # role, ping, two tokens
    events = _feed(normaliser, lines)
    assert len(events) == 3
    assert not normaliser.done
    # and what was produced is what gets charged
    assert normaliser.usage(prompt_tokens=4)["completion_tokens"] == 2


def test_an_error_event_ends_the_stream_as_failed_and_is_not_forwarded():
    normaliser = StreamNormaliser(
        request_id="r", model_name="m", endpoint=CHAT, include_usage=False
    )
    lines = _llama_chat_stream(["a"])[:4]
    lines += _sse(
        {"error": {"message": "engine internals /srv/x.py", "type": "BadRequestError", "code": 400}}
    )
    lines += _sse("[DONE]")
    out = _feed(normaliser, lines)
    assert normaliser.failed
    assert not normaliser.done
    assert b"engine internals" not in b"".join(out)


def test_garbage_from_the_engine_is_a_failure():
    normaliser = StreamNormaliser(
        request_id="r", model_name="m", endpoint=CHAT, include_usage=False
    )
    _feed(normaliser, ["data: {not json", ""])
    assert normaliser.failed


def test_completions_count_text_chunks_but_not_the_empty_finishing_one():
    normaliser = StreamNormaliser(
        request_id="cmpl-1",
        model_name="m",
        endpoint=COMPLETIONS,
        include_usage=False,
        keep_text=True,
    )
    lines = []
    for text in ("a", "", "b"):
        lines += _sse(
            {
                "id": "e",
                "object": "text_completion",
                "created": 1,
                "model": "x",
                "choices": [{"index": 0, "text": text, "finish_reason": None}],
            }
        )
    lines += _sse(
        {
            "id": "e",
            "object": "text_completion",
            "created": 1,
            "model": "x",
            "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
        }
    )
    lines += _sse("[DONE]")
    events = _events(_feed(normaliser, lines))
    assert len(events) == 4
    assert normaliser.token_chunks == 3
    assert normaliser.text == "ab"


def test_an_event_split_over_several_data_lines_is_joined():
    normaliser = StreamNormaliser(
        request_id="r", model_name="m", endpoint=CHAT, include_usage=False
    )
    payload = json.dumps({"choices": [{"index": 0, "delta": {"content": "x"}}]}, indent=1)
    lines = [f"data: {line}" for line in payload.split("\n")] + [""] + _sse("[DONE]")
    assert len(_feed(normaliser, lines)) == 1
    assert normaliser.token_chunks == 1
    assert normaliser.done
