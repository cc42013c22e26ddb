"""The deployment's model store (settings.MODEL_STORE_DIR): the one folder the weights of every
catalogue entry live in. Engines get it mounted read-only; nothing is fetched at run time.

A catalogue entry names its weights by a path inside the store (`ServedModel.weights_path`).
That path is written by a programme manager and ends up as a bind mount on a GPU host, so it is
resolved here, once, with every way out of the store refused: an absolute path, `..`, and a
symbolic link (anywhere along the path) that points outside.
"""

import hashlib
from pathlib import Path, PurePosixPath

from django.conf import settings

_CHUNK_BYTES = 1024 * 1024


def store_root() -> Path:
    """The model store's folder, with its own symbolic links resolved (it may itself be a link
    to a larger disk)."""
    return Path(settings.MODEL_STORE_DIR).resolve()


def weights_resolve(*, weights_path: str) -> Path:
    """The absolute, link-free path of `weights_path` inside the model store.

    Raises ValueError when the path is empty, absolute, has `.`/`..` or empty segments, holds a
    NUL or a backslash, or resolves (through symbolic links) to anything outside the store. The
    path need not exist yet: a missing file is the caller's error to report.
    """
    if not isinstance(weights_path, str) or not weights_path.strip():
        raise ValueError("The weights path is empty.")
    if "\x00" in weights_path or "\\" in weights_path:
        raise ValueError("The weights path holds a character a path in the store cannot have.")
    pure = PurePosixPath(weights_path)
    if pure.is_absolute():
        raise ValueError("The weights path must be relative to the model store, not absolute.")
    segments = weights_path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError("The weights path may not have empty, '.' or '..' segments.")
    root = store_root()
    # resolve() follows every symbolic link on the way, so a link anywhere in the path that
    # points out of the store lands outside `root` and is refused below.
    try:
        resolved = (root / pure).resolve()
    except (OSError, RuntimeError) as error:  # RuntimeError: a loop of symbolic links
        raise ValueError("The weights path cannot be resolved in the model store.") from error
    if resolved == root or not resolved.is_relative_to(root):
        raise ValueError("The weights path leads outside the model store.")
    return resolved


def weights_sha256(path: Path) -> str:
    """The SHA-256 of a weights file, in hex; for a folder (a Hugging Face checkpoint), the
    SHA-256 of its files' `<sha256>  <relative path>` lines sorted by path, as `sha256sum`
    would print them."""
    path = Path(path)
    if path.is_dir():
        lines = [
            f"{_file_sha256(child)}  {child.relative_to(path).as_posix()}\n"
            for child in sorted(path.rglob("*"), key=lambda p: p.relative_to(path).as_posix())
            if child.is_file()
        ]
        return hashlib.sha256("".join(lines).encode()).hexdigest()
    return _file_sha256(path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
