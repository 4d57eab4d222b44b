"""Restore the newest complete snapshot into GITLAB_HOME, for GitLab to run on at promotion.

Promotion's wrapper around :meth:`Area.prepare`, which makes the copy: restore adds what a
resumable promotion needs. Anything already in the target is moved aside into it, never
deleted, and running it again for the same snapshot does nothing (a marker names the snapshot
restored).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from gitlab_sync.config import SyncError, iso, read_json, write_json
from gitlab_sync.snapshots import Area

MARKER = ".gitlab-dr-restored.json"


def _has_content(path: Path) -> bool:
    """Whether ``path`` holds anything but empty folders (Docker makes empty mount points)."""
    return any(files for _parent, _dirs, files in os.walk(path))


def restore(area: Area, target: Path) -> dict[str, Any]:
    """Put the newest complete snapshot in ``target``; idempotent, and nothing is deleted."""
    name = area.current_name()
    if name is None:
        raise SyncError("the slave has no complete snapshot to restore")
    marker = read_json(target / MARKER)
    if marker and marker.get("snapshot") == name:
        return {**marker, "copied": False}
    target.mkdir(parents=True, exist_ok=True)
    entries = [
        e for e in target.iterdir() if e.name != MARKER and not e.name.startswith(".before-")
    ]
    if any(_has_content(e) if e.is_dir() and not e.is_symlink() else True for e in entries):
        aside = target / f".before-restore-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
        aside.mkdir()
        for entry in entries:
            entry.rename(aside / entry.name)
    (target / MARKER).unlink(missing_ok=True)
    done = area.prepare(target, name)
    record = {
        "snapshot": name,
        "started_at": area.meta(name).get("started_at"),
        "restored_at": iso(dt.datetime.now(dt.UTC)),
        "seconds": done["seconds"],
        "bytes": done["bytes"],
        "copied": True,
    }
    write_json(target / MARKER, record, mode=0o644)
    return record
