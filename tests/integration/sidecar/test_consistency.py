"""Every complete snapshot is a GitLab that starts whole: killed masters, and a planned switchover.

On both paths (``sync_pair.FILESYSTEMS``): btrfs, where each pass sends from a snapshot of
GITLAB_HOME taken at one instant, and the fallback, where it copies the live tree inside a
PostgreSQL base backup. Real parts: a sync pair, a stand-in GitLab on the pair's master tree
(the master's sidecar mounts it read-only at /source) with a writer in it pushing commits and
storing uploads, each followed by a row naming it (``consistency_writer``). The master (GitLab
and sidecar) is killed with SIGKILL at random moments and at chosen phases of a pass; each
time a GitLab is started on a copy of the slave's ``current`` snapshot and :mod:`ops.verify`
checks it (``consistency_rig``).

The kills (``CONSISTENCY_KILLS``, 8 by default) are shared between the two paths, so that the
file costs no more time on both than it took on one with ten; each kill checks a new snapshot.
The checks themselves (``verify`` finds a copy broken on purpose) are the same whatever made
the copy, so they are tried on one path, btrfs, where the copy is a writable snapshot.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gitlab_sync.config import parse_iso
from gitlab_sync.manifest import differences
from ops.rehearsal import standin as gl
from ops.rehearsal import verify
from tests.integration.sidecar.consistency_rig import ALONE, PG_DATA, WINDOW, Rig, figures, rigs
from tests.integration.sidecar.sync_pair import FILESYSTEMS, CommandFailed, wait_for, wait_idle

pytestmark = pytest.mark.integration

KILLS = int(os.environ.get("CONSISTENCY_KILLS", "8"))
SHARE = {"btrfs": KILLS - KILLS // 2, "plain": KILLS // 2}
# Kills aimed at a phase, by round (the others fall at random moments): on btrfs while the pass
# sends from its frozen copy, and while the slave publishes it; on the fallback inside the
# backup window (the data files between pg_backup_start and pg_backup_stop) and after the stop.
AIMS = {
    "btrfs": {0: {"changes", "files"}, 2: {"commit"}},
    "plain": {0: {"files"}, 2: {"files-again", "wal"}},
}
QUIET = 3.0  # seconds without a pass or a pending change: the master rests
CHECKED_ON = "btrfs"
PROJECTS = ("dr/alpha", "dr/beta", "dr/group/gamma")


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> Iterator[dict[str, Rig]]:
    """The rigs of the paths whose tests were selected, built at the same time."""
    selected = {
        item.callspec.params.get("loaded")
        for item in request.session.items
        if hasattr(item, "callspec")
    }
    with rigs(tuple(fs for fs in FILESYSTEMS if fs in selected)) as made:
        yield made


@pytest.fixture(scope="module", params=FILESYSTEMS)
def loaded(request: pytest.FixtureRequest, built: dict[str, Rig]) -> Iterator[Rig]:
    """The path's rig, writing and syncing; removed when its tests are done."""
    made = built[request.param]
    made.start()
    yield made
    made.close()


def _pushed_since(made: Rig, since: float) -> set[str]:
    """The projects with a commit acknowledged after ``since``."""
    acks = (line.split(" ") for line in made.writer.acks())
    return {fields[1] for fields in acks if fields[0] == "commit" and float(fields[-1]) > since}


def _checked(made: Rig, snapshot: str, label: str) -> str:
    """How ``snapshot`` copied PostgreSQL (:meth:`Rig.assert_as_copied`), then
    :meth:`Rig.check_copy` of it; what it saw, in one line."""
    begun = time.monotonic()
    made.assert_as_copied(snapshot)
    seen = made.check_copy(snapshot, made.snapshot_began(snapshot), label)
    return f"{label}, snapshot {snapshot}: {seen}, checked in {time.monotonic() - begun:.1f} s"


def test_every_snapshot_starts_whole_after_a_master_killed_at_random_moments(
    loaded: Rig,
) -> None:
    """Each kill falls after a pass of the master started again has been published (so each
    checks a new snapshot, made by a master that recovered from the kill before), at a random
    moment or in a chosen phase. Each kill's copy is checked while the master starts again and
    the next kill comes: one copy at a time, in the order of the kills."""
    if not SHARE[loaded.fs]:
        pytest.skip(f"CONSISTENCY_KILLS={KILLS} leaves no kill to {loaded.fs}")
    seed = int(os.environ.get("CONSISTENCY_SEED", str(time.time_ns())))
    print(f"seed {seed} (CONSISTENCY_SEED replays it)")
    rng = random.Random(seed)  # noqa: S311 (moments, not secrets)
    since = wait_for(loaded.writer.loaded, 60, "a first upload and a first push", every=0.2)
    kinds: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        checking: concurrent.futures.Future[str] | None = None
        current = ""
        for round_ in range(SHARE[loaded.fs]):
            loaded.wait_published(after=current, since=since)
            aim = AIMS[loaded.fs].get(round_)
            if aim:
                loaded.wait_phase(aim)
            else:
                time.sleep(rng.uniform(0.0, 3.0))
            killed = loaded.kill_master().get("in_progress") or {}
            kinds.append(killed.get("phase") or "between passes")
            current = loaded.settled_current()
            restart = pool.submit(loaded.master_restart, killed.get("id", ""))
            if checking:
                print(checking.result(timeout=300))
            label = f"{loaded.fs} kill {round_ + 1} ({kinds[-1]})"
            checking = pool.submit(_checked, loaded, current, label)
            restart.result(timeout=240)
        if checking:
            print(checking.result(timeout=300))
    print(f"{loaded.fs} kills: {kinds}")
    print(f"{loaded.fs}: {figures(loaded.pair.master.logs())}")
    assert WINDOW[loaded.fs] & set(kinds), f"no kill fell in {WINDOW[loaded.fs]}"


def test_a_transaction_alone_starts_a_pass_and_an_idle_master_rests(loaded: Rig) -> None:
    """On btrfs PostgreSQL's own files are watched like the rest (a frozen snapshot changes
    nothing in them): a transaction is a change. On the fallback they are not (a backup pass
    changes them): the sender asks PostgreSQL whether a transaction ran. Either way a master
    with nothing written rests, where pass after pass would follow if a pass's own writes
    (the backup's checkpoint and log lines) started the next."""
    gl.wait_ready(loaded.gitlab.url, 120)
    loaded.writer.stop()
    stopped = time.time()
    # No pass running and no change pending for QUIET seconds, after the pass that took the
    # writer's last writes (a timer pass, every 30 s, only delays it).
    wait_idle(loaded.pair.master, since=stopped, quiet=QUIET, timeout=120)
    for n in range(1, 4):  # a timer pass may happen to start first: then again
        gl.psql(loaded.gitlab.container, f"INSERT INTO {ALONE} (n) VALUES ({n})")  # noqa: S608
        committed = time.time()

        def newer(after: float = committed) -> dict[str, Any] | None:
            last: dict[str, Any] = loaded.pair.master.status()["last_complete"] or {}
            started = parse_iso(last["started_at"]).timestamp() if last else 0.0
            return last if started > after else None

        last: dict[str, Any] = wait_for(newer, 90, "a pass begun after the transaction", 0.2)
        if last["trigger"] == "change":
            break
    assert last["trigger"] == "change", last
    if loaded.fs == "btrfs":  # what changed in PostgreSQL's files, and nothing else
        assert last["kind"] == "change", last
    # PostgreSQL started on a copy of that snapshot: the transaction is in it, and every row
    # of the writer's names what the snapshot holds (no GitLab needed around it).
    verdict = loaded.checker.check(last["snapshot"], f"SELECT n FROM {ALONE} ORDER BY n")  # noqa: S608
    assert verdict.inspection.asked == tuple((str(k),) for k in range(1, n + 1)), verdict.line()
    assert not verdict.inspection.dangling, verdict.line()
    loaded.writer.start()


# The checks are the same code on both paths: tried on one.
@pytest.mark.parametrize("loaded", [CHECKED_ON], indirect=True)
def test_the_checks_catch_a_missing_object_a_lost_row_and_a_lost_upload(loaded: Rig) -> None:
    """The checks themselves: a copy broken on purpose fails them, each with its reason; and
    on btrfs breaking the copy, a writable snapshot, leaves the kept snapshot as it was."""

    def holding() -> tuple[str, verify.Expectation] | None:
        name = loaded.pair.slave.status()["current"]
        expect = loaded.writer.expectation(loaded.snapshot_began(name)) if name else None
        return (name, expect) if expect and expect.rows and expect.commits else None

    current, expect = wait_for(holding, 90, "a snapshot holding rows and commits", every=0.5)
    path = f"/sync/snapshots/{current}"
    digest = loaded.pair.slave.sync("manifest", path, "--digest", "--no-hash").strip()
    with loaded.gitlab_on_copy(current) as (copy, _prepared):
        container = copy.container
        assert verify.verify(container, copy.url, expect).ok
        project = sorted(expect.commits)[0]
        head = gl.check_in(
            container, ["git", "-C", gl.repository_path(project), "rev-parse", "HEAD"], user="git"
        ).strip()
        loose = f"{gl.repository_path(project)}/objects/{head[:2]}/{head[2:]}"
        gl.check_in(container, ["rm", "-f", loose])
        gl.psql(container, f"DELETE FROM dr_uploads WHERE id = {min(expect.rows)}")  # noqa: S608
        upload = sorted(expect.uploads)[0]
        gl.check_in(container, ["sh", "-c", f"echo changed > {gl.UPLOADS}/{upload}"])
        report = verify.verify(container, copy.url, expect)
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert set(failed) == {"rows", "repositories", "commits", "uploads"}, report.render()
    assert project in failed["repositories"]
    assert str(min(expect.rows)) in failed["rows"]
    assert upload in failed["uploads"]
    after = loaded.pair.slave.sync("manifest", path, "--digest", "--no-hash").strip()
    assert after == digest, f"breaking a copy of snapshot {current} altered the snapshot"


def _comparable(records: list[dict[str, Any]], fs: str) -> list[dict[str, Any]]:
    """Manifest records as a pass must reproduce them: allocation aside (rsync -S stores runs
    of zeros as holes: a file that is not sparse on the master may be on the slave; its bytes,
    times, modes, owners and links are the same), and on btrfs without what a pass from one
    instant leaves out by design (``filters.frozen_excludes``: a stopped PostgreSQL's
    ``postmaster.opts``, which its crash recovery does not need)."""
    left_out = {f"{PG_DATA}/postmaster.opts"} if fs == "btrfs" else set()
    return [
        {k: v for k, v in r.items() if k != "sparse"}
        for r in records
        if r.get("path") not in left_out
    ]


def test_planned_switchover_final_pass_loses_nothing(loaded: Rig) -> None:
    """Last on each path: it leaves the master's GitLab stopped, as a switchover does."""
    # A push per project acknowledged since the master last started: a push cut by a kill may
    # have landed unacknowledged, and the project's next push, acknowledged, carries it.
    wait_for(
        lambda: set(PROJECTS) <= _pushed_since(loaded, loaded.started),
        90,
        "a push to every project since the master last started",
        every=0.3,
    )
    loaded.writer.stop()
    master = loaded.pair.master
    with pytest.raises(CommandFailed, match="stop GitLab before the final pass"):
        master.sync("pass", "--final")  # GitLab still running: refused
    loaded.gitlab.container.stop(timeout=30)  # GitLab stopped cleanly, as --planned does
    record = json.loads(master.sync("pass", "--final", "--json"))
    assert record["outcome"] == "ok", record
    assert record["kind"] == "full", record
    assert record["postgresql"] == {"btrfs": "snapshot", "plain": "offline"}[loaded.fs], record
    # The newest snapshot is the master's tree, exactly (a timed pass may follow: still equal).
    source = _comparable(master.manifest("/source"), loaded.fs)
    copy = _comparable(loaded.pair.slave.manifest("/sync/current"), loaded.fs)
    assert source == copy, differences(source, copy)
    everything = loaded.writer.expectation(time.time())
    with loaded.gitlab_on_copy(loaded.pair.slave.status()["current"]) as (gitlab, _prepared):
        report = verify.verify(gitlab.container, gitlab.url, everything, ready_timeout=120)
        assert report.ok, "; ".join(report.failures())
        for project, sha in everything.commits.items():
            assert gl.repository_refs(gitlab.container, project)["refs/heads/main"] == sha
