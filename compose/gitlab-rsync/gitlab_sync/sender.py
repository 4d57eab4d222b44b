"""The master's side: passes (one rsync of the whole tree, then a commit), triggered by changes.

A pass starts when inotify reports changes (batched: it waits for ``batch`` seconds of quiet,
or ``max_delay`` at most) and every ``interval`` seconds regardless, which catches what events
miss. When inotify cannot watch the tree (watches exhausted), status says so and timed passes
carry on alone.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gitlab_sync import keys, rsync
from gitlab_sync.config import Pairing, Paths, SyncError, Tunables, iso, read_json, write_json

Log = Callable[[str], None]


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
        self.passes.update(in_progress=asdict(record))
        try:
            record = self._transfer(record)
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
        self.log(
            f"pass {record.id} ({trigger}) {record.outcome} in {record.duration_s:.2f} s: "
            f"{record.files} files, {record.files_transferred} sent, "
            f"{record.bytes_transferred} bytes{': ' + record.error if record.error else ''}"
        )
        return record

    def _transfer(self, record: PassRecord) -> PassRecord:
        started = dt.datetime.now(dt.UTC)
        keys.write_trust(self.paths, self.pairing)
        Path("/run/gitlab-sync").mkdir(parents=True, exist_ok=True)
        epoch = str(self.pairing.epoch)
        argv = rsync.client_argv(
            str(self.paths.source),
            f"{self.pairing.peer.host}:incoming/",
            keys.ssh_argv(self.paths, self.pairing),
            f"gitlab-sync-recv rsync {epoch} {record.id}",
            bwlimit=self.tunables.bwlimit,
        )
        run = rsync.Run(argv, self.log if not self._logged_command else lambda _m: None)
        self._logged_command = True
        self._run = run
        if self._stopping.is_set():
            run.stop()
        result = run.wait()
        self._run = None
        if not result.ok:
            raise SyncError(_explain(result, str(self.pairing.peer)))
        stats = result.stats
        counts = [
            f"files={stats.files}",
            f"bytes={stats.total_bytes}",
            f"files_transferred={stats.files_transferred}",
            f"bytes_transferred={stats.transferred_bytes}",
        ]
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
            files=stats.files,
            files_transferred=stats.files_transferred,
            bytes=stats.total_bytes,
            bytes_transferred=stats.transferred_bytes,
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
        while not self._stopping.is_set():
            now = time.monotonic()
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


class Watcher:
    """inotify on the source tree through ``inotifywait``; says when a batch of changes is due."""

    def __init__(self, root: Path, log: Log):
        self.root, self.log = root, log
        self.mode = "starting"
        self.note = ""
        self._first = 0.0
        self._last = 0.0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    def start(self, ready_within: float = 120.0) -> None:
        """Start watching; returns once the watches are set up (or failed, or time ran out)."""
        self._ready = threading.Event()
        threading.Thread(target=self._read, name="inotify", daemon=True).start()
        self._ready.wait(ready_within)

    def _read(self) -> None:
        self._proc = subprocess.Popen(
            [
                "inotifywait",
                "-m",
                "-r",
                "--format",
                "%e",
                "-e",
                "modify,attrib,close_write,move,create,delete,delete_self,move_self",
                str(self.root),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        errors: list[str] = []
        reader = threading.Thread(target=self._read_stderr, args=(errors,), daemon=True)
        reader.start()
        for _line in self._proc.stdout or ():
            now = time.monotonic()
            with self._lock:
                if not self._first:
                    self._first = now
                self._last = now
        code = self._proc.wait()
        reader.join(5)  # every line of stderr read before it is judged
        err = " ".join(errors)
        if "upper limit on inotify" in err:
            self.note = (
                "inotify watches exhausted (raise fs.inotify.max_user_watches); "
                "falling back to timed passes"
            )
        else:
            self.note = f"inotify stopped (exit {code}): {err.strip()[:200]}; timed passes only"
        self.mode = "timer"
        self.log(self.note)
        self._ready.set()

    def _read_stderr(self, errors: list[str]) -> None:
        stderr = self._proc.stderr if self._proc else None
        for line in stderr or ():
            if "Watches established" in line:
                self.mode = "inotify"
                self._ready.set()
            elif "Setting up watches" not in line:
                errors.append(line.strip())

    def due(self, now: float, batch: float, max_delay: float) -> bool:
        with self._lock:
            if not self._first:
                return False
            return now - self._last >= batch or now - self._first >= max_delay

    def take(self) -> None:
        with self._lock:
            self._first = self._last = 0.0

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
