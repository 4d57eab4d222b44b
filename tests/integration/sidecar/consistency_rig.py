"""The rig of the consistency tests: a sync pair, a GitLab writing on its master, kills.

Built on :func:`sync_pair.sync_pair` for either path (``fs="btrfs"``: passes from one instant;
``fs="plain"``: the fallback's backup passes). The master's GitLab runs on the pair's own
master tree with the writer in it (``consistency_writer``); the master (GitLab and sidecar) can
be killed with SIGKILL and started again; any snapshot of the slave can be given a GitLab of
its own on a writable copy (``snapshot_check.Checker``: a btrfs snapshot of it on the slave's
filesystem, or a copy in a Docker volume) and checked with :mod:`ops.rehearsal.verify`.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
import statistics
import tarfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from gitlab_sync.config import parse_iso
from ops.rehearsal import standin as gl
from ops.rehearsal import verify
from tests.integration.sidecar.consistency_writer import (
    GitLab,
    Writer,
    require_images,
    standin,
    start_gitlab,
)
from tests.integration.sidecar.snapshot_check import Checker
from tests.integration.sidecar.sync_pair import Pair, sync_pair, wait_for

ALONE = "dr_alone"  # rows inserted by a test alone, with the writer stopped
PAUSE = 0.3  # between two uploads: 2 or 3 a second and a push, not half of a core
PG_DATA = "data/postgresql/data"
WINDOW = {
    "btrfs": {"freeze", "changes", "files", "thaw"},
    "plain": {"backup-start", "refs", "files", "backup-stop"},
}
"""The phases in which a pass copies the tree: from its frozen copy, or inside the backup."""


@dataclass
class Rig:
    pair: Pair
    gitlab: GitLab
    writer: Writer
    checker: Checker
    stack: ExitStack  # the pair and all in it
    started: float = 0.0  # when the master's writer last started (after a kill: again)

    @property
    def fs(self) -> str:
        return self.pair.fs

    def start(self) -> None:
        """The writer, then the sender."""
        self.writer.start()
        self.started = time.time()
        self.pair.master.sync("start")

    def close(self) -> None:
        """Remove the pair and everything in it (a second call does nothing)."""
        self.stack.close()

    def passes(self) -> dict[str, Any]:
        """The master sidecar's ``passes.json``, with ``docker cp``: no process started in it
        (polled often, while the machine is busy), and from a killed sidecar too."""
        try:
            stream, _ = self.pair.master.container.get_archive("/state/passes.json")
        except docker.errors.NotFound:
            return {}
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile("passes.json")
            try:
                data: dict[str, Any] = json.loads(member.read()) if member else {}
            except ValueError:  # read while it was written
                return {}
        return data

    def phase(self) -> str:
        """The phase of the master's pass in progress, or "" between passes."""
        now = self.passes().get("in_progress")
        return str(now.get("phase", "")) if now else ""

    def wait_phase(self, phases: set[str]) -> None:
        """Wait until the master's pass is in one of ``phases`` (polled as fast as it goes)."""
        what = f"a pass in {'/'.join(sorted(phases))}"
        wait_for(lambda: self.phase() in phases, 60, what, every=0.02)

    def wait_published(self, after: str, since: float = 0.0) -> str:
        """Wait until the slave's ``current`` is another snapshot than ``after``, and one
        whose pass began after ``since`` (``time.time()``); its name."""

        def newer() -> str | None:
            name: str | None = self.pair.slave.status()["current"]
            fresh = name and name != after and self.snapshot_began(name) > since
            return name if fresh else None

        found: str = wait_for(newer, 120, f"a snapshot other than {after!r} on the slave", 0.5)
        return found

    def settled_current(self) -> str:
        """The slave's ``current`` once it has dropped (or committed) the pass a kill cut."""

        def settled() -> str | None:
            status = self.pair.slave.status()
            return None if status["in_progress"] else status["current"]

        what = "the slave to end the pass the kill cut short, with a complete snapshot"
        name: str = wait_for(settled, 30, what, 0.3)
        return name

    def kill_master(self) -> dict[str, Any]:
        """SIGKILL GitLab and its sidecar; returns the sidecar's passes.json as it was left."""
        self.pair.master.container.kill(signal="SIGKILL")  # first: the pass stops where it is
        self.gitlab.container.kill(signal="SIGKILL")
        return self.passes()

    def master_restart(self, killed: str) -> None:
        """Start the killed master again: GitLab (crash recovery) and its writer, and the
        sidecar. On the fallback the sidecar starts once GitLab is ready (a backup pass needs
        PostgreSQL answering); on btrfs together with GitLab, as a host's containers start at
        boot (a pass from one instant needs nothing of it: its first may freeze a PostgreSQL
        not yet recovered, another crash image). On btrfs, the frozen copy (and markers) of
        ``killed``, the pass the kill cut short, must then be deleted: a restart leaves no
        snapshot behind on the master."""
        sidecar = self.pair.master.container
        self.gitlab.container.start()
        if self.fs == "btrfs":
            sidecar.start()
        gl.wait_ready(self.gitlab.url, 120)
        self.writer.start()
        self.started = time.time()
        if self.fs != "btrfs":
            sidecar.start()
        wait_for(
            lambda: self.pair.master.sync("health", check=False).strip() == "healthy",
            30,
            "the master's sidecar",
        )
        if self.fs == "btrfs" and killed:
            wait_for(
                lambda: killed not in self.pair.master.run(["ls", "-a", "/sync/.frozen"]),
                60,
                f"the restarted sidecar to delete what pass {killed} left in /sync/.frozen",
                every=0.5,
            )

    def snapshot_began(self, name: str) -> float:
        """Snapshot ``name``'s ``started_at`` (``time.time()``): every write acknowledged before
        it must be in the snapshot, as promotion's freshness says. On btrfs the instant the
        master froze its tree (its ``instant=`` on commit), on the fallback when the slave
        began receiving, after the master's ``pg_backup_start``."""
        meta = json.loads(self.pair.slave.run(["cat", f"/sync/snapshots/{name}.json"]))
        return parse_iso(meta["started_at"]).timestamp()

    def assert_as_copied(self, name: str) -> None:
        """How each path copies a live PostgreSQL: on btrfs a crash image from one instant (no
        backup label) in a sealed snapshot; on the fallback a base backup with its label.
        Neither holds the server's pid file."""
        data = f"/sync/snapshots/{name}/{PG_DATA}"
        slave = self.pair.slave
        assert not slave.succeeds(["test", "-e", f"{data}/postmaster.pid"]), name
        if self.fs == "btrfs":
            assert not slave.succeeds(["test", "-e", f"{data}/backup_label"]), (
                f"snapshot {name} holds a backup label: not a pass from one instant"
            )
            ro = slave.run(["btrfs", "property", "get", "-ts", f"/sync/snapshots/{name}", "ro"])
            assert ro.strip() == "ro=true", f"snapshot {name} is not sealed: {ro.strip()}"
        else:
            assert slave.succeeds(["test", "-s", f"{data}/backup_label"]), (
                f"snapshot {name}: a live PostgreSQL was copied without its backup label"
            )

    @contextmanager
    def gitlab_on_copy(self, snapshot: str) -> Iterator[tuple[GitLab, dict[str, Any]]]:
        """A GitLab (not waited for) on a writable copy of ``snapshot``, and prepare's answer;
        the GitLab goes afterwards, the copy when :meth:`Checker.remove` or the pair ends."""
        copy, prepared = self.checker.copy(snapshot, f"{snapshot}-{uuid.uuid4().hex[:6]}")
        with ExitStack() as stack:
            tc = standin(self.checker.host(copy), "copy")
            stack.enter_context(tc)
            yield GitLab(tc), prepared

    def check_copy(self, snapshot: str, before: float, label: str) -> dict[str, Any]:
        """Start GitLab on a copy of ``snapshot``; it is whole, it holds everything the writer
        acknowledged before ``before``, and the snapshot itself is not altered by it."""
        path = f"/sync/snapshots/{snapshot}"
        digest = self.pair.slave.sync("manifest", path, "--digest", "--no-hash").strip()
        expect = self.writer.expectation(before)
        with self.gitlab_on_copy(snapshot) as (copy, prepared):
            report = verify.verify(copy.container, copy.url, expect, ready_timeout=120)
            if not report.ok:
                print(copy.container.logs().decode(errors="replace")[-4000:])
                passes = [line for line in self.pair.master.logs().splitlines() if " pass " in line]
                print("\n".join(passes[-6:]))
            assert report.ok, f"{label}: " + "; ".join(report.failures())
        after = self.pair.slave.sync("manifest", path, "--digest", "--no-hash").strip()
        assert after == digest, f"{label}: starting GitLab on a copy altered snapshot {snapshot}"
        self.checker.remove(prepared["target"], prepared)
        return {
            "copy": f"{prepared.get('method')} in {prepared.get('seconds')} s",
            "ready": report.checks[0].detail,
            "rows": len(expect.rows),
            "commits": len(expect.commits),
            "uploads": len(expect.uploads),
        }


def _build(fs: str) -> Rig:
    """A pair on ``fs`` with a ready GitLab on its master, the writer and sender not started;
    whatever was made is removed if a step fails."""
    stack = ExitStack()
    try:
        pair = stack.enter_context(sync_pair(fs=fs, start=False))
        gitlab = start_gitlab(pair)
        gl.psql(gitlab.container, f"CREATE TABLE {ALONE} (n bigint PRIMARY KEY)")
        writer = Writer(gitlab, pause=PAUSE, moves=fs == "btrfs")
        return Rig(pair, gitlab, writer, Checker(pair), stack)
    except BaseException:
        stack.close()
        raise


@contextmanager
def rigs(filesystems: tuple[str, ...]) -> Iterator[dict[str, Rig]]:
    """A rig per filesystem, built at the same time (each mostly waits for its GitLab's
    first start); each writes and syncs once :meth:`Rig.start` is called, and goes with
    :meth:`Rig.close` or at the end."""
    require_images()
    with ExitStack() as stack:
        with concurrent.futures.ThreadPoolExecutor(len(filesystems)) as pool:
            futures = {fs: pool.submit(_build, fs) for fs in filesystems}
        built = {fs: f.result() for fs, f in futures.items() if not f.exception()}
        for made in built.values():
            stack.callback(made.close)
        for future in futures.values():
            if future.exception():
                future.result()  # raises it, once the others are set to go
        yield built


_PASS = re.compile(r"pass \S+ \((\w+)\) ok in ([\d.]+) s(?:, (change|full))?")
_BACKUP = re.compile(
    r"PostgreSQL backup \(backup adds ([\d.]+) s, (\d+) bytes of WAL, (\d+) in pg_wal files"
)


def figures(logs: str) -> str:
    """The master's complete passes under the writer's load, from its log, in one line."""
    found = [(float(s), kind or "full") for _t, s, kind in _PASS.findall(logs)]
    if not found:
        return "no complete pass logged"
    seconds = [s for s, _ in found]
    kinds = {kind: sum(k == kind for _, k in found) for kind in sorted({k for _, k in found})}
    line = (
        f"{len(found)} complete passes {kinds}: {statistics.median(seconds):.2f} s median "
        f"(max {max(seconds):.2f})"
    )
    backups = [tuple(map(float, m)) for m in _BACKUP.findall(logs)]
    if backups:
        adds, wal, files = zip(*backups, strict=True)
        line += (
            f"; the backup adds {statistics.median(adds):.2f} s median (max {max(adds):.2f}), "
            f"WAL per pass {statistics.median(wal) / 1e6:.3f} MB median, pg_wal files "
            f"{statistics.median(files) / 1e6:.2f} MB median"
        )
    return line
