"""The master's side: passes, triggered by changes and by a timer.

How a pass copies the tree depends on the layout (``layout.py``): where GITLAB_HOME is a btrfs
subvolume, each pass sends from a read-only snapshot of it, taken at one instant, either whole
or by the paths that changed (``frozen_pass.py``); elsewhere (the fallback) it copies the live
tree, refs first, inside a PostgreSQL base backup (``backup_pass.py``). Every rsync of a pass
goes into the same ``.incoming`` on the slave, and a pass is published whole or not at all.

A pass starts when inotify reports changes (batched: it waits for ``batch`` seconds of quiet,
or ``max_delay`` at most), and every ``interval`` seconds regardless, which catches what
events miss. On the fallback PostgreSQL's own files are not watched (a backup changes them):
the loop asks it every ``PG_POLL`` seconds whether a transaction ran since the last backup
pass. When inotify cannot watch the tree (watches exhausted), status says so and timed passes
carry on alone. The watcher is in ``watcher.py``, the rsync filters of each step in
``filters.py``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from gitlab_sync import backup_pass, frozen_pass, keys, layout, metrics, pg, rsync
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
from gitlab_sync.records import PassRecord, summary
from gitlab_sync.watcher import Changes, Watcher


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
        self.layout = layout.detect(paths.source, paths.sync)
        self.passes = PassLog(paths)
        self.watcher: Watcher | None = None  # the daemon's, while its loop runs
        self._run: rsync.Run | None = None
        self._stopping = threading.Event()
        self._logged_command = False
        self._phases: list[tuple[str, float]] = []  # the pass's phases, and when each began
        # PostgreSQL's transaction snapshot as the last backup pass saw it just before
        # pg_backup_stop: the loop starts a pass when it changes (see PG_POLL).
        self.pg_seen = ""
        # What a change pass builds on: the snapshot the previous pass committed, what the
        # previous pass's cuts left to this one (frozen_pass.py), whether the slave keeps
        # btrfs snapshots (asked once), and why there is no base.
        self.base = ""
        self.carry: Changes | None = None
        self._slave_snapshots: bool | None = None
        self.no_base = "the first pass since the sender started"

    def hello(self) -> dict[str, Any]:
        """Ask the slave who it is: proves address, host key, our key and the epoch."""
        keys.write_trust(self.paths, self.pairing)
        out = keys.remote(self.paths, self.pairing, ["hello", str(self.pairing.epoch)], timeout=30)
        answer: dict[str, Any] = json.loads(out)
        return answer

    def slave_keeps_snapshots(self) -> bool:
        """Whether the slave's sync area is on btrfs (its ``hello`` says; asked once)."""
        if self._slave_snapshots is None:
            found = self.hello().get("layout")
            method = layout.Layout.from_json(found).method if isinstance(found, dict) else ""
            self._slave_snapshots = method == "snapshots"
        return self._slave_snapshots

    def run_pass(self, trigger: str) -> PassRecord:
        """One complete pass, or a failed one; the outcome is recorded in ``passes.json``."""
        with pass_lock(self.paths):
            return self._run_pass(trigger)

    def _run_pass(self, trigger: str) -> PassRecord:
        started = dt.datetime.now(dt.UTC)
        pass_id = started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        record = PassRecord(id=pass_id, trigger=trigger, started_at=iso(started))
        self._phases = []
        self.phase(record, "starting")
        try:
            record = self._transfer(record, final=trigger == "final")
        except (SyncError, OSError) as exc:
            record = _end(record, started, "failed", error=_sentence(exc))
        record = replace(record, phase_s=self._phase_seconds())
        if self._stopping.is_set() and record.outcome == "failed":
            record = _end(record, started, "stopped", error="stopped by gitlab-sync stop")
        fields: dict[str, Any] = {"in_progress": None, "last_pass": asdict(record)}
        if record.outcome == "ok":
            fields["last_complete"] = asdict(record)
            self.base = record.snapshot
        else:
            # The slave's current is not known to be this pass's base any more: the next
            # pass sends the whole tree, and asks the slave again.
            self.base, self._slave_snapshots = "", None
            self.no_base = f"the previous pass {record.outcome}"
        if record.outcome == "failed":
            fields["last_error"] = {"at": record.ended_at, "message": record.error}
        self.passes.update(**fields)
        self._count(record)
        self.log(summary(record))
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
                kind=record.kind,
            )
        except OSError as exc:
            self.log(f"could not count pass {record.id} in the metrics: {exc}")

    def _transfer(self, record: PassRecord, final: bool = False) -> PassRecord:
        """The pass's rsyncs (from a frozen copy, or the fallback's), then the commit."""
        started = dt.datetime.now(dt.UTC)
        keys.write_trust(self.paths, self.pairing)
        Path("/run/gitlab-sync").mkdir(parents=True, exist_ok=True)
        cluster = pg.PgCluster(self.paths.source)
        if final and cluster.has_cluster() and cluster.listening():
            raise SyncError(
                "GitLab's PostgreSQL still answers on the master: stop GitLab before the "
                "final pass of a planned switchover"
            )
        if self.layout.method == "snapshots":
            with frozen_pass.frozen(self, record) as copy:
                totals, fields = frozen_pass.send(self, record, copy)
                done = self._commit(record, totals, fields)
        else:
            totals, fields = backup_pass.send(self, record)
            done = self._commit(record, totals, fields)
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

    def _commit(
        self, record: PassRecord, totals: rsync.Stats, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Publish the pass on the slave; its answer (the snapshot's name, how many)."""
        counts = [
            f"files={totals.files}",
            f"bytes={totals.total_bytes}",
            f"files_transferred={totals.files_transferred}",
            f"bytes_transferred={totals.transferred_bytes}",
        ]
        if "wal_bytes" in fields:
            counts.append(f"wal_bytes={fields['wal_bytes']}")
        if "instant" in fields:
            counts.append(f"instant={fields['instant']}")
        self.phase(record, "commit")
        out = keys.remote(
            self.paths,
            self.pairing,
            ["commit", str(self.pairing.epoch), record.id, *counts],
            timeout=600,
        )
        done: dict[str, Any] = json.loads(out)
        self.passes.update(snapshots=done["snapshots"])
        return done

    def phase(self, record: PassRecord, phase: str) -> None:
        """Where the pass is (status shows it; the tests kill the master in each phase)."""
        self._phases.append((phase, time.monotonic()))
        self.passes.update(in_progress={**asdict(record), "phase": phase})

    def _phase_seconds(self) -> dict[str, float]:
        """How long each phase of the pass took (a phase entered twice adds up)."""
        marks = [*self._phases, ("", time.monotonic())]
        spent: dict[str, float] = {}
        for (name, began), (_next, ended) in itertools.pairwise(marks):
            spent[name] = round(spent.get(name, 0.0) + ended - began, 3)
        return spent

    def copy(
        self,
        source: Path,
        pass_id: str,
        filters: list[str],
        *,
        base: str = "",
        files_from: str = "",
        retry_vanished: bool = False,
        check: bool = True,
    ) -> rsync.Result:
        """One rsync of ``source`` into the pass's ``.incoming``, through ``filters``; with
        ``files_from``, only the paths it lists, on top of the slave's snapshot ``base``.

        With ``retry_vanished``, a run that saw files vanish (exit 24: a repack or pack-refs
        moved objects or refs while the list was made) is run again, up to three times, so
        what moved is picked up where it went. With ``check``, a failed run raises.
        """
        words = f"gitlab-sync-recv rsync {self.pairing.epoch} {pass_id}"
        argv = rsync.client_argv(
            str(source),
            f"{self.pairing.peer.host}:incoming/",
            keys.ssh_argv(self.paths, self.pairing),
            words + (f" base={base}" if base else ""),
            bwlimit=self.tunables.bwlimit,
            extra=filters,
            files_from=files_from,
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
                if check:
                    raise SyncError(self.explain(result))
                return result
            if result.code != 24:
                break
        return result

    def explain(self, result: rsync.Result) -> str:
        """A failed rsync in one sentence: SSH's reasons spelled out, else rsync's."""
        tail = "\n".join(result.stderr_tail)
        if result.code == 255 or "connection" in tail.lower() or "host key" in tail.lower():
            return keys.explain_ssh_failure(str(self.pairing.peer), result.code, tail)
        return result.message

    def send_label(self, pass_id: str, name: str, text: str) -> None:
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
        self.watcher = watcher
        if self.layout.method == "snapshots":
            with pass_lock(self.paths):
                frozen_pass.clean(self.paths, self.log)
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


# How often the loop asks PostgreSQL whether a transaction ran since the last backup pass (the
# fallback only: there its own files and logs are left out of inotify's watch, see
# watcher.POSTGRESQL_OWN, since a backup pass changes them).
PG_POLL = 1.0


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


def _sentence(exc: SyncError | OSError) -> str:
    if isinstance(exc, OSError):  # a frozen copy or a marker that could not be made
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc)
