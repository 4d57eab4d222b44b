"""btrfs subvolumes, as a default-capability container may use them.

On a btrfs filesystem mounted with ``user_subvol_rm_allowed``, a container without
CAP_SYS_ADMIN can create a subvolume, snapshot one (read-only or writable), flip a snapshot's
read-only flag and delete a subvolume. It cannot run ``btrfs send`` or ``find-new``, and the
sidecar never needs them. Two rules of the kernel shape what follows (both seen on this
project's test machines):

- a read-only subvolume cannot be moved to another directory (its ``..`` would change), only
  renamed within the one it is in; so a pass is published by a rename first, then made
  read-only (:func:`seal`);
- a read-only subvolume cannot be deleted without CAP_SYS_ADMIN; :func:`delete` makes it
  writable first.

Every operation is one short ``btrfs`` command; a failure is a :class:`SyncError` with the
command's own one-line reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from gitlab_sync.config import SyncError
from gitlab_sync.layout import SUBVOLUME_ROOT_INODE, fstype


def _btrfs(*args: str) -> str:
    try:
        done = subprocess.run(
            ["btrfs", *args], capture_output=True, text=True, errors="replace", check=False
        )
    except FileNotFoundError:
        raise SyncError("btrfs-progs is not installed in this image") from None
    if done.returncode != 0:
        # btrfs-progs warns on stderr when it cannot read what only CAP_SYS_ADMIN may; the
        # reason worth a user's eyes is the last line that is not such a warning.
        lines = [
            line.strip()
            for line in done.stderr.splitlines()
            if line.strip() and not line.startswith("WARNING:")
        ]
        why = lines[-1] if lines else f"exit {done.returncode}"
        raise SyncError(f"btrfs {args[0]} {args[1]} failed: {why.removeprefix('ERROR: ')}")
    return done.stdout


def is_subvolume(path: Path) -> bool:
    """Whether ``path`` is the top directory of a btrfs subvolume (on btrfs, inode 256)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return st.st_ino == SUBVOLUME_ROOT_INODE and fstype(path) == "btrfs"


def create(path: Path) -> None:
    """A new, empty subvolume at ``path`` (which must not exist)."""
    _btrfs("subvolume", "create", str(path))


def snapshot(source: Path, dest: Path, readonly: bool = False) -> None:
    """A snapshot of subvolume ``source`` at ``dest``: O(1), the whole tree at one instant.

    ``dest`` must not exist and must be on the same filesystem (btrfs answers "Invalid cross-
    device link" otherwise).
    """
    _btrfs("subvolume", "snapshot", *(["-r"] if readonly else []), str(source), str(dest))


def set_readonly(path: Path, readonly: bool) -> None:
    _btrfs("property", "set", "-ts", str(path), "ro", "true" if readonly else "false")


def is_readonly(path: Path) -> bool:
    return _btrfs("property", "get", "-ts", str(path), "ro").strip() == "ro=true"


def seal(path: Path) -> None:
    """Make a published snapshot read-only (idempotent)."""
    set_readonly(path, True)


def delete(path: Path) -> None:
    """Delete the subvolume at ``path`` (read-only or not), whatever it holds; O(1) for the
    caller: btrfs frees the space in the background."""
    if not path.exists():
        return
    if is_readonly(path):
        set_readonly(path, False)
    _btrfs("subvolume", "delete", str(path))
