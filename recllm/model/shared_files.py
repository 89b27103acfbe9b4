"""Model files another service account can read: safetensors writes and folders opened to the owner's group.

safetensors (0.8) writes each file through a temporary file (Rust's `tempfile`, always mode
0600) that it renames into place, so the umask never applies and a model saved by the
training account could be loaded by no one else on shared storage. `save_file` and
`save_model` here are safetensors' own, followed by a chmod to what an ordinary file would get;
`share_with_group` opens a whole folder (files at least 0640, folders at least 0750, nothing
world-writable) for what the umask or other writers left narrower.
"""

from __future__ import annotations

import logging
import os
import stat

from safetensors.torch import save_file as _save_file
from safetensors.torch import save_model as _save_model

log = logging.getLogger(__name__)

GROUP_FILE_BITS = 0o640  # owner read-write, group read
GROUP_FOLDER_BITS = 0o750  # owner all, group read and traverse


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """A new model file's mode: an ordinary file's under the umask, at least group-readable, never world-writable."""
    return ((0o666 & ~current_umask()) | GROUP_FILE_BITS) & ~stat.S_IWOTH


def folder_mode() -> int:
    """A model folder's mode: an ordinary folder's under the umask, at least group-traversable, never world-writable."""
    return ((0o777 & ~current_umask()) | GROUP_FOLDER_BITS) & ~stat.S_IWOTH


def save_file(tensors, path: str, metadata: dict[str, str] | None = None) -> None:
    """safetensors' `save_file`, the file then given `file_mode()` instead of 0600."""
    _save_file(tensors, path, metadata=metadata)
    os.chmod(path, file_mode())


def save_model(model, path: str, metadata: dict[str, str] | None = None) -> None:
    """safetensors' `save_model` (shared tensors written once), the file then given `file_mode()` instead of 0600."""
    _save_model(model, path, metadata=metadata)
    os.chmod(path, file_mode())


def share_with_group(root: str) -> None:
    """Open `root` and everything under it to the group: add `file_mode()`'s bits to each file and
    `folder_mode()`'s to each folder, take world-write away; links are left as they are."""
    files, folders = file_mode(), folder_mode()
    for top, _, names in os.walk(root):
        _widen(top, folders)
        for name in names:
            _widen(os.path.join(top, name), files)


def _widen(path: str, bits: int) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return
    mode = (stat.S_IMODE(st.st_mode) | bits) & ~stat.S_IWOTH
    if mode != stat.S_IMODE(st.st_mode):
        try:
            os.chmod(path, mode)
        except PermissionError:  # another account's file: its owner decides
            log.warning("cannot open %s to the group: owned by uid %d", path, st.st_uid)
