"""A tree's manifest: one record per entry, so two trees are compared exactly, not by eye.

Each record holds the path, type, mode, numeric owner and group, size, mtime (ns), link target,
content hash, whether the file is sparse, and its hard-link group (the first path, in sorted
order, sharing its inode within the tree). Paths are bytes on disk; here they are
``os.fsdecode``'d, so names that are not UTF-8 survive (as surrogates; JSON escapes them).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from typing import Any

_TYPES = {
    stat.S_IFREG: "f",
    stat.S_IFDIR: "d",
    stat.S_IFLNK: "l",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
    stat.S_IFIFO: "p",
    stat.S_IFSOCK: "s",
}


def _sha256(path: bytes) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _walk(root: bytes) -> Iterator[bytes]:
    yield b"."
    for parent, dirs, files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(parent, root)
        for name in sorted(dirs + files):
            yield os.path.normpath(os.path.join(rel, name))


def manifest(root: str, hashes: bool = True) -> list[dict[str, Any]]:
    """The manifest of the tree at ``root`` (symlinks are recorded, never followed).

    ``root`` is resolved once, first: ``/sync/current`` moves to the next snapshot while a
    pass lands, and a walk through the link would then read half of one snapshot and half of
    the next (or stat a name the next one no longer has).
    """
    base = os.fsencode(os.path.realpath(root))
    records: list[dict[str, Any]] = []
    inodes: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for rel in sorted(_walk(base)):
        full = os.path.join(base, rel)
        st = os.lstat(full)
        kind = _TYPES.get(stat.S_IFMT(st.st_mode), "?")
        path = os.fsdecode(rel)
        record: dict[str, Any] = {
            "path": path,
            "type": kind,
            "mode": oct(stat.S_IMODE(st.st_mode)),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns,
        }
        if kind == "f":
            record["size"] = st.st_size
            record["sparse"] = st.st_blocks * 512 < st.st_size
            if hashes:
                record["sha256"] = _sha256(full)
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(record)
        elif kind == "l":
            record["target"] = os.fsdecode(os.readlink(full))
        elif kind in {"c", "b"}:
            record["rdev"] = st.st_rdev
        records.append(record)
    # Hard links within the tree; links to files outside it (older snapshots) do not count.
    for group in inodes.values():
        if len(group) > 1:
            for record in group:
                record["links"] = group[0]["path"]
    return records


def digest(records: list[dict[str, Any]]) -> str:
    """One hash for a whole manifest: equal trees, equal digests."""
    text = "\n".join(json.dumps(r, sort_keys=True, ensure_ascii=True) for r in records)
    return hashlib.sha256(text.encode()).hexdigest()


def differences(
    left: list[dict[str, Any]], right: list[dict[str, Any]], limit: int = 20
) -> list[str]:
    """Readable differences between two manifests (at most ``limit``)."""
    a = {r["path"]: r for r in left}
    b = {r["path"]: r for r in right}
    out: list[str] = []
    for path in sorted(set(a) | set(b)):
        if path not in b:
            out.append(f"only in the first: {path!r}")
        elif path not in a:
            out.append(f"only in the second: {path!r}")
        elif a[path] != b[path]:
            keys = sorted(
                k for k in set(a[path]) | set(b[path]) if a[path].get(k) != b[path].get(k)
            )
            detail = ", ".join(f"{k}: {a[path].get(k)!r} != {b[path].get(k)!r}" for k in keys)
            out.append(f"{path!r}: {detail}")
        if len(out) >= limit:
            break
    return out
