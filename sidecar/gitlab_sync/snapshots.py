"""The slave's sync area: point-in-time snapshots, published only when complete.

Layout under the sync area (``/sync`` in the container, ``SYNC_HOME`` on the host)::

    .incoming/             the pass being received (never read by anyone else)
    .incoming.json         that pass: id, start time, epoch, state (receiving/received/failed)
    snapshots/<name>/      complete snapshots; <name> is the pass's start time, sortable
    snapshots/<name>.json  their metadata (with ``verified``, the last verification's result)
    current -> snapshots/<name>   the newest complete snapshot: what promotion starts from
    .verified.json         the newest snapshot verified ok: name and when (rewritten at each mark)
    .trash/                pruned folders and abandoned passes, deleted in the background

Two methods, chosen by the area's own filesystem (:func:`gitlab_sync.layout.sync_method`; the
slave needs nothing else for its area) and named in :meth:`Area.summary` and each snapshot's
metadata:

- ``snapshots`` (btrfs mounted with ``user_subvol_rm_allowed``): ``.incoming`` is a writable
  btrfs snapshot of ``current`` (an empty subvolume when there is none, or when ``current`` is a
  folder an older version left), so a pass only writes what changed. It is published by a
  rename into ``snapshots/`` and then sealed read-only (a read-only subvolume cannot move to
  another directory); pruning deletes subvolumes, O(1) whatever their size.
- ``fallback`` (anything else): ``.incoming`` starts empty and rsync hard-links unchanged
  files from ``current`` (``--link-dest``); pruning moves folders into the trash.

A pass becomes a snapshot by one rename, and ``current`` moves by one rename: a pass cut short
at any point leaves the previous complete snapshot untouched and still ``current``. Each commit
then prunes what the retention tiers do not keep (:mod:`gitlab_sync.retention`), never
``current`` nor the newest snapshot verified ok.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from gitlab_sync import btrfs
from gitlab_sync.config import SyncError, iso, now, parse_iso, quoted, read_json, write_json
from gitlab_sync.layout import Method, sync_method
from gitlab_sync.retention import NAME_FORMAT, Tiers, to_prune

NAME_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z$")  # what NAME_FORMAT makes

PG_DATA = "data/postgresql/data"  # PostgreSQL's data directory in a GitLab tree
LABEL_NAMES = frozenset({"backup_label", "tablespace_map"})
LABEL_MAX = 64 * 1024


def snapshot_name(started: dt.datetime) -> str:
    return started.astimezone(dt.UTC).strftime(NAME_FORMAT)


def name_time(name: str) -> dt.datetime:
    return dt.datetime.strptime(name, NAME_FORMAT).replace(tzinfo=dt.UTC)


VERIFIED_MAX = 1024 * 1024  # the largest verification result mark-verified takes
MARK_WAIT = 300.0  # how long a mark waits for the pass being received to let go of the area


def verification(data: object, at: dt.datetime) -> dict[str, Any]:
    """A verification's result as a snapshot's metadata keeps it: ``{"ok": bool, "checks":
    [...], "summary": str}`` (checked) with ``at``."""
    if not isinstance(data, Mapping):
        raise SyncError('refused: a verification result is a JSON object {"ok", "checks", ...}')
    ok, checks, summary = data.get("ok"), data.get("checks"), data.get("summary")
    if not isinstance(ok, bool) or not isinstance(checks, list) or not isinstance(summary, str):
        raise SyncError(
            'refused: a verification result needs "ok" (true or false), "checks" (a list) '
            'and "summary" (a string)'
        )
    return {"at": iso(at), "ok": ok, "checks": checks, "summary": summary}


@dataclass(frozen=True)
class Area:
    """The slave's sync area. ``clock`` is the time retention, ages and marks are told."""

    root: Path
    clock: Callable[[], dt.datetime] = field(default=now, compare=False, repr=False)

    @cached_property
    def method(self) -> Method:
        """``snapshots`` (btrfs subvolumes) or ``fallback`` (hard-linked folders)."""
        return sync_method(self.root)

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

    @property
    def verified_pointer(self) -> Path:
        return self.root / ".verified.json"

    @contextmanager
    def locked(self, wait: bool | float = False) -> Iterator[None]:
        """Hold the area's lock: one pass at a time, whoever sends it. ``wait``: True, as long
        as it takes; a number, at most that many seconds; False, not at all."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            deadline = time.monotonic() + (0.0 if wait is True else float(wait))
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait is True else fcntl.LOCK_NB))
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SyncError("another pass is being received") from None
                    time.sleep(0.1)
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

    def continues_from(self, name: str) -> str:
        """Why a pass carrying only what changed since snapshot ``name`` cannot be received
        here ("" when it can): it needs ``.incoming`` to start as a copy of ``name`` itself,
        which only the snapshots method makes, and only from a subvolume."""
        current = self.current_name()
        if self.method != "snapshots":
            return "this slave keeps hard-linked folders, not btrfs snapshots"
        if current != name:
            return f"this slave's current snapshot is {current or 'none'}"
        if not btrfs.is_subvolume(self.snapshots / name):
            return f"snapshot {name} is a folder, not a subvolume"
        return ""

    def discard(self, path: Path) -> None:
        """Remove ``path``: a subvolume is deleted now (O(1): btrfs frees its space in the
        background); anything else is moved into the trash (one rename), which the daemon
        empties later."""
        if btrfs.is_subvolume(path):
            btrfs.delete(path)
        elif path.exists() or path.is_symlink():
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

    def seal_published(self) -> list[str]:
        """Seal the snapshots a crash left writable, between the rename that published them
        and :func:`btrfs.seal`; their names. Only those newer than ``current`` can be: it moves
        after the seal. Called as each pass begins and at each commit."""
        if self.method != "snapshots":
            return []
        newest = self.current_name() or ""
        sealed = []
        for name in self.names():
            path = self.snapshots / name
            if name > newest and btrfs.is_subvolume(path) and not btrfs.is_readonly(path):
                btrfs.seal(path)
                sealed.append(name)
        return sealed

    # The pass protocol, called by the receiver with the lock held.

    def begin(
        self, pass_id: str, epoch: int, started: dt.datetime, changes_from: str | None = None
    ) -> None:
        """Start receiving pass ``pass_id`` into a fresh ``.incoming`` (a leftover is removed);
        ``changes_from``: it carries only what changed since that snapshot (its ``bytes`` are
        then not the tree's).

        On the fallback it is an empty directory: files in ``.incoming`` hard-linked from
        ``current`` by an earlier attempt would have their metadata changed in place, altering
        older snapshots. On btrfs it is a writable snapshot of ``current``: its own copy of
        every inode, so whatever rsync changes in it leaves ``current`` as it was.
        """
        meta = read_json(self.incoming_meta)
        if meta and meta.get("id") == pass_id and meta.get("state") in {"receiving", "received"}:
            return  # a second rsync of the same pass continues into it
        self.seal_published()
        if btrfs.is_subvolume(self.incoming):
            btrfs.delete(self.incoming)
        elif self.incoming.exists():
            shutil.rmtree(self.incoming)  # freed now: the disk may be what failed last time
        self.root.mkdir(parents=True, exist_ok=True)
        base = None
        if self.method == "snapshots":
            name = self.current_name()
            if name and btrfs.is_subvolume(self.snapshots / name):
                btrfs.snapshot(self.snapshots / name, self.incoming)
                base = name
            else:  # the first pass, or a current an older version kept as a folder
                btrfs.create(self.incoming)
        else:
            self.incoming.mkdir(mode=0o700)
        write_json(
            self.incoming_meta,
            {
                "id": pass_id,
                "epoch": epoch,
                "started_at": iso(started),
                "state": "receiving",
                "method": self.method,
                "started_from": base,
                "changes_from": changes_from,
            },
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
        Either method: ``.incoming`` is writable until the commit (a master without snapshots
        may send to a slave with them).
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
        """Make ``target`` a runnable GITLAB_HOME from a complete snapshot (default
        ``current``): a writable snapshot or a copy (:func:`gitlab_sync.restore.prepare`)."""
        from gitlab_sync.restore import prepare  # which imports this module

        return prepare(self, target, name)

    def commit(
        self,
        pass_id: str,
        tiers: Tiers,
        extra: dict[str, Any],
        instant: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Publish the received pass as the newest snapshot and prune what ``tiers`` do not
        keep (never the newest snapshot verified ok).

        The snapshot's instant (its name, ``started_at``) is when the slave began receiving it,
        or ``instant``, the moment the master froze its tree, when the master sent one: a pass
        from one instant holds exactly what was there then, and the receiving began later, so
        a write acknowledged in between would be claimed and missing. ``instant`` is taken only
        when it is no later than the slave's own start (the master's clock cannot place it
        after what the slave saw) and later than the current snapshot's (names stay ordered).
        """
        meta = read_json(self.incoming_meta) or {}
        if meta.get("id") != pass_id:
            raise SyncError(f"pass {pass_id} is not the one being received; nothing committed")
        if meta.get("state") != "received":
            raise SyncError(f"pass {pass_id} is {meta.get('state', 'unknown')}; nothing committed")
        started = parse_iso(meta["started_at"])
        previous = self.current_name()
        later = previous is None or (instant is not None and name_time(previous) < instant)
        if instant is not None and instant <= started and later:
            started = instant
            meta.update(started_at=iso(instant), received_from=meta["started_at"])
        name = snapshot_name(started)
        self.snapshots.mkdir(exist_ok=True)
        self._flush()  # the data is on disk before the rename that publishes it
        meta.update(extra, name=name, state="complete", committed_at=iso(self.clock()))
        # What the listing says of it: the tree's size when the pass sent the whole tree (a
        # pass of what changed counts only that), and whether it holds one instant.
        whole = isinstance(extra.get("bytes"), int) and not meta.get("changes_from")
        meta.update(tree_bytes=extra["bytes"] if whole else None, one_instant=instant is not None)
        write_json(self.snapshots / f"{name}.json", meta, mode=0o644)
        published = self.snapshots / name
        self.incoming.rename(published)
        if btrfs.is_subvolume(published):
            btrfs.seal(published)  # after the rename: a read-only subvolume cannot move
        link = self.root / f".current.{pass_id}"
        link.unlink(missing_ok=True)
        link.symlink_to(Path("snapshots") / name)
        link.rename(self.current)
        self.incoming_meta.unlink()
        self._fsync_dir(self.root)
        self.seal_published()
        self.prune(tiers)
        return {"snapshot": name, "snapshots": len(self.names()), "started_at": meta["started_at"]}

    def prune(self, tiers: Tiers) -> list[str]:
        """Remove the snapshots ``tiers`` do not keep (with the lock held); their names."""
        verified = self.newest_verified()
        protected = [verified["name"]] if verified else []
        names = [name for name in self.names() if NAME_PATTERN.match(name)]
        doomed = to_prune(names, self.clock(), tiers, protected)
        for old in doomed:
            self.discard(self.snapshots / old)
            (self.snapshots / f"{old}.json").unlink(missing_ok=True)
        return doomed

    # Verification: a throwaway GitLab on a snapshot ran the drill's checks (ops does it).

    def mark_verified(self, name: str, result: object, wait: float = MARK_WAIT) -> dict[str, Any]:
        """Record ``result`` (see :func:`verification`) in snapshot ``name``'s metadata, with
        the area's lock held (a commit may be pruning); the record written."""
        with self.locked(wait=wait):
            if not NAME_PATTERN.match(name) or not (self.snapshots / name).is_dir():
                raise SyncError(
                    f"refused: no complete snapshot {quoted(name, 40)} (gitlab-sync snapshots "
                    "lists them)"
                )
            record = verification(result, self.clock())
            meta = self.meta(name)
            meta["verified"] = record
            write_json(self.snapshots / f"{name}.json", meta, mode=0o644)
            self._point_at_newest_verified()
        return record

    def _point_at_newest_verified(self) -> None:
        """Rewrite ``.verified.json`` from the snapshots' metadata (newest first)."""
        for name in reversed(self.names()):
            verified = self.meta(name).get("verified")
            if isinstance(verified, dict) and verified.get("ok") is True:
                write_json(self.verified_pointer, {"name": name, "at": verified.get("at")}, 0o644)
                return
        self.verified_pointer.unlink(missing_ok=True)

    def newest_verified(self) -> dict[str, Any] | None:
        """The newest snapshot verified ok, ``{"name", "at"}``; None when there is none."""
        data = read_json(self.verified_pointer)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return None
        name = data["name"]
        if not NAME_PATTERN.match(name) or not (self.snapshots / name).is_dir():
            return None
        return {"name": name, "at": data.get("at")}

    def _flush(self) -> None:
        """Everything written so far on disk. On btrfs, ``syncfs`` of the area's filesystem
        alone: a busy disk elsewhere on the host then cannot delay the pass."""
        if self.method == "fallback":
            os.sync()
            return
        done = subprocess.run(
            ["sync", "-f", str(self.root)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SyncError(f"sync -f {self.root} failed: {done.stderr.strip()[-200:]}")

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def summary(self) -> dict[str, Any]:
        """What status reports of the area: newest complete snapshot, count, pass in progress,
        the method, and the newest snapshot verified ok (``{"name", "at"}`` or None)."""
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
            "method": self.method,
            "newest_verified": self.newest_verified(),
        }


def tree_size(root: Path, allocated: bool = False) -> int:
    """Bytes of the files under ``root``: their sizes, or what they take on disk."""
    total = 0
    for parent, _dirs, files in os.walk(root):
        for name in files:
            st = (Path(parent) / name).lstat()
            total += st.st_blocks * 512 if allocated else st.st_size
    return total
