"""The starter models: written deterministically into the store, loaded and served by a real
llama.cpp engine, and (MiniLM) computing what the original model computes.

MiniLM is checked against an independent forward pass in numpy, from the safetensors weights the
package ships and a WordPiece tokenizer written here (the `tokenizers` package is not in the
lock): the engine's embedding must point the same way (cosine >= 0.999, docs/notes/MODELS.md §4).
"""

import json
import math
import unicodedata
import zipfile

import gguf
import httpx
import numpy as np
import pytest
from django.core.management import call_command
from openai import OpenAI
from safetensors.numpy import load

from inference.catalogue.models import ServedModel
from inference.catalogue.starter_models import (
    STARTER_MODELS,
    minilm_zip_path,
    starter_catalogue_seed,
    starter_model_get,
    tiny_chat_write,
)
from inference.catalogue.store import weights_resolve, weights_sha256


def _client(engine) -> OpenAI:
    return OpenAI(base_url=engine.base_url, api_key=engine.api_key, max_retries=0, timeout=30)


def _field(reader: gguf.GGUFReader, key: str):
    return reader.get_field(key).contents()


# --- the files ---------------------------------------------------------------------------------


def test_the_tiny_model_is_the_same_file_for_the_same_seed_and_another_for_another(tmp_path):
    # when
    first = tiny_chat_write(path=tmp_path / "a.gguf", seed=1)
    again = tiny_chat_write(path=tmp_path / "b.gguf", seed=1)
    other = tiny_chat_write(path=tmp_path / "c.gguf", seed=2)

    # then
    assert weights_sha256(first) == weights_sha256(again)
    assert weights_sha256(first) != weights_sha256(other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]


def test_the_tiny_model_has_a_byte_level_bpe_vocabulary_and_a_chatml_template(tmp_path):
    # given
    reader = gguf.GGUFReader(tiny_chat_write(path=tmp_path / "tiny.gguf"))

    # when
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = _field(reader, "tokenizer.ggml.merges")
    types = _field(reader, "tokenizer.ggml.token_type")

    # then
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.context_length") == 2048
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert len(tokens) == len(types) == _field(reader, "llama.vocab_size")
    assert len(tokens) > 256 + 100  # every byte, then the learned merges
    assert all(left + right in tokens for left, right in (m.split(" ") for m in merges))
    assert tokens[-3:] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert types[-3:] == [gguf.TokenType.CONTROL] * 3
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tokens.index("<|im_end|>")
    assert "<|im_start|>" in _field(reader, "tokenizer.chat_template")


def test_minilm_is_converted_with_every_weight_of_the_package(model_store):
    # given
    with zipfile.ZipFile(minilm_zip_path()) as archive:
        originals = load(archive.read("model.safetensors"))
    path = model_store / starter_model_get("minilm-embed").weights_path

    # when
    reader = gguf.GGUFReader(path)

    # then: all but the position-id buffer and the unused pooler head, with the same values
    kept = {n for n in originals if not n.endswith("position_ids") and not n.startswith("pooler")}
    assert len(reader.tensors) == len(kept) == 101
    embeddings = next(t for t in reader.tensors if t.name == "token_embd.weight")
    np.testing.assert_array_equal(
        np.asarray(embeddings.data), originals["embeddings.word_embeddings.weight"]
    )
    assert _field(reader, "bert.pooling_type") == gguf.PoolingType.MEAN
    assert _field(reader, "tokenizer.ggml.token_type_count") == 2


def test_models_prepare_writes_both_models_once(tmp_path, settings):
    # given
    settings.MODEL_STORE_DIR = tmp_path / "store"

    # when
    call_command("models_prepare")
    paths = [weights_resolve(weights_path=m.weights_path) for m in STARTER_MODELS]
    written = [p.stat().st_mtime_ns for p in paths]
    call_command("models_prepare")

    # then: both there, readable by an engine's user, and not rewritten the second time
    assert [p.stat().st_mtime_ns for p in paths] == written
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in paths)
    assert paths[0].parent.stat().st_mode & 0o777 == 0o755
    assert [p.name for p in sorted((tmp_path / "store" / "starter").glob("*.gguf"))] == [
        "minilm-l6-v2.gguf",
        "tiny-chat.gguf",
    ]


def test_models_prepare_rewrites_a_model_an_older_writer_left(tmp_path, settings):
    # given: the store as an older portal left it (another revision; no revision at all)
    settings.MODEL_STORE_DIR = tmp_path / "store"
    call_command("models_prepare")
    starter = tmp_path / "store" / "starter"
    (starter / ".tiny-chat.gguf.revision").write_text("0\n")
    (starter / ".minilm-l6-v2.gguf.revision").unlink()
    (starter / "tiny-chat.gguf").write_bytes(b"an older tiny model")
    (starter / "minilm-l6-v2.gguf").write_bytes(b"an older MiniLM")

    # when
    call_command("models_prepare")

    # then: both written again, and marked with this revision
    tiny, minilm = (starter_model_get(n) for n in ("tiny-chat", "minilm-embed"))
    assert (starter / "tiny-chat.gguf").read_bytes()[:4] == b"GGUF"
    assert (starter / "minilm-l6-v2.gguf").read_bytes()[:4] == b"GGUF"
    assert (starter / ".tiny-chat.gguf.revision").read_text() == f"{tiny.revision}\n"
    assert (starter / ".minilm-l6-v2.gguf.revision").read_text() == f"{minilm.revision}\n"


# --- served by the engine ----------------------------------------------------------------------


def test_the_engine_lists_the_tiny_model_under_its_alias_and_wants_its_key(llama_chat_engine):
    # when
    listed = _client(llama_chat_engine).models.list()
    refused = httpx.get(f"{llama_chat_engine.base_url}/models", timeout=10)
    wrong = httpx.get(
        f"{llama_chat_engine.base_url}/models",
        headers={"Authorization": "Bearer not-the-key"},
        timeout=10,
    )

    # then
    assert [m.id for m in listed.data] == ["tiny-chat"]
    assert refused.status_code == 401
    assert wrong.status_code == 401


def test_the_tiny_model_answers_a_chat_within_its_token_budget(llama_chat_engine):
    # given
    client = _client(llama_chat_engine)
    messages = [{"role": "user", "content": "Say hello to the national cloud."}]

    # when
    answer = client.chat.completions.create(
        model="tiny-chat", messages=messages, max_tokens=8, temperature=0, seed=1
    )
    again = client.chat.completions.create(
        model="tiny-chat", messages=messages, max_tokens=8, temperature=0, seed=1
    )

    # then: llama.cpp sometimes reports one token more than max_tokens (MODELS.md §6)
    assert answer.choices[0].finish_reason in ("length", "stop")
    assert 1 <= answer.usage.completion_tokens <= 8 + 1
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert again.choices[0].message.content == answer.choices[0].message.content


def test_the_tiny_model_streams_a_chat(llama_chat_engine):
    # when
    stream = _client(llama_chat_engine).chat.completions.create(
        model="tiny-chat",
        messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=6,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)

    # then: a role chunk, token chunks, and a last chunk that says why it ended
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert 2 <= len(chunks) <= 6 + 3


def test_the_engine_counts_a_prompt_as_its_usage_does(llama_chat_engine):
    # given: the ChatML the model's template renders for one user message
    client = _client(llama_chat_engine)
    content = "How many tokens is this sentence?"
    rendered = f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    prompt = "The national cloud gives students time on shared GPUs."

    # when
    chat = client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": content}], max_tokens=1
    )
    completion = client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=1)
    counts = [
        httpx.post(
            f"{llama_chat_engine.root_url}/extras/tokenize/count",
            json={"input": text},
            headers={"Authorization": f"Bearer {llama_chat_engine.api_key}"},
            timeout=10,
        ).json()["count"]
        for text in (rendered, prompt)
    ]

    # then
    assert counts == [chat.usage.prompt_tokens, completion.usage.prompt_tokens]
    assert counts[1] < len(prompt.encode())  # the learned merges join bytes into tokens


# --- MiniLM against a reference ----------------------------------------------------------------


def _wordpiece(text: str, vocab: dict[str, int]) -> list[int]:
    """BERT's uncased tokenization: lower case, accents off, split on spaces and punctuation,
    then greedy longest-match WordPiece; [CLS] ... [SEP] around it."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    words, word = [], ""
    for char in text:
        if char.isspace() or unicodedata.category(char).startswith("P"):
            if word:
                words.append(word)
            word = ""
            if not char.isspace():
                words.append(char)
        else:
            word += char
    if word:
        words.append(word)
    ids = [vocab["[CLS]"]]
    for word in words:
        start, pieces = 0, []
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    pieces.append(vocab[piece])
                    break
                end -= 1
            if end == start:
                pieces = [vocab["[UNK]"]]
                break
            start = end
        ids += pieces
    return [*ids, vocab["[SEP]"]]


def _bert_mean_embedding(ids: list[int], weights: dict, config: dict) -> np.ndarray:
    """A BertModel forward pass in float64 numpy, mean-pooled (sentence-transformers' Pooling)."""
    w = {name: array.astype(np.float64) for name, array in weights.items()}
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]

    def norm(x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]

    def dense(x, prefix):
        return x @ w[f"{prefix}.weight"].T + w[f"{prefix}.bias"]

    erf = np.vectorize(math.erf)
    n = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = norm(x, "embeddings.LayerNorm")
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}"
        q, k, v = (
            dense(x, f"{p}.attention.self.{m}").reshape(n, heads, -1).transpose(1, 0, 2)
            for m in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = (scores / scores.sum(-1, keepdims=True)) @ v
        attention = attention.transpose(1, 0, 2).reshape(n, -1)
        x = norm(
            x + dense(attention, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm"
        )
        hidden = dense(x, f"{p}.intermediate.dense")
        hidden = 0.5 * hidden * (1 + erf(hidden / math.sqrt(2)))  # exact GELU, as BERT's
        x = norm(x + dense(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    return x.mean(0)


def _cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


SENTENCES = [
    "A student trains a model on the national GPU cloud.",
    "Students use the country's shared GPUs to train their models.",
    "The recipe needs two cups of flour and a pinch of salt.",
]


def test_minilm_served_by_the_engine_agrees_with_a_numpy_forward_pass(llama_embedding_engine):
    # given: the reference, from the package's own weights and tokenizer vocabulary
    with zipfile.ZipFile(minilm_zip_path()) as archive:
        weights = load(archive.read("model.safetensors"))
        config = json.loads(archive.read("config.json"))
        vocab = json.loads(archive.read("tokenizer.json"))["model"]["vocab"]
    token_ids = [_wordpiece(s, vocab) for s in SENTENCES]
    references = [_bert_mean_embedding(ids, weights, config) for ids in token_ids]

    # when
    served = _client(llama_embedding_engine).embeddings.create(
        model="minilm-embed", input=SENTENCES, encoding_format="float"
    )
    vectors = [item.embedding for item in sorted(served.data, key=lambda d: d.index)]

    # then: the same direction for each sentence, the same tokens counted
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert min(_cosine(v, r) for v, r in zip(vectors, references, strict=True)) >= 0.999
    assert served.usage.prompt_tokens == sum(len(ids) for ids in token_ids)
    # and it means something: the two sentences about GPUs are closer than GPUs and flour
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2]) + 0.3


# --- the catalogue -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_catalogue_seed_creates_both_rows_once_with_their_weights_digest(model_store_settings):
    # when
    first = starter_catalogue_seed()
    again = starter_catalogue_seed()

    # then
    assert [m.name for m in first] == ["tiny-chat", "minilm-embed"]
    assert [m.pk for m in again] == [m.pk for m in first]
    assert ServedModel.objects.count() == 2
    tiny = ServedModel.objects.get(name="tiny-chat")
    assert tiny.engine == ServedModel.Engine.LLAMA_CPP
    assert tiny.task == ServedModel.Task.CHAT
    assert tiny.context_length == 512
    assert tiny.visibility == ServedModel.Visibility.ALL
    assert tiny.weights_sha256 == weights_sha256(model_store_settings / "starter/tiny-chat.gguf")
    assert ServedModel.objects.get(name="minilm-embed").output_price == 0


@pytest.mark.django_db
def test_the_catalogue_seed_leaves_a_programme_managers_changes_alone(model_store_settings):
    # given
    starter_catalogue_seed()
    ServedModel.objects.filter(name="tiny-chat").update(input_price="2.500", is_active=False)

    # when
    starter_catalogue_seed()

    # then
    tiny = ServedModel.objects.get(name="tiny-chat")
    assert str(tiny.input_price) == "2.500"
    assert tiny.is_active is False
