"""Give GitLab a GITLAB_HOME made from a complete snapshot: promotion's restore, and prepare.

Two methods, chosen at each call from the filesystems (:func:`method_for`):

- ``snapshot``: the snapshot is a btrfs subvolume and the target's folder is on the same btrfs
  filesystem. The target *becomes* a writable snapshot of it: O(1) and no extra disk whatever
  the data's size. GitLab's writes then land in the new subvolume's own copy of each block (copy
  on write), so the snapshot stays exactly as it was (and read-only).
- ``copy``: anything else (ext4, another filesystem, or a target that is a mount point and so
  cannot be replaced): ``cp -a --reflink=auto``. A real copy, not hard links: PostgreSQL and the
  logs write files in place, and a hard link would carry those writes into every snapshot
  sharing the file.

:func:`restore` adds what a resumable promotion needs: running it again for the same snapshot
does nothing (a marker in the target names the snapshot restored), and what the target held
is set aside, never deleted (but empty folders, which Docker makes as mount points). With a
snapshot, the old target is renamed beside itself, ``<target>.before-restore-<UTC time>``;
with a copy, its entries are moved into ``<target>/.before-restore-<UTC time>`` as before.
Once restored, the registry's deletes the snapshot caught half done are finished in the target
(:mod:`gitlab_sync.registry_deletes`); the snapshot itself is never written.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

from gitlab_sync import btrfs, layout, registry_deletes
from gitlab_sync.config import SyncError, iso, read_json, write_json
from gitlab_sync.snapshots import PG_DATA, Area, tree_size

MARKER = ".gitlab-dr-restored.json"
Kind = Literal["snapshot", "copy"]


def _has_content(path: Path) -> bool:
    """Whether ``path`` holds anything but empty folders (Docker makes empty mount points)."""
    if path.is_symlink() or not path.is_dir():
        return path.exists() or path.is_symlink()
    for parent, dirs, files in os.walk(path):
        if files or any((Path(parent) / d).is_symlink() for d in dirs):
            return True
    return False


def method_for(source: Path, target: Path) -> Kind:
    """``snapshot`` when ``target`` can be made a snapshot of ``source``: ``source`` is a
    subvolume, ``target``'s folder is on the same btrfs filesystem (mountinfo's device: every
    subvolume has a ``st_dev`` of its own), and ``target`` is not a mount point."""
    if not btrfs.is_subvolume(source):
        return "copy"
    home, there = layout.mount_of(target.parent), layout.mount_of(source)
    if home is None or there is None or home.fstype != "btrfs" or home.device != there.device:
        return "copy"
    if target.exists() and layout.is_mount_point(target):
        return "copy"
    return "snapshot"


def _remove_empty(target: Path) -> None:
    """Remove ``target``, which holds nothing but empty folders, so a snapshot can take its
    place."""
    if btrfs.is_subvolume(target):
        btrfs.delete(target)
    elif target.exists():
        shutil.rmtree(target)


def _copy(source: Path, target: Path, name: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in target.iterdir():
        if entry.name.startswith(".before-"):
            continue  # what restore set aside; the copy never touches it
        if entry.is_symlink() or not entry.is_dir() or any(entry.iterdir()):
            raise SyncError(f"{target} is not empty ({entry.name}); refusing to copy")
    done = subprocess.run(
        ["cp", "-a", "--reflink=auto", f"{source}/.", f"{target}/"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SyncError(f"copying {name} failed: {done.stderr.strip()[-300:]}")
    subprocess.run(["sync", "-f", str(target)], check=False)


def prepare(area: Area, target: Path, name: str | None = None) -> dict[str, Any]:
    """Make ``target`` a runnable GITLAB_HOME from a complete snapshot (default ``current``).

    ``target`` must hold nothing but empty directories (mount points of GitLab's volumes, for
    example), or not exist. The area's lock is held, so retention cannot prune the snapshot
    while it is used. The figures: the snapshot's size (from its metadata with a snapshot, which
    walks nothing; measured on the snapshot with a copy, with what it takes on disk per GB).
    """
    with area.locked(wait=True):
        chosen = name or area.current_name()
        if not chosen or chosen not in area.names():
            raise SyncError(f"no complete snapshot {chosen or '(current)'} to prepare")
        source = area.snapshots / chosen
        target.parent.mkdir(parents=True, exist_ok=True)
        kind = method_for(source, target)
        if kind == "snapshot" and _has_content(target):
            kind = "copy"  # what is there stays; the copy says why it refuses (or goes beside)
        begun = time.monotonic()
        if kind == "snapshot":
            _remove_empty(target)
            btrfs.snapshot(source, target)  # btrfs commits it: on disk when this returns
        else:
            _copy(source, target, chosen)
        seconds = time.monotonic() - begun
    done: dict[str, Any] = {
        "snapshot": chosen,
        "target": str(target),
        "method": kind,
        "seconds": round(seconds, 3),
    }
    if kind == "snapshot":
        recorded = area.meta(chosen).get("bytes")
        return {**done, "bytes": recorded if isinstance(recorded, int) else 0}
    # What was copied, measured on the snapshot (the target may hold what restore set aside).
    size = tree_size(source)
    allocated = tree_size(source, allocated=True)
    return {
        **done,
        "bytes": size,
        # per GB on disk: rsync -S keeps zeroed blocks (PostgreSQL's fresh WAL) as holes
        "seconds_per_gb": round(seconds / (allocated / 1e9), 3) if allocated else 0.0,
        "allocated_bytes": allocated,
        "postgresql_bytes": tree_size(source / PG_DATA),
    }


def _beside(target: Path) -> Path:
    """A free name beside ``target`` for what it held."""
    stamp = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    aside = target.with_name(f"{target.name}.before-restore-{stamp}")
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = target.with_name(f"{target.name}.before-restore-{stamp}-{n}")
    return aside


def _set_aside(target: Path, kind: Kind) -> str | None:
    """Move what ``target`` holds out of the way of ``kind``; where it went (None: nothing)."""
    if kind == "snapshot":
        if not (target.exists() or target.is_symlink()):
            return None
        if not _has_content(target):
            _remove_empty(target)
            return None
        aside = _beside(target)
        target.rename(aside)  # a subvolume too: renamed within its folder
        return str(aside)
    target.mkdir(parents=True, exist_ok=True)
    entries = [
        e for e in target.iterdir() if e.name != MARKER and not e.name.startswith(".before-")
    ]
    if not any(_has_content(e) for e in entries):
        return None
    into = target / f".before-restore-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    into.mkdir()
    for entry in entries:
        entry.rename(into / entry.name)
    return str(into)


def restore(area: Area, target: Path, name: str | None = None) -> dict[str, Any]:
    """Put snapshot ``name`` (default: the newest complete one) in ``target``; idempotent, and
    nothing that was in the target but empty folders is deleted (of the snapshot's, only the tags
    of registry deletes under way, finished). ``seconds`` is the whole restore's time."""
    chosen = name or area.current_name()
    if chosen is None:
        raise SyncError("the slave has no complete snapshot to restore")
    if chosen not in area.names():
        raise SyncError(f"no complete snapshot {chosen} to restore")
    marker = read_json(target / MARKER)
    if marker and marker.get("snapshot") == chosen:
        return {**marker, "copied": False}
    begun = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = _set_aside(target, method_for(area.snapshots / chosen, target))
    (target / MARKER).unlink(missing_ok=True)
    done = prepare(area, target, chosen)
    finished = registry_deletes.finish(target)
    record = {
        "snapshot": chosen,
        "started_at": area.meta(chosen).get("started_at"),
        "restored_at": iso(dt.datetime.now(dt.UTC)),
        "method": done["method"],
        "seconds": round(time.monotonic() - begun, 3),
        "bytes": done["bytes"],
        "aside": aside,
        "registry_deletes_finished": finished,
        "copied": True,
    }
    write_json(target / MARKER, record, mode=0o644)
    return record
