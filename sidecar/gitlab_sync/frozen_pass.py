"""A pass from one instant: a read-only btrfs snapshot of the source, sent whole or by change.

Each pass freezes GITLAB_HOME with ``btrfs subvolume snapshot -r /source
/sync/.frozen/<pass-id>`` (O(1), atomic), sends from that frozen copy, and deletes it after the
pass, failed or not (what a crash left is deleted when the daemon's sender starts again).
PostgreSQL, repositories, uploads, the registry and ``gitlab-secrets.json`` are then all as
they were at that instant: PostgreSQL starts from the copy by its ordinary crash recovery
(no backup API, no label, no WAL step, no refs-first order).

A pass is either

- **full**: one rsync of the whole frozen tree (on the timer, by hand, the first pass of a
  sender, after a failed pass, when the change list is in doubt, when the slave keeps no
  btrfs snapshots or refuses the base); it catches whatever events missed;
- **a change pass**: rsync of just the paths that changed since the previous pass's snapshot
  (``changelist.py``), into a writable snapshot of the slave's ``current``. Its receiver
  words carry ``base=<the snapshot the previous pass committed>``; a slave whose ``current``
  is another refuses, and the pass goes on as a full one.

**How the change list is made exact.** The watcher's events are cut twice around the
snapshot (``watcher.py``): at a marker made just before it (A) and one made just after (B).
A change whose event was read before A was made before the snapshot began: the snapshot holds
it. One read between A and B may or may not be in it. One read after B belongs to an operation
that had not returned when B was made, so nothing that depends on it (a row naming a file) can
be in the snapshot either. So a pass sends what was read since the previous pass's B (the two
stretches of this pass) plus the previous pass's stretch between A and B again (those changes
may have missed its snapshot): every change reaches the slave in the first pass whose
snapshot holds it, or the one after. The same holds for a directory watched only when its
event was read: read before A, its watch existed before the snapshot, and walking it in the
frozen copy finds what was made in it before; read between A and B, the next pass walks it
again. A pass that does not see its markers (the watcher stopped, its queue overflowed) is a
full one, and so is the next.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitlab_sync import btrfs, changelist, pg, rsync
from gitlab_sync.config import Log, Paths, SyncError, iso
from gitlab_sync.filters import frozen_excludes
from gitlab_sync.records import PassRecord
from gitlab_sync.watcher import Changes

if TYPE_CHECKING:
    from gitlab_sync.sender import Sender

MARK = ".mark-"
LISTS = Path("/run/gitlab-sync")

_TRIGGERS = {
    "timer": "the periodic full pass",
    "manual": "a pass run by hand",
    "final": "the final pass of a planned switchover",
}


def folder(paths: Paths) -> Path:
    """Where the master's frozen copies (and the watcher's markers) are made."""
    return paths.sync / ".frozen"


def clean(paths: Paths, log: Log) -> None:
    """Delete what passes cut short left in the frozen folder (the pass lock held)."""
    where = folder(paths)
    for entry in sorted(where.iterdir()) if where.is_dir() else ():
        try:
            entry.rmdir() if entry.name.startswith(MARK) else btrfs.delete(entry)
        except (OSError, SyncError) as exc:
            log(f"could not delete {entry}, left by a pass cut short: {exc}")
            continue
        log(f"deleted {entry.name}, left in {where} by a pass cut short")


@dataclass(frozen=True)
class Frozen:
    """A pass's frozen copy, and the changes since the previous pass's (None: unknown).

    ``instant`` is taken just before the snapshot: every write acknowledged before it is in
    the copy. The slave names the snapshot for it (``instant=`` on ``commit``), not for when it
    began receiving, which is later: a write acknowledged in between is not in the copy.
    """

    path: Path
    window: Changes | None
    instant: dt.datetime


@contextmanager
def frozen(sender: Sender, record: PassRecord) -> Iterator[Frozen]:
    """Freeze the source between the two cuts; the copy is deleted when the pass ends."""
    sender.phase(record, "freeze")
    where = folder(sender.paths)
    where.mkdir(exist_ok=True)
    copy = where / record.id
    carry, sender.carry = sender.carry, None
    watcher = sender.watcher
    first = watcher.cut(f"{MARK}{record.id}-a") if watcher else None
    instant = dt.datetime.now(dt.UTC)
    btrfs.snapshot(sender.paths.source, copy, readonly=True)
    try:
        second = watcher.cut(f"{MARK}{record.id}-b", reset=True) if watcher else None
        sender.carry = second
        window = None  # unknown without the previous pass's second stretch, or this one's
        if carry is not None and second is not None:
            window = carry | second if first is None else carry | first | second
        yield Frozen(copy, window, instant)
    finally:
        sender.phase(record, "thaw")
        try:
            btrfs.delete(copy)
        except SyncError as exc:
            sender.log(f"could not delete the frozen copy {copy}: {exc}")


def send(sender: Sender, record: PassRecord, copy: Frozen) -> tuple[rsync.Stats, dict[str, Any]]:
    """The change pass when it can be one, else the full pass; sent, and the record's fields."""
    fields: dict[str, Any] = {
        "postgresql": "snapshot" if pg.PgCluster(copy.path).has_cluster() else "none",
        "instant": iso(copy.instant),
    }
    reason = _full_reason(sender, record, copy.window)
    entries: list[bytes] = []
    if not reason and copy.window is not None:
        entries, reason = changelist.build(copy.path, copy.window)
    if not reason:
        sender.phase(record, "changes")
        LISTS.mkdir(parents=True, exist_ok=True)
        listed = LISTS / f"{record.id}.list"
        changelist.write(listed, entries)
        try:
            result = sender.copy(
                copy.path,
                record.id,
                frozen_excludes(),
                base=sender.base,
                files_from=str(listed),
                check=False,
            )
        finally:
            listed.unlink(missing_ok=True)
        if result.ok:
            return result.stats, {**fields, "kind": "change", "changed": len(entries)}
        reason = refused_base(result)
        if not reason:
            raise SyncError(sender.explain(result))
        sender.log(f"pass {record.id}: {reason}; sending the whole tree")
    sender.phase(record, "files")
    result = sender.copy(copy.path, record.id, frozen_excludes())
    return result.stats, {**fields, "kind": "full", "full_reason": reason}


def _full_reason(sender: Sender, record: PassRecord, window: Changes | None) -> str:
    """Why this pass must send the whole tree ("": it can send what changed)."""
    if not sender.base:
        return sender.no_base
    if record.trigger in _TRIGGERS:
        return _TRIGGERS[record.trigger]
    if window is None:
        why = sender.watcher.note if sender.watcher else ""
        return f"the changes since the last pass are unknown ({why or 'a marker was not seen'})"
    if window.doubt:
        return window.doubt
    if not sender.slave_keeps_snapshots():
        return "the slave's sync area is not on btrfs: it takes whole trees only"
    return ""


def refused_base(result: rsync.Result) -> str:
    """The receiver's refusal of a change pass's base, in its words ("" if it was not that)."""
    for line in result.stderr_tail:
        if line.startswith("gitlab-sync receiver:") and "base=" in line:
            return line.removeprefix("gitlab-sync receiver:").strip()
    return ""
