"""The master's side: consistent passes, triggered by changes.

A pass copies the repositories' refs first, then the rest of the tree, then commits; while
GitLab's PostgreSQL runs, the whole pass is a base backup through PostgreSQL's low-level API
(``pg.py``), and its label and WAL follow the files. Every rsync of a pass goes into the same
``.incoming`` on the slave, so a pass is published whole or not at all.

A pass starts when inotify reports changes (batched: it waits for ``batch`` seconds of quiet,
or ``max_delay`` at most), when PostgreSQL ran a transaction since the last backup pass (asked
every ``PG_POLL`` seconds; its own files are not watched, since a backup changes them), and
every ``interval`` seconds regardless, which catches what events miss. When inotify cannot watch
the tree (watches exhausted), status says so and timed passes carry on alone. The watcher is in
``watcher.py``, the rsync filters of each step in ``filters.py``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gitlab_sync import keys, metrics, pg, rsync
from gitlab_sync.config import (
    Log,
    Pairing,
    Paths,
    SyncError,
    Tunables,
    iso,
    read_json,
    write_json,
)
from gitlab_sync.filters import not_refs_filters, postgres_excludes, refs_filters, wal_filters
from gitlab_sync.watcher import Watcher


@dataclass(frozen=True)
class PassRecord:
    """One pass as status reports it."""

    id: str
    trigger: str
    started_at: str
    ended_at: str = ""
    duration_s: float = 0.0
    files: int = 0
    files_transferred: int = 0
    bytes: int = 0
    bytes_transferred: int = 0
    outcome: str = "running"  # running, ok, failed, stopped
    snapshot: str = ""
    error: str = ""
    postgresql: str = ""  # backup (low-level API), offline (server down), none (no cluster)
    backup_window_s: float = 0.0  # pg_backup_start to pg_backup_stop
    backup_overhead_s: float = 0.0  # what the backup adds: start (checkpoint), stop, label, WAL
    wal_bytes: int = 0  # WAL written during the backup window (stop LSN - start LSN)
    wal_bytes_transferred: int = 0  # size of the pg_wal files sent after the stop
    wal_bytes_sent: int = 0  # what that took on the wire (compressed)


class PassLog:
    """``passes.json``: the last complete pass, the last pass, the one in progress, last error."""

    def __init__(self, paths: Paths):
        self.path = paths.passes
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any]:
        data = read_json(self.path)
        return data if isinstance(data, dict) else {}

    def update(self, **fields: Any) -> None:
        with self._lock:
            data = self.read()
            data.update(fields)
            write_json(self.path, data)


@contextmanager
def pass_lock(paths: Paths) -> Iterator[None]:
    """One pass at a time on the master, whether the daemon or ``gitlab-sync pass`` runs it."""
    paths.state.mkdir(parents=True, exist_ok=True)
    with open(paths.state / "pass.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class Sender:
    """Runs passes from this master to its slave."""

    def __init__(self, paths: Paths, pairing: Pairing, tunables: Tunables, log: Log):
        self.paths, self.pairing, self.tunables, self.log = paths, pairing, tunables, log
        self.passes = PassLog(paths)
        self._run: rsync.Run | None = None
        self._stopping = threading.Event()
        self._logged_command = False
        # PostgreSQL's transaction snapshot as the last backup pass saw it just before
        # pg_backup_stop: the loop starts a pass when it changes (see PG_POLL).
        self.pg_seen = ""

    def hello(self) -> dict[str, Any]:
        """Ask the slave who it is: proves address, host key, our key and the epoch."""
        keys.write_trust(self.paths, self.pairing)
        out = keys.remote(self.paths, self.pairing, ["hello", str(self.pairing.epoch)], timeout=30)
        answer: dict[str, Any] = json.loads(out)
        return answer

    def run_pass(self, trigger: str) -> PassRecord:
        """One complete pass, or a failed one; the outcome is recorded in ``passes.json``."""
        with pass_lock(self.paths):
            return self._run_pass(trigger)

    def _run_pass(self, trigger: str) -> PassRecord:
        started = dt.datetime.now(dt.UTC)
        pass_id = started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        record = PassRecord(id=pass_id, trigger=trigger, started_at=iso(started))
        self.passes.update(in_progress={**asdict(record), "phase": "starting"})
        try:
            record = self._transfer(record, final=trigger == "final")
        except SyncError as exc:
            record = _end(record, started, "failed", error=str(exc))
        if self._stopping.is_set() and record.outcome == "failed":
            record = _end(record, started, "stopped", error="stopped by gitlab-sync stop")
        fields: dict[str, Any] = {"in_progress": None, "last_pass": asdict(record)}
        if record.outcome == "ok":
            fields["last_complete"] = asdict(record)
        elif record.outcome == "failed":
            fields["last_error"] = {"at": record.ended_at, "message": record.error}
        self.passes.update(**fields)
        self._count(record)
        self.log(
            f"pass {record.id} ({trigger}) {record.outcome} in {record.duration_s:.2f} s: "
            f"{record.files} files, {record.files_transferred} sent, "
            f"{record.bytes_transferred} bytes"
            + (
                f", PostgreSQL {record.postgresql}"
                + (
                    f" (backup adds {record.backup_overhead_s:.2f} s, "
                    f"{record.wal_bytes} bytes of WAL, {record.wal_bytes_transferred} in pg_wal "
                    f"files, {record.wal_bytes_sent} sent)"
                    if record.postgresql == "backup" and record.outcome == "ok"
                    else ""
                )
                if record.postgresql
                else ""
            )
            + (f": {record.error}" if record.error else "")
        )
        return record

    def _count(self, record: PassRecord) -> None:
        """The pass in the metrics' counters (a counter that cannot be written fails no pass)."""
        try:
            metrics.count_pass(
                self.paths,
                record.trigger,
                record.outcome,
                record.files_transferred,
                record.bytes_transferred,
            )
        except OSError as exc:
            self.log(f"could not count pass {record.id} in the metrics: {exc}")

    def _transfer(self, record: PassRecord, final: bool = False) -> PassRecord:
        """Refs, then everything else, then (PostgreSQL running) the backup label and pg_wal."""
        started = dt.datetime.now(dt.UTC)
        keys.write_trust(self.paths, self.pairing)
        Path("/run/gitlab-sync").mkdir(parents=True, exist_ok=True)
        cluster = pg.PgCluster(self.paths.source)
        mode = postgresql_mode(cluster)
        if final and mode == "backup":
            raise SyncError(
                "GitLab's PostgreSQL still answers on the master: stop GitLab before the "
                "final pass of a planned switchover"
            )
        if mode == "offline":
            self.pg_seen = "offline"  # the server coming back is a change
        totals = rsync.Stats()
        fields: dict[str, Any] = {"postgresql": mode}
        session: pg.BackupSession | None = None
        pid_before = cluster.pid_state()
        overhead = 0.0  # what the backup adds to the pass: pg_backup_start, then stop to WAL
        try:
            if mode == "backup":
                self._phase(record, "backup-start")
                begun = time.monotonic()
                session = pg.BackupSession(cluster, self.log)
                session.start(f"gitlab-sync {record.id}")
                overhead += time.monotonic() - begun
            self._phase(record, "refs")
            totals = _add(totals, self._rsync(record.id, refs_filters(), retry_vanished=True))
            self._phase(record, "files")
            excludes = postgres_excludes() if mode == "backup" else []
            totals = _add(
                totals,
                self._rsync(record.id, [*not_refs_filters(), *excludes], retry_vanished=True),
            )
            if session is not None:
                wal, backup = self._finish_backup(record, session, cluster)
                totals = _add(totals, wal)
                overhead += backup.pop("finish_s")
                fields.update(backup, backup_overhead_s=round(overhead, 3))
        finally:
            if session is not None:
                session.close()
        if mode == "offline" and (cluster.pid_state() != pid_before or cluster.listening()):
            raise SyncError("the master's PostgreSQL started during the pass; not committed")
        counts = [
            f"files={totals.files}",
            f"bytes={totals.total_bytes}",
            f"files_transferred={totals.files_transferred}",
            f"bytes_transferred={totals.transferred_bytes}",
        ]
        if "wal_bytes" in fields:
            counts.append(f"wal_bytes={fields['wal_bytes']}")
        epoch = str(self.pairing.epoch)
        self._phase(record, "commit")
        out = keys.remote(
            self.paths, self.pairing, ["commit", epoch, record.id, *counts], timeout=600
        )
        done = json.loads(out)
        self.passes.update(snapshots=done["snapshots"])
        return _end(
            record,
            started,
            "ok",
            snapshot=done["snapshot"],
            files=totals.files,
            files_transferred=totals.files_transferred,
            bytes=totals.total_bytes,
            bytes_transferred=totals.transferred_bytes,
            **fields,
        )

    def _finish_backup(
        self, record: PassRecord, session: pg.BackupSession, cluster: pg.PgCluster
    ) -> tuple[rsync.Result, dict[str, Any]]:
        """pg_backup_stop, its label into the pass, then pg_wal; the WAL rsync and figures."""
        self._phase(record, "backup-stop")
        finishing = time.monotonic()
        seen = session.transactions()
        stop = session.stop()
        window = time.monotonic() - session.started
        self._send_label(record.id, "backup_label", stop.label)
        if stop.tablespace_map:
            self._send_label(record.id, "tablespace_map", stop.tablespace_map)
        # The WAL from the backup's first segment to its last: older segments (kept for
        # wal_keep_size) and recycled ones waiting ahead are of no use to this copy.
        first = pg.start_wal_file(stop.label)
        skip = pg.segments_outside(cluster.data / "pg_wal", first, stop.last_wal)
        self._phase(record, "wal")
        # Compressed: a segment is 16 MB whatever was written in it, mostly zeros after the
        # switch pg_backup_stop makes.
        wal = self._rsync(record.id, [*wal_filters(skip), "--compress"])
        if not (cluster.data / "pg_wal" / first).exists():
            raise SyncError(
                f"WAL segment {first} was recycled during the pass: raise "
                "postgresql['wal_keep_size'] or max_replication_slots on the master"
            )
        self.pg_seen = seen
        return wal, {
            "finish_s": time.monotonic() - finishing,
            "backup_window_s": round(window, 3),
            "wal_bytes": pg.lsn_bytes(stop.lsn) - pg.lsn_bytes(session.start_lsn),
            "wal_bytes_transferred": wal.stats.transferred_bytes,
            "wal_bytes_sent": wal.stats.bytes_sent,
        }

    def _phase(self, record: PassRecord, phase: str) -> None:
        """Where the pass is (status shows it; the tests kill the master in each phase)."""
        self.passes.update(in_progress={**asdict(record), "phase": phase})

    def _rsync(
        self, pass_id: str, filters: list[str], retry_vanished: bool = False
    ) -> rsync.Result:
        """One rsync of the source into the pass's ``.incoming``, through ``filters``.

        With ``retry_vanished``, a run that saw files vanish (exit 24: a repack or pack-refs
        moved objects or refs while the list was made) is run again, up to three times, so
        what moved is picked up where it went.
        """
        argv = rsync.client_argv(
            str(self.paths.source),
            f"{self.pairing.peer.host}:incoming/",
            keys.ssh_argv(self.paths, self.pairing),
            f"gitlab-sync-recv rsync {self.pairing.epoch} {pass_id}",
            bwlimit=self.tunables.bwlimit,
            extra=filters,
        )
        for _attempt in range(3 if retry_vanished else 1):
            run = rsync.Run(argv, self.log if not self._logged_command else lambda _m: None)
            self._logged_command = True
            self._run = run
            if self._stopping.is_set():
                run.stop()
            result = run.wait()
            self._run = None
            if not result.ok:
                raise SyncError(_explain(result, str(self.pairing.peer)))
            if result.code != 24:
                break
        return result

    def _send_label(self, pass_id: str, name: str, text: str) -> None:
        keys.remote(
            self.paths,
            self.pairing,
            ["label", str(self.pairing.epoch), pass_id, name],
            timeout=60,
            input_text=text,
        )

    def stop(self) -> None:
        """Stop the pass in progress (it is not committed) and any pass to come."""
        self._stopping.set()
        run = self._run
        if run:
            run.stop()

    def loop(self, watcher: Watcher) -> None:
        """Run passes on change and on the timer until :meth:`stop`; failures back off."""
        next_full = 0.0  # a full pass right away: catches up after a restart
        failures = 0
        retry_at = 0.0
        next_poll = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if self.pg_seen and now >= next_poll:
                next_poll = now + PG_POLL
                if pg.transactions(pg.PgCluster(self.paths.source)) not in {None, self.pg_seen}:
                    watcher.poke()
            trigger = ""
            if now >= next_full:
                trigger = "timer"
            elif watcher.due(now, self.tunables.batch, self.tunables.max_delay):
                trigger = "change"
            if trigger and now >= retry_at:
                watcher.take()
                next_full = now + self.tunables.interval
                record = self.run_pass(trigger)
                if record.outcome == "failed":
                    failures += 1
                    retry_at = time.monotonic() + min(60.0, 2.0 ** min(failures, 6))
                    next_full = min(next_full, retry_at)
                else:
                    failures, retry_at = 0, 0.0
                continue
            self._stopping.wait(0.05)


# How often the loop asks PostgreSQL whether a transaction ran since the last backup pass. Its
# own files and logs are left out of inotify's watch (watch_exclude): a backup pass changes them
# (checkpoint, WAL switch, log lines), and watching them would start pass after pass on an idle
# GitLab, each with a checkpoint.
PG_POLL = 1.0


def postgresql_mode(cluster: pg.PgCluster) -> str:
    """How a pass copies PostgreSQL: ``backup`` while it answers, ``offline`` when it is
    down (a stopped server's directory is consistent as it lies), ``none`` without a cluster."""
    if not cluster.has_cluster():
        return "none"
    if cluster.listening():
        return "backup"
    why = cluster.elsewhere()
    if why:
        raise SyncError(f"{why}: gitlab-sync cannot take a base backup through it")
    return "offline"


def _add(total: rsync.Stats, result: rsync.Result) -> rsync.Stats:
    one = result.stats
    return rsync.Stats(
        files=total.files + one.files,
        files_transferred=total.files_transferred + one.files_transferred,
        total_bytes=total.total_bytes + one.total_bytes,
        transferred_bytes=total.transferred_bytes + one.transferred_bytes,
        bytes_sent=total.bytes_sent + one.bytes_sent,
    )


def _end(record: PassRecord, started: dt.datetime, outcome: str, **fields: Any) -> PassRecord:
    ended = dt.datetime.now(dt.UTC)
    return PassRecord(
        **{
            **asdict(record),
            **fields,
            "outcome": outcome,
            "ended_at": iso(ended),
            "duration_s": round((ended - started).total_seconds(), 3),
        }
    )


def _explain(result: rsync.Result, peer: str) -> str:
    tail = "\n".join(result.stderr_tail)
    if result.code == 255 or "connection" in tail.lower() or "host key" in tail.lower():
        return keys.explain_ssh_failure(peer, result.code, tail)
    return result.message
