"""A change pass's list: the paths that changed, as rsync's ``--files-from --from0`` takes them.

The list is made against the frozen snapshot the pass sends from, and each changed path
becomes what rsync needs to make the slave's copy equal to it there:

- ``a/b``, present in the snapshot: the entry itself (a file, a link, a directory's own
  attributes), and its parent directory (its times change when an entry is made or removed);
- ``a/.``, for a path missing from the snapshot (deleted, or renamed away): its parent's
  entries, one level, so that ``--delete`` removes what the parent lacks on the slave, whole
  directories too. (``--delete-missing-args`` would name the path alone, but the rsync of
  Debian 12, 3.2.7-1+deb12u6, refuses the entry it sends for it since a security fix:
  "invalid file mode 00", RsyncProject/rsync#910.) The top directory is ``.``;
- ``d/.`` for every directory of a subtree that arrived whole (made, or moved in): rsync then
  sends that directory's entries and deletes what it lacks on the slave, one level each, so
  the subtree comes across exactly, with what was made in it before its watch existed.

One case is left to a full pass (the reason is returned): a changed regular file with more
than one link (rsync keeps hard links only among the files of one transfer, and the other
names are not in the list). A path whose parent is no longer a directory in the snapshot
(deleted, or replaced by a file or a symlink) is cut at the first such parent: rsync would
otherwise follow a symlink there and send what it points to.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from gitlab_sync.watcher import Changes

TOP = b"."


def _parent(rel: bytes) -> bytes:
    head, _, _ = rel.rpartition(b"/")
    return head or TOP


def _contents(folder: bytes) -> bytes:
    """The entry that sends ``folder``'s entries, one level (and deletes what it lacks)."""
    return folder if folder == TOP else folder + b"/."


class _Frozen:
    """Looks at the frozen snapshot; remembers which directories are real ones."""

    def __init__(self, root: Path):
        self.root = bytes(root)
        self._dirs: dict[bytes, bool] = {b"": True}

    def lstat(self, rel: bytes) -> os.stat_result | None:
        try:
            return os.lstat(self.root + b"/" + rel if rel else self.root)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def is_dir(self, rel: bytes) -> bool:
        known = self._dirs.get(rel)
        if known is None:
            st = self.lstat(rel)
            known = self._dirs[rel] = st is not None and stat.S_ISDIR(st.st_mode)
        return known

    def anchor(self, rel: bytes) -> bytes:
        """``rel``, or its first parent that is not a directory in the snapshot."""
        parts = rel.split(b"/")
        for i in range(1, len(parts)):
            head = b"/".join(parts[:i])
            if not self.is_dir(head):
                return head
        return rel

    def linked(self, rel: bytes) -> bool:
        """Whether ``rel`` is a regular file with other names."""
        st = self.lstat(rel)
        return st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink > 1

    def walk(self, top: bytes) -> Iterable[tuple[bytes, bool]]:
        """Every directory under ``top`` (``top`` too), and whether it holds a linked file."""
        stack = [top]
        while stack:
            rel = stack.pop()
            linked = False
            try:
                with os.scandir(self.root + b"/" + rel) as entries:
                    for entry in entries:
                        child = rel + b"/" + entry.name
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(child)
                        elif entry.is_file(follow_symlinks=False):
                            linked = linked or entry.stat(follow_symlinks=False).st_nlink > 1
            except (FileNotFoundError, NotADirectoryError):
                continue
            yield rel, linked


def build(frozen: Path, changes: Changes) -> tuple[list[bytes], str]:
    """The sorted entries of ``changes`` against ``frozen``, or ``([], reason)`` when only a
    full pass can send them."""
    tree = _Frozen(frozen)
    entries: set[bytes] = set()
    for path in changes.paths:
        if not path:
            entries.add(TOP)
            continue
        rel = tree.anchor(path)
        if tree.lstat(rel) is None:
            entries.add(_contents(_parent(rel)))
            continue
        if tree.linked(rel):
            return [], f"a hard-linked file changed ({os.fsdecode(rel)!r})"
        entries.update((rel, _parent(rel)))
    for top in changes.subtrees:
        rel = tree.anchor(top)
        if rel != top or not tree.is_dir(rel):  # gone again, or no longer a directory
            entries.add(_contents(_parent(rel)))
            continue
        entries.add(_parent(rel))
        for folder, linked in tree.walk(rel):
            if linked:
                return [], f"a hard-linked file arrived ({os.fsdecode(folder)!r})"
            entries.add(_contents(folder))
    # A directory sent with its entries needs no entry of its own (rsync would keep one of
    # the two names, maybe the one without the entries).
    return sorted(e for e in entries if e + b"/." not in entries), ""


def write(path: Path, entries: Iterable[bytes]) -> None:
    """The list as ``--from0`` reads it: each entry followed by a NUL."""
    with open(path, "wb") as handle:
        for entry in entries:
            handle.write(entry + b"\0")
