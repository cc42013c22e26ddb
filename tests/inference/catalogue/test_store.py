"""The model store: a catalogue entry's weights path resolves inside MODEL_STORE_DIR or not at
all. The path is typed by a programme manager and becomes a bind mount on a GPU host, so every
way out of the store is played here as an attacker would."""

import hashlib

import pytest

from inference.catalogue.store import store_root, weights_resolve, weights_sha256


@pytest.fixture
def store(tmp_path, settings):
    root = tmp_path / "store"
    (root / "starter").mkdir(parents=True)
    (root / "starter" / "tiny-chat.gguf").write_bytes(b"GGUF tiny")
    settings.MODEL_STORE_DIR = root
    return root


@pytest.fixture
def outside(tmp_path):
    """A file and a folder beside the store, that no weights path may reach."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "passwd").write_text("root:x:0:0")
    return folder


def test_a_path_inside_the_store_resolves_to_its_file(store):
    # when
    path = weights_resolve(weights_path="starter/tiny-chat.gguf")

    # then
    assert path == (store / "starter" / "tiny-chat.gguf").resolve()
    assert path.read_bytes() == b"GGUF tiny"


def test_a_path_not_written_yet_still_resolves_inside_the_store(store):
    # when
    path = weights_resolve(weights_path="qalam/7b-q4.gguf")

    # then
    assert path == store.resolve() / "qalam" / "7b-q4.gguf"
    assert not path.exists()


def test_a_link_inside_the_store_to_another_file_inside_is_followed(store):
    # given
    (store / "current.gguf").symlink_to(store / "starter" / "tiny-chat.gguf")

    # when
    path = weights_resolve(weights_path="current.gguf")

    # then
    assert path == (store / "starter" / "tiny-chat.gguf").resolve()


def test_the_store_root_itself_may_be_a_link(tmp_path, settings):
    # given: the store on a larger disk, linked from where the settings say
    disk = tmp_path / "big-disk" / "models"
    (disk / "starter").mkdir(parents=True)
    (disk / "starter" / "m.gguf").write_bytes(b"x")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "models").symlink_to(disk)
    settings.MODEL_STORE_DIR = tmp_path / "var" / "models"

    # when
    path = weights_resolve(weights_path="starter/m.gguf")

    # then
    assert store_root() == disk.resolve()
    assert path == disk.resolve() / "starter" / "m.gguf"


@pytest.mark.parametrize(
    "weights_path",
    [
        "../x",
        "../store/starter/tiny-chat.gguf",  # back in through the parent: still refused
        "starter/../../x",
        "starter/..",
        "/etc/passwd",
        "//etc/passwd",
        "",
        "   ",
        ".",
        "./starter/tiny-chat.gguf",
        "starter//tiny-chat.gguf",
        "starter/tiny-chat.gguf/",
        "starter\\..\\..\\x",
        "starter/tiny-chat.gguf\x00.txt",
    ],
)
def test_a_path_that_is_not_plainly_inside_the_store_is_refused(store, weights_path):
    # when / then
    with pytest.raises(ValueError, match="weights path"):
        weights_resolve(weights_path=weights_path)


def test_a_non_string_is_refused(store):
    # when / then
    with pytest.raises(ValueError, match="empty"):
        weights_resolve(weights_path=None)


def test_attacker_a_link_to_a_file_outside_the_store_is_refused(store, outside):
    # given: someone with write access to one folder of the store plants a link
    (store / "starter" / "leak.gguf").symlink_to(outside / "passwd")

    # when / then
    with pytest.raises(ValueError, match="outside the model store"):
        weights_resolve(weights_path="starter/leak.gguf")


def test_attacker_a_link_to_a_folder_outside_the_store_is_refused(store, outside):
    # given: a folder link in the middle of the path
    (store / "shared").symlink_to(outside)

    # when / then
    with pytest.raises(ValueError, match="outside the model store"):
        weights_resolve(weights_path="shared/passwd")
    with pytest.raises(ValueError, match="outside the model store"):
        weights_resolve(weights_path="shared")


def test_attacker_a_link_to_the_host_root_is_refused(store):
    # given
    (store / "root").symlink_to("/")

    # when / then
    with pytest.raises(ValueError, match="outside the model store"):
        weights_resolve(weights_path="root/etc/passwd")


def test_attacker_a_link_to_the_store_itself_is_refused(store):
    # given: mounting the whole store (every organisation's private weights) under one name
    (store / "everything").symlink_to(store)

    # when / then
    with pytest.raises(ValueError, match="outside the model store"):
        weights_resolve(weights_path="everything")


def test_attacker_a_loop_of_links_is_refused_not_hung(store):
    # given
    (store / "a").symlink_to(store / "b")
    (store / "b").symlink_to(store / "a")

    # when / then
    with pytest.raises(ValueError, match="weights path"):
        weights_resolve(weights_path="a/model.gguf")


def test_the_sha256_of_a_file_is_that_of_its_bytes(store):
    # given
    path = store / "starter" / "tiny-chat.gguf"

    # when / then
    assert weights_sha256(path) == hashlib.sha256(b"GGUF tiny").hexdigest()


def test_the_sha256_of_a_folder_changes_with_any_file_or_name_in_it(tmp_path):
    # given: a checkpoint folder
    folder = tmp_path / "checkpoint"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "model.safetensors").write_bytes(b"weights")
    before = weights_sha256(folder)

    # when / then: the same contents give the same digest, and any change another
    assert weights_sha256(folder) == before
    (folder / "sub" / "model.safetensors").write_bytes(b"weightz")
    changed_bytes = weights_sha256(folder)
    assert changed_bytes != before
    (folder / "sub" / "model.safetensors").rename(folder / "sub" / "other.safetensors")
    assert weights_sha256(folder) not in (before, changed_bytes)
