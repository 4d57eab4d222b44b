"""The slave's sync area: point-in-time snapshots, hard-linked, published only when complete.

Layout under the sync area (``/sync`` in the container, ``SYNC_HOME`` on the host)::

    .incoming/             the pass being received (never read by anyone else)
    .incoming.json         that pass: id, start time, epoch, state (receiving/received/failed)
    snapshots/<name>/      complete snapshots; <name> is the pass's start time, sortable
    snapshots/<name>.json  their metadata
    current -> snapshots/<name>   the newest complete snapshot: what promotion starts from
    .trash/                pruned snapshots and abandoned passes, deleted in the background

A pass becomes a snapshot by one rename, and ``current`` moves by one rename: a pass cut short
at any point leaves the previous complete snapshot untouched and still ``current``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitlab_sync.config import SyncError, iso, parse_iso, quoted, read_json, write_json

NAME_FORMAT = "%Y%m%dT%H%M%S.%fZ"

PG_DATA = "data/postgresql/data"  # PostgreSQL's data directory in a GitLab tree
LABEL_NAMES = frozenset({"backup_label", "tablespace_map"})
LABEL_MAX = 64 * 1024


def snapshot_name(started: dt.datetime) -> str:
    return started.astimezone(dt.UTC).strftime(NAME_FORMAT)


def name_time(name: str) -> dt.datetime:
    return dt.datetime.strptime(name, NAME_FORMAT).replace(tzinfo=dt.UTC)


def to_prune(names: Sequence[str], now: dt.datetime, keep: int, max_age: float) -> list[str]:
    """The snapshots retention removes: beyond the ``keep`` newest, or older than ``max_age``.

    The newest snapshot is never pruned, whatever its age: promotion needs one.
    """
    ordered = sorted(names, reverse=True)
    doomed = []
    for index, name in enumerate(ordered):
        if index == 0:
            continue
        too_old = (now - name_time(name)).total_seconds() > max_age
        if index >= keep or too_old:
            doomed.append(name)
    return sorted(doomed)


@dataclass(frozen=True)
class Area:
    """The slave's sync area."""

    root: Path

    @property
    def incoming(self) -> Path:
        return self.root / ".incoming"

    @property
    def incoming_meta(self) -> Path:
        return self.root / ".incoming.json"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def trash(self) -> Path:
        return self.root / ".trash"

    @contextmanager
    def locked(self, wait: bool = False) -> Iterator[None]:
        """Hold the area's lock: one pass at a time, whoever sends it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise SyncError("another pass is being received") from None
            yield

    def busy(self) -> bool:
        try:
            with self.locked():
                return False
        except SyncError:
            return True

    def names(self) -> list[str]:
        if not self.snapshots.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.snapshots.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )

    def current_name(self) -> str | None:
        try:
            return Path(os.readlink(self.current)).name
        except FileNotFoundError:
            return None

    def meta(self, name: str) -> dict[str, Any]:
        data = read_json(self.snapshots / f"{name}.json")
        return data if isinstance(data, dict) else {"name": name}

    def discard(self, path: Path) -> None:
        """Move ``path`` into the trash (one rename); the daemon deletes it later."""
        if path.exists() or path.is_symlink():
            self.trash.mkdir(exist_ok=True)
            path.rename(self.trash / f"{path.name}.{uuid.uuid4().hex[:8]}")

    def empty_trash(self) -> int:
        """Delete what is in the trash; returns how many entries went."""
        if not self.trash.is_dir():
            return 0
        gone = 0
        for entry in list(self.trash.iterdir()):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
            gone += 1
        return gone

    # The pass protocol, called by the receiver with the lock held.

    def begin(self, pass_id: str, epoch: int, started: dt.datetime) -> None:
        """Start receiving pass ``pass_id`` into an empty ``.incoming`` (a leftover is discarded).

        An empty directory matters: files in ``.incoming`` hard-linked from ``current`` by an
        earlier attempt would have their metadata changed in place, altering older snapshots.
        """
        meta = read_json(self.incoming_meta)
        if meta and meta.get("id") == pass_id and meta.get("state") in {"receiving", "received"}:
            return  # a second rsync of the same pass continues into it
        if self.incoming.exists():
            shutil.rmtree(self.incoming)  # freed now: the disk may be what failed last time
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(mode=0o700)
        write_json(
            self.incoming_meta,
            {"id": pass_id, "epoch": epoch, "started_at": iso(started), "state": "receiving"},
        )

    def mark(self, pass_id: str, state: str, error: str = "") -> None:
        meta = read_json(self.incoming_meta) or {}
        if meta.get("id") != pass_id:
            raise SyncError(f"pass {pass_id} is not the one being received")
        meta.update(state=state, error=error, marked_at=iso(dt.datetime.now(dt.UTC)))
        write_json(self.incoming_meta, meta)

    def write_label(self, pass_id: str, name: str, data: bytes) -> Path:
        """Write PostgreSQL's ``backup_label`` or ``tablespace_map`` into the pass's copy.

        Only into the data directory of the pass being received, after its files arrived;
        owned and moded as PostgreSQL's own files there (the owner of ``PG_VERSION``, 0600).
        """
        if name not in LABEL_NAMES:
            raise SyncError(f"refused: {quoted(name)} is not a backup label file")
        if len(data) > LABEL_MAX:
            raise SyncError(f"refused: {name} larger than {LABEL_MAX} bytes")
        if name == "backup_label" and not data.startswith(b"START WAL LOCATION: "):
            raise SyncError("refused: not a PostgreSQL backup label")
        meta = read_json(self.incoming_meta) or {}
        if meta.get("id") != pass_id or meta.get("state") != "received":
            raise SyncError(f"pass {pass_id} is not received yet; no label written")
        data_dir = self.incoming / PG_DATA
        version = data_dir / "PG_VERSION"
        if data_dir.is_symlink() or not version.is_file() or version.is_symlink():
            raise SyncError(f"pass {pass_id} holds no PostgreSQL data directory")
        owner = version.stat()
        path = data_dir / name
        tmp = data_dir / f".{name}.gitlab-sync"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fchown(fd, owner.st_uid, owner.st_gid)
            os.fchmod(fd, 0o600)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.rename(path)
        return path

    def prepare(self, target: Path, name: str | None = None) -> dict[str, Any]:
        """Copy a complete snapshot (default ``current``) into ``target`` for GitLab to run on.

        A real copy (``cp -a --reflink=auto``: reflinks where the filesystem has them, e.g.
        XFS with reflink=1, else bytes): PostgreSQL and the logs write files in place, and a
        hard link would carry those writes into every snapshot sharing the file. Hard links
        within the snapshot stay hard links within the copy. ``target`` must hold nothing but
        empty directories (mount points of GitLab's volumes, for example). The area's lock is
        held, so retention cannot prune the snapshot while it is copied.
        """
        with self.locked(wait=True):
            chosen = name or self.current_name()
            if not chosen or chosen not in self.names():
                raise SyncError(f"no complete snapshot {chosen or '(current)'} to prepare")
            source = self.snapshots / chosen
            target.mkdir(parents=True, exist_ok=True)
            for entry in target.iterdir():
                if entry.name.startswith(".before-"):
                    continue  # what restore set aside; the copy never touches it
                if entry.is_symlink() or not entry.is_dir() or any(entry.iterdir()):
                    raise SyncError(f"{target} is not empty ({entry.name}); refusing to copy")
            begun = dt.datetime.now(dt.UTC)
            done = subprocess.run(
                ["cp", "-a", "--reflink=auto", f"{source}/.", f"{target}/"],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise SyncError(f"copying {chosen} failed: {done.stderr.strip()[-300:]}")
            subprocess.run(["sync", "-f", str(target)], check=False)
            seconds = (dt.datetime.now(dt.UTC) - begun).total_seconds()
        # What was copied, measured on the snapshot (the target may hold what restore set aside).
        size = _tree_size(source)
        allocated = _tree_size(source, allocated=True)
        return {
            "snapshot": chosen,
            "target": str(target),
            "bytes": size,
            "seconds": round(seconds, 3),
            # per GB on disk: rsync -S keeps zeroed blocks (PostgreSQL's fresh WAL) as holes
            "seconds_per_gb": round(seconds / (allocated / 1e9), 3) if allocated else 0.0,
            "allocated_bytes": allocated,
            "postgresql_bytes": _tree_size(source / PG_DATA),
        }

    def commit(
        self, pass_id: str, keep: int, max_age: float, extra: dict[str, Any]
    ) -> dict[str, Any]:
        """Publish the received pass as the newest snapshot and apply retention."""
        meta = read_json(self.incoming_meta) or {}
        if meta.get("id") != pass_id:
            raise SyncError(f"pass {pass_id} is not the one being received; nothing committed")
        if meta.get("state") != "received":
            raise SyncError(f"pass {pass_id} is {meta.get('state', 'unknown')}; nothing committed")
        started = parse_iso(meta["started_at"])
        name = snapshot_name(started)
        self.snapshots.mkdir(exist_ok=True)
        os.sync()  # the data is on disk before the rename that publishes it
        meta.update(extra, name=name, state="complete", committed_at=iso(dt.datetime.now(dt.UTC)))
        write_json(self.snapshots / f"{name}.json", meta, mode=0o644)
        self.incoming.rename(self.snapshots / name)
        link = self.root / f".current.{pass_id}"
        link.unlink(missing_ok=True)
        link.symlink_to(Path("snapshots") / name)
        link.rename(self.current)
        self.incoming_meta.unlink()
        self._fsync_dir(self.root)
        for old in to_prune(self.names(), dt.datetime.now(dt.UTC), keep, max_age):
            self.discard(self.snapshots / old)
            (self.snapshots / f"{old}.json").unlink(missing_ok=True)
        return {"snapshot": name, "snapshots": len(self.names()), "started_at": meta["started_at"]}

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def summary(self) -> dict[str, Any]:
        """What status reports of the area: newest complete snapshot, count, pass in progress."""
        names = self.names()
        current = self.current_name()
        incoming = read_json(self.incoming_meta)
        in_progress = None
        if incoming and incoming.get("state") in {"receiving", "received"} and self.busy():
            in_progress = {k: incoming.get(k) for k in ("id", "started_at", "state")}
        return {
            "snapshots": len(names),
            "current": current,
            "last_complete": self.meta(current) if current else None,
            "in_progress": in_progress,
        }


def _tree_size(root: Path, allocated: bool = False) -> int:
    """Bytes of the files under ``root``: their sizes, or what they take on disk."""
    total = 0
    for parent, _dirs, files in os.walk(root):
        for name in files:
            st = (Path(parent) / name).lstat()
            total += st.st_blocks * 512 if allocated else st.st_size
    return total
