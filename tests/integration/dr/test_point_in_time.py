"""Point in time, for real, in one sandbox: ``inv snapshots``, and ``inv promote-slave
--snapshot S`` bringing back a project deleted on the master after S.

The damage is done as it would be: the project's repository removed on the master, which the
sync carries to the slave within seconds. The refusals (an unknown name, a time before the
oldest snapshot, one in the future, a malformed one) go through the real task and change
nothing; ``--dry-run`` shows the window the choice loses. Run with SYNC_IMAGE set to a sidecar
image that has ``gitlab-sync snapshots`` (any built from this checkout).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from gitlab_sync.config import iso
from gitlab_sync.status import moment
from gitlab_sync.waits import wait_until
from ops.rehearsal import standin
from ops.rehearsal.layout import SandboxLayout, State
from tests.integration.dr.sandbox_pair import (
    in_container,
    pair_state,
    refused_promotion,
    snapshot_listing,
)
from tests.integration.tasks_cli import inv

pytestmark = pytest.mark.integration

KEPT, DELETED = "pit/kept", "pit/deleted"
SNAPSHOT_REPOS = "data/git-data/repositories"  # the stand-in's repositories in a snapshot


def _holds(env_file: Path, slave: str, snapshot: str, project: str) -> bool:
    path = f"/sync/snapshots/{snapshot}/{SNAPSHOT_REPOS}/{project}.git/HEAD"
    code, _out = in_container(env_file, slave, "gitlab-rsync", f"test -f {path}")
    return code == 0


def _snapshot_after(env_file: Path, slave: str, after: dt.datetime, has: bool) -> dict[str, Any]:
    """The first snapshot listed whose instant is after ``after`` and that holds the deleted
    project (``has``) or lacks it."""

    def found() -> dict[str, Any]:
        for snap in snapshot_listing(env_file)["snapshots"]:
            instant = moment(snap["instant"])
            if (
                instant
                and instant > after
                and _holds(env_file, slave, snap["name"], DELETED) is has
            ):
                return dict(snap)
        return {}

    return wait_until(found, timeout=180, what=f"a snapshot after {iso(after)}", interval=1.0)


@pytest.fixture(scope="module")
def damaged(paired: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two projects pushed, snapshot S holding both, one deleted on the master, and a newer
    snapshot N without it."""
    state = State.load(SandboxLayout(paired.parent))
    assert state is not None
    pair = pair_state(paired)
    assert pair.master is not None and pair.slave is not None
    master, slave = pair.master.instance_id, pair.slave.instance_id
    work = tmp_path_factory.mktemp("pit-work")
    url = state.gitlab_url
    shas = {
        project: standin.push_commit(url, project, work / project.replace("/", "_"))
        for project in (KEPT, DELETED)
    }
    pushed = dt.datetime.now(dt.UTC)
    s = _snapshot_after(paired, slave, pushed, has=True)
    code, out = in_container(
        paired, master, "gitlab", f"rm -rf {standin.repository_path(DELETED)} && sync"
    )
    assert code == 0, out
    deleted = dt.datetime.now(dt.UTC)
    with pytest.raises(standin.GitLabClientError):
        standin.ls_remote(url, DELETED)
    n = _snapshot_after(paired, slave, deleted, has=False)
    return {"url": url, "S": s, "N": n, "shas": shas, "slave": slave, "master": master}


def test_snapshots_lists_the_slaves_snapshots_newest_first(
    paired: Path, damaged: dict[str, Any]
) -> None:
    data = snapshot_listing(paired)
    names = [snap["name"] for snap in data["snapshots"]]
    assert names == sorted(names, reverse=True) and damaged["S"]["name"] in names
    assert data["current"] == names[0]
    text = inv("snapshots", env_file=paired)  # passes go on: its newest may be newer
    assert text.returncode == 0, text.stdout + text.stderr
    current = text.stdout.split("; current ", 1)[1].split(",", 1)[0]
    assert f"\n* {current} " in text.stdout and damaged["S"]["name"] in text.stdout
    assert "one instant" in text.stdout or "fallback" in text.stdout


def test_bad_names_and_times_are_refused_in_one_line_and_change_nothing(
    paired: Path, damaged: dict[str, Any]
) -> None:
    unknown = refused_promotion(paired, "--snapshot", "20000101T000000.000000Z")
    assert unknown.startswith("refused: the slave has no snapshot 20000101T000000.000000Z")
    old = refused_promotion(paired, "--before", "2000-01-01T00:00:00Z")
    assert "is before the oldest snapshot" in old
    future = refused_promotion(paired, "--before", "2999-01-01T00:00:00Z")
    assert "is in the future" in future
    malformed = refused_promotion(paired, "--before", "yesterday")
    assert "--before 'yesterday' is not a time" in malformed


def test_dry_run_shows_the_window_the_choice_loses(paired: Path, damaged: dict[str, Any]) -> None:
    s, n = damaged["S"], damaged["N"]
    for flag in (["--snapshot", s["name"]], ["--before", s["instant"]]):
        done = inv("promote-slave", "--dry-run", *flag, env_file=paired)
        assert done.returncode == 0, done.stdout + done.stderr
        (fresh,) = [line for line in done.stdout.splitlines() if " freshness " in line]
        assert f"start from snapshot {s['name']} (not the newest, " in fresh, fresh
        assert f"between {s['instant']} and " in fresh and "are not in it" in fresh, fresh
        assert "dry run: nothing was changed" in done.stdout
    assert n["name"] > s["name"]
    assert pair_state(paired).eip_holder == "master"


def test_promotion_from_an_older_snapshot_brings_back_a_project_deleted_after_it(
    paired: Path, damaged: dict[str, Any], tmp_path: Path
) -> None:
    s = damaged["S"]
    done = inv("promote-slave", "--yes", "--snapshot", s["name"], "--json", env_file=paired)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    # The deleted project is back, through the Elastic IP, at the commit it had in S.
    url = damaged["url"]
    for project in (KEPT, DELETED):
        clone = standin.clone(url, project, tmp_path / project.replace("/", "_"))
        head = standin.git(["rev-parse", "HEAD"], cwd=clone).strip()
        assert head == damaged["shas"][project], project
    assert report["done"] and report["snapshot"] == s["name"]
    assert report["choice"].startswith(f"promoted from snapshot {s['name']} (not the newest, ")
    assert "are not in it;" in report["choice"] and " was " in report["choice"]
    steps = {step["name"]: step for step in report["steps"]}
    assert steps["freshness"]["snapshot"] == s["name"] and steps["freshness"]["newest"]
    assert steps["freshness"]["choice_lost_seconds"] > 0

    again = inv("promote-slave", "--yes", "--snapshot", damaged["N"]["name"], env_file=paired)
    assert again.returncode == 0 and "already promoted" in again.stdout
