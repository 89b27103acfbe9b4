"""Model files another service account can load: safetensors under the umask, whole folders at least group-readable."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import save_file as safetensors_save_file

from recllm.model.shared_files import save_file, share_with_group
from tests.helpers import tiny_catalog, tiny_model


def _modes(root) -> dict[str, int]:
    """Permission bits of `root` ('.') and of every file and folder under it, by relative path."""
    modes = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for top, folders, files in os.walk(root):
        for name in folders + files:
            path = os.path.join(top, name)
            modes[os.path.relpath(path, root)] = stat.S_IMODE(os.stat(path).st_mode)
    return modes


@pytest.fixture
def umask():
    """Set the process umask for one test (`umask(0o077)`), restored after."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


def test_safetensors_alone_writes_owner_only_files_and_save_file_gives_what_the_umask_gives_a_file(tmp_path, umask):
    umask(0o022)
    safetensors_save_file({"a": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    save_file({"a": torch.zeros(2)}, str(tmp_path / "shared.safetensors"))
    (tmp_path / "ordinary.json").write_text("{}")

    modes = _modes(tmp_path)
    assert modes["plain.safetensors"] == 0o600  # why: safetensors writes a 0600 temporary file and renames it
    assert modes["shared.safetensors"] == modes["ordinary.json"] == 0o644


def test_a_saved_model_is_group_readable_even_under_an_owner_only_umask(tokenizer, tmp_path, umask):
    umask(0o077)
    tiny_model(tokenizer).save_pretrained(str(tmp_path / "model"), tokenizer, tiny_catalog())

    modes = _modes(tmp_path / "model")
    assert {"model.safetensors", "catalog.safetensors", "urm_config.json", "tokenizer.json"} <= set(modes)
    assert modes.pop(".") == 0o750
    assert set(modes.values()) == {0o640}


def test_sharing_a_folder_opens_it_to_the_group_keeps_wider_bits_takes_world_write_away_and_follows_no_link(
        tmp_path, umask):
    umask(0o022)
    root = tmp_path / "shared"
    (root / "inner").mkdir(parents=True, mode=0o700)
    (root / "inner" / "weights").write_bytes(b"x")
    os.chmod(root / "inner" / "weights", 0o600)
    (root / "script").write_text("x")
    os.chmod(root / "script", 0o777)
    (tmp_path / "private.key").write_text("secret")
    os.chmod(tmp_path / "private.key", 0o600)
    os.symlink(tmp_path / "private.key", root / "link")

    share_with_group(str(root))

    modes = _modes(root)
    assert modes["."] == 0o755 and modes["inner"] == 0o755 and modes["inner/weights"] == 0o644
    assert modes["script"] == 0o775  # executable bits kept, world write taken away
    assert stat.S_IMODE(os.stat(tmp_path / "private.key").st_mode) == 0o600
