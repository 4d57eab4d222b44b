"""Every complete snapshot is a GitLab that starts whole: killed masters, and a planned switchover.

Real parts: a master stand-in GitLab and its gitlab-rsync sidecar sharing GITLAB_HOME (three
volumes, mounted read-only under /source in the sidecar as in the Compose stack), a slave
sidecar. A writer pushes commits over HTTP to several repositories and inserts rows while the
sync runs. The master (GitLab and sidecar) is killed with SIGKILL at random moments; each time
the slave's ``current`` snapshot is copied (``gitlab-sync prepare``), a stand-in is started on
the copy, and :mod:`ops.verify` checks it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import random
import re
import statistics
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from gitlab_sync.config import parse_iso
from gitlab_sync.manifest import differences
from ops.rehearsal import standin as gl
from ops.rehearsal import verify
from tests.integration.sidecar.sync_pair import (
    FAST,
    SYNC_IMAGE,
    CommandFailed,
    SidecarNode,
    new_volume,
    pair_up,
    run_once,
    start_sidecar,
    wait_for,
)

pytestmark = pytest.mark.integration

STANDIN_IMAGE = os.environ.get("STANDIN_IMAGE", "gitlab-dr/gitlab-standin:local")
PROJECTS = ("dr/alpha", "dr/beta", "dr/group/gamma")
TABLE = "dr_writes"
KILLS = int(os.environ.get("CONSISTENCY_KILLS", "10"))
OMNIBUS_CONFIG = "postgresql['max_replication_slots'] = 4\npostgresql['wal_keep_size'] = 256\n"
HOME_PARTS = {"config": "/etc/gitlab", "data": "/var/opt/gitlab", "logs": "/var/log/gitlab"}


def _volumes(client: docker.DockerClient, stack: ExitStack, tag: str) -> dict[str, str]:
    """Three new volumes, one per GITLAB_HOME part; removed when ``stack`` closes."""
    return {part: new_volume(client, stack, f"gitlab-dr-test-{tag}-{part}") for part in HOME_PARTS}


def rng_size(k: int) -> int:
    """Upload sizes from 1 KiB to 1 MiB."""
    return 1024 << (k % 11)


def _standin(volumes: dict[str, str], name: str) -> DockerContainer:
    tc = DockerContainer(STANDIN_IMAGE).with_exposed_ports(80)
    tc.with_name(name).with_env("GITLAB_OMNIBUS_CONFIG", OMNIBUS_CONFIG)
    for part, volume in volumes.items():
        tc.with_volume_mapping(volume, HOME_PARTS[part], "rw")
    return tc


def _url(tc: DockerContainer) -> str:
    return f"http://{tc.get_container_host_ip()}:{tc.get_exposed_port(80)}"


def _container(tc: DockerContainer) -> Container:
    container: Container = tc.get_wrapped_container()
    container.reload()
    return container


@dataclass
class Writer:
    """Pushes commits and inserts rows on the master while ``active``; records every ack."""

    master: DockerContainer
    workdir: Path
    active: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    rows: dict[int, float] = field(default_factory=dict)  # n -> acknowledged at (time.time())
    commits: list[tuple[str, str, float]] = field(default_factory=list)  # project, sha, at
    uploads: dict[str, tuple[str, float]] = field(default_factory=dict)  # path -> sha256, at
    next_row: int = 0
    threads: list[threading.Thread] = field(default_factory=list)
    busy: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def pause(self, timeout: float = 60.0) -> None:
        """Stop writing and wait for the requests in flight to end."""
        self.active.clear()
        with self.cond:
            self.cond.wait_for(lambda: self.busy == 0, timeout)

    @contextmanager
    def _op(self) -> Iterator[None]:
        with self.cond:
            self.busy += 1
        try:
            yield
        finally:
            with self.cond:
                self.busy -= 1
                self.cond.notify_all()

    def start(self) -> None:
        for target in (self._insert, self._push, self._upload):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.done.set()
        self.active.set()
        for thread in self.threads:
            thread.join(30)

    def _insert(self) -> None:
        while not self.done.is_set():
            self.active.wait()
            self.next_row += 1
            n = self.next_row
            with self._op():
                if not self.active.is_set():
                    continue
                try:
                    gl.psql(_container(self.master), f"INSERT INTO {TABLE} (n) VALUES ({n})")  # noqa: S608
                except Exception:  # killed master: not acknowledged
                    time.sleep(0.2)
                    continue
                self.rows[n] = time.time()

    def _push(self) -> None:
        turn = 0
        while not self.done.is_set():
            self.active.wait()
            # Every seventh push creates a repository: a pass may see it appear mid-way.
            project = f"dr/fresh/p{turn}" if turn % 7 == 6 else PROJECTS[turn % len(PROJECTS)]
            turn += 1
            with self._op():
                if not self.active.is_set():
                    continue
                try:
                    sha = gl.push_commit(
                        _url(self.master), project, self.workdir / project, message=f"w{turn}"
                    )
                except Exception:  # killed master: the next push of this project carries it
                    time.sleep(0.2)
                    continue
                self.commits.append((project, sha, time.time()))

    def _upload(self) -> None:
        k = 0
        while not self.done.is_set():
            self.active.wait()
            k += 1
            path = f"dr/{k % 50}/{k}.bin"
            data = os.urandom(rng_size(k))
            with self._op():
                if not self.active.is_set():
                    continue
                try:
                    gl.put_upload(_url(self.master), path, data)
                except Exception:  # killed master: not acknowledged
                    time.sleep(0.2)
                    continue
                self.uploads[path] = (hashlib.sha256(data).hexdigest(), time.time())
            time.sleep(0.1)

    def expectation(self, before: float) -> verify.Expectation:
        """What the copy must hold: everything acknowledged before ``before``."""
        newest: dict[str, str] = {}
        for project, sha, at in self.commits:
            if at < before:
                newest[project] = sha
        rows = frozenset(n for n, at in self.rows.items() if at < before)
        uploads = {p: digest for p, (digest, at) in self.uploads.items() if at < before}
        return verify.Expectation(table=TABLE, rows=rows, commits=newest, uploads=uploads)


@dataclass
class Rig:
    client: docker.DockerClient
    stack: ExitStack
    home: dict[str, str]
    sync_volume: str
    gitlab: DockerContainer
    master: SidecarNode
    slave: SidecarNode
    writer: Writer

    def master_restart(self) -> None:
        """Start the killed master again: GitLab (crash recovery), then its sidecar."""
        _container(self.gitlab).start()
        gl.wait_ready(_url(self.gitlab), 120)
        self.master.container.start()
        wait_for(
            lambda: self.master.sync("health", check=False).strip() == "healthy", 30, "sidecar"
        )

    def phase(self) -> str:
        """The phase of the master's pass in progress, or "" between passes."""
        out = self.master.run(["cat", "/state/passes.json"], check=False)
        try:
            now = json.loads(out).get("in_progress")
        except ValueError:
            return ""
        return str(now.get("phase", "")) if now else ""

    def kill_master(self) -> dict[str, Any]:
        """SIGKILL GitLab and its sidecar; returns the sidecar's passes.json as it was left."""
        sidecar, gitlab = self.master.container, _container(self.gitlab)
        sidecar.kill(signal="SIGKILL")  # first: the pass stops where it is
        gitlab.kill(signal="SIGKILL")
        self.writer.active.clear()
        stream, _ = self.master.container.get_archive("/state/passes.json")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile("passes.json")
            data: dict[str, Any] = json.loads(member.read()) if member else {}
        return data

    def snapshot_meta(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.slave.run(["cat", f"/sync/snapshots/{name}.json"]))
        return data

    @contextmanager
    def gitlab_on_copy(
        self, snapshot: str | None = None
    ) -> Iterator[tuple[DockerContainer, dict[str, Any]]]:
        """``gitlab-sync prepare`` into new volumes, and a stand-in started on them."""
        with ExitStack() as stack:
            tag = uuid.uuid4().hex[:8]
            volumes = _volumes(self.client, stack, f"copy-{tag}")
            binds = {self.sync_volume: {"bind": "/sync", "mode": "rw"}}
            for part, volume in volumes.items():
                binds[volume] = {"bind": f"/target/{part}", "mode": "rw"}
            argv = ["prepare", "/target", "--json"] + (["--snapshot", snapshot] if snapshot else [])
            prepared: dict[str, Any] = json.loads(run_once(self.client, SYNC_IMAGE, argv, binds))
            tc = _standin(volumes, f"gitlab-dr-test-copy-{tag}")
            stack.enter_context(tc)
            yield tc, prepared


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    client = docker.from_env()
    for image in (STANDIN_IMAGE, SYNC_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} is missing: run `make images`")
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        home = _volumes(client, stack, f"home-{tag}")
        sync_volume = new_volume(client, stack, f"gitlab-dr-test-sync-{tag}")
        network = stack.enter_context(Network())
        gitlab = _standin(home, f"gitlab-dr-test-master-gitlab-{tag}")
        stack.enter_context(gitlab)
        gl.wait_ready(_url(gitlab), 120)
        gl.psql(
            _container(gitlab),
            f"CREATE TABLE {TABLE} (n bigint PRIMARY KEY, at timestamptz DEFAULT now())",
        )
        slave = start_sidecar(stack, network, "slave", FAST, [(sync_volume, "/sync", "rw")])
        source = [(volume, f"/source/{part}", "ro") for part, volume in home.items()]
        master = start_sidecar(stack, network, "master", FAST, source)
        pair_up(master, slave)
        master.sync("start")
        writer = Writer(gitlab, tmp_path_factory.mktemp("writer"))
        writer.start()
        stack.callback(writer.stop)
        rig = Rig(client, stack, home, sync_volume, gitlab, master, slave, writer)
        yield rig


def _check_copy(rig: Rig, snapshot: str, before: float, label: str) -> dict[str, Any]:
    """Start GitLab on a copy of ``snapshot``; everything acknowledged before ``before`` is in
    it, it is whole, and the snapshot itself is not altered by it."""
    path = f"/sync/snapshots/{snapshot}"
    digest = rig.slave.sync("manifest", path, "--digest", "--no-hash").strip()
    expect = rig.writer.expectation(before)
    with rig.gitlab_on_copy(snapshot) as (tc, prepared):
        report = verify.verify(_container(tc), _url(tc), expect, ready_timeout=120)
        if not report.ok:
            print(_container(tc).logs().decode(errors="replace")[-4000:])
        assert report.ok, f"{label}: " + "; ".join(report.failures())
    after = rig.slave.sync("manifest", path, "--digest", "--no-hash").strip()
    assert after == digest, f"{label}: starting GitLab on a copy altered snapshot {snapshot}"
    return {
        **prepared,
        "rows": len(expect.rows),
        "commits": len(expect.commits),
        "uploads": len(expect.uploads),
    }


def test_every_snapshot_starts_whole_after_a_master_killed_at_random_moments(rig: Rig) -> None:
    seed = int(os.environ.get("CONSISTENCY_SEED", str(time.time_ns())))
    print(f"seed {seed} (CONSISTENCY_SEED replays it)")
    rng = random.Random(seed)  # noqa: S311 (moments, not secrets)
    rig.writer.active.set()
    wait_for(lambda: rig.master.status()["last_complete"], 60, "a first complete pass", every=0.5)
    kinds: list[str] = []
    for round_ in range(KILLS):
        rig.writer.active.set()
        if round_ % 3 == 2:
            # Every third kill aims at the backup window: the copy of the data files, between
            # pg_backup_start and pg_backup_stop.
            wait_for(lambda: rig.phase() == "files", 30, "a pass copying files", every=0.02)
        else:
            time.sleep(rng.uniform(0.5, 4.0))
        passes = rig.kill_master()
        in_progress = passes.get("in_progress")
        kinds.append(in_progress.get("phase", "?") if in_progress else "between passes")
        wait_for(lambda: not rig.slave.status()["in_progress"], 30, "the slave to notice")
        current = rig.slave.status()["current"]
        assert current, "no complete snapshot on the slave"
        meta = rig.snapshot_meta(current)
        began = parse_iso(meta["started_at"]).timestamp()
        assert rig.slave.succeeds(
            ["test", "-s", f"/sync/snapshots/{current}/data/postgresql/data/backup_label"]
        ), "a live PostgreSQL was copied without its backup label"
        assert not rig.slave.succeeds(
            ["test", "-e", f"/sync/snapshots/{current}/data/postgresql/data/postmaster.pid"]
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            restart = pool.submit(rig.master_restart)  # while the copy is checked
            seen = _check_copy(rig, current, began, f"kill {round_ + 1} ({kinds[-1]})")
            restart.result(timeout=180)
        print(f"kill {round_ + 1}: {kinds[-1]}, snapshot {current}: {seen}")
    print(f"kills: {kinds}")
    _print_figures(rig.master.logs())
    window = {"backup-start", "refs", "files", "backup-stop"}
    assert window & set(kinds), "no kill fell inside the backup window"


_PASS_LINE = re.compile(
    r"pass \S+ \(\w+\) ok in ([\d.]+) s: .*PostgreSQL backup "
    r"\(backup adds ([\d.]+) s, (\d+) bytes of WAL, (\d+) in pg_wal files, (\d+) sent\)"
)


def _print_figures(logs: str) -> None:
    """What the backup costs per pass under the writer's load, from the sidecar's log."""
    found = [tuple(map(float, m.groups())) for m in _PASS_LINE.finditer(logs)]
    if not found:
        print("figures: no complete backup pass logged")
        return
    durations, overheads, wal, files, sent = zip(*found, strict=True)
    print(
        f"figures over {len(found)} complete passes: pass {statistics.median(durations):.2f} s "
        f"median (max {max(durations):.2f}), backup adds {statistics.median(overheads):.2f} s "
        f"median (max {max(overheads):.2f}), WAL per pass {statistics.median(wal) / 1e6:.2f} MB "
        f"median (max {max(wal) / 1e6:.3f}), pg_wal files per pass "
        f"{statistics.median(files) / 1e6:.2f} MB median (max {max(files) / 1e6:.2f}), "
        f"{statistics.median(sent) / 1e6:.3f} MB on the wire median (max {max(sent) / 1e6:.3f})"
    )


def _unallocated(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "sparse"} for r in records]


def test_planned_switchover_final_pass_loses_nothing(rig: Rig) -> None:
    commits, rows = len(rig.writer.commits), len(rig.writer.rows)
    rig.writer.active.set()
    # Two new pushes per project at least: a push cut by an earlier kill may have landed
    # unacknowledged, and the project's next push, acknowledged, carries it.
    wait_for(
        lambda: (
            len(rig.writer.commits) >= commits + 2 * len(PROJECTS)
            and len(rig.writer.rows) >= rows + 10
        ),
        90,
        "new writes",
    )
    rig.writer.pause()
    with pytest.raises(CommandFailed, match="stop GitLab before the final pass"):
        rig.master.sync("pass", "--final")  # GitLab still running: refused
    _container(rig.gitlab).stop(timeout=30)  # GitLab stopped cleanly, as --planned does
    out = rig.master.sync("pass", "--final", "--json")
    record = json.loads(out)
    assert record["outcome"] == "ok", record
    assert record["postgresql"] == "offline"
    # The newest snapshot is the master's tree, exactly (a timed pass may follow: still equal).
    # Allocation aside: rsync -S stores runs of zeros as holes (PostgreSQL's visibility maps,
    # fresh WAL), so a file that is not sparse on the master may be on the slave; its bytes,
    # times, modes, owners and links are the same.
    source = _unallocated(rig.master.manifest("/source"))
    copy = _unallocated(rig.slave.manifest("/sync/current"))
    assert source == copy, differences(source, copy)
    current = rig.slave.status()["current"]
    with rig.gitlab_on_copy(current) as (tc, _prepared):
        everything = rig.writer.expectation(time.time())
        report = verify.verify(_container(tc), _url(tc), everything, ready_timeout=120)
        assert report.ok, "; ".join(report.failures())
        container = _container(tc)
        for project, sha in everything.commits.items():
            assert gl.repository_refs(container, project)["refs/heads/main"] == sha
    _container(rig.gitlab).start()


def test_the_checks_catch_a_missing_object_a_lost_row_and_a_lost_upload(rig: Rig) -> None:
    """The checks themselves: a copy broken on purpose fails them, each with its reason."""
    gl.wait_ready(_url(rig.gitlab), 120)
    rig.writer.active.set()
    wait_for(
        lambda: len(rig.writer.rows) > 5 and len(rig.writer.commits) > 3 and rig.writer.uploads,
        60,
        "writes",
    )
    rig.writer.pause()
    written = time.time()

    def newer() -> str | None:
        name = rig.slave.status()["current"]
        return (
            name
            if name and parse_iso(rig.snapshot_meta(name)["started_at"]).timestamp() > written
            else None
        )

    current = wait_for(newer, 60, "a snapshot of those writes", every=0.3)
    began = parse_iso(rig.snapshot_meta(current)["started_at"]).timestamp()
    expect = rig.writer.expectation(began)
    assert expect.rows and expect.commits and expect.uploads
    with rig.gitlab_on_copy(current) as (tc, _prepared):
        container = _container(tc)
        assert verify.verify(container, _url(tc), expect).ok
        project = sorted(expect.commits)[0]
        head = gl.check_in(
            container, ["git", "-C", gl.repository_path(project), "rev-parse", "HEAD"], user="git"
        ).strip()
        loose = f"{gl.repository_path(project)}/objects/{head[:2]}/{head[2:]}"
        gl.check_in(container, ["rm", "-f", loose])
        gl.psql(container, f"DELETE FROM {TABLE} WHERE n = {min(expect.rows)}")  # noqa: S608
        upload = sorted(expect.uploads)[0]
        gl.check_in(container, ["sh", "-c", f"echo changed > {gl.UPLOADS}/{upload}"])
        report = verify.verify(container, _url(tc), expect)
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert set(failed) == {"rows", "repositories", "commits", "uploads"}, report.render()
    assert project in failed["repositories"]
    assert str(min(expect.rows)) in failed["rows"]
    assert upload in failed["uploads"]


def test_a_transaction_alone_starts_a_pass_and_an_idle_master_rests(rig: Rig) -> None:
    """PostgreSQL's files are not watched (a backup pass changes them); its transactions are."""
    gl.wait_ready(_url(rig.gitlab), 120)
    rig.writer.pause()
    wait_for(lambda: rig.master.status()["last_complete"], 60, "a complete pass")
    time.sleep(2.0)  # what the writer did last starts its pass
    wait_for(lambda: not rig.master.status()["in_progress"], 30, "that pass to end")
    before = rig.master.logs().count(" ok in ")
    time.sleep(6.0)
    # Idle: no pass but the timer's (FAST: every 30 s) and perhaps one for autovacuum, where
    # pass after pass would follow if each backup's own checkpoint and log lines started the
    # next (8 in 6 s, before they were left out of the watch).
    assert rig.master.logs().count(" ok in ") - before <= 2
    for _attempt in range(3):  # a timer pass may happen to start first: then again
        n = rig.writer.next_row = rig.writer.next_row + 1000
        gl.psql(_container(rig.gitlab), f"INSERT INTO {TABLE} (n) VALUES ({n})")  # noqa: S608
        committed = time.time()

        def newer(after: float = committed) -> dict[str, Any] | None:
            last: dict[str, Any] = rig.master.status()["last_complete"] or {}
            started = parse_iso(last["started_at"]).timestamp() if last else 0.0
            return last if started > after else None

        last = wait_for(newer, 10, "a pass started after the transaction", every=0.2)
        if last["trigger"] == "change":
            break
    assert last["trigger"] == "change", last
    snapshot = last["snapshot"]
    with rig.gitlab_on_copy(snapshot) as (tc, _prepared):
        gl.wait_ready(_url(tc), 120)
        check = verify.check_rows(_container(tc), TABLE, "n", [n])
        assert check.ok, check.detail
