"""``inv verify-slave`` for real, in one sandbox: the current snapshot proven by a throwaway
GitLab and recorded, then copies of it broken on purpose (a repository's object removed, a
PostgreSQL file zeroed, a registry blob removed), each caught and named.

The broken copies are writable btrfs snapshots of a real snapshot, made beside it in the slave's
snapshots folder with a snapshot's name and metadata: the real snapshots are never touched. Run
with SYNC_IMAGE set to a sidecar image built from this checkout (it needs ``gitlab-sync
discard-copy``) and STANDIN_IMAGE to a stand-in with the registry.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from gitlab_sync.waits import wait_until
from ops.hosts.engine import labelled
from ops.rehearsal import registry as reg
from ops.rehearsal import standin
from ops.rehearsal.commands import ROOT
from ops.rehearsal.layout import SUBVOLUMES, SandboxLayout, State
from tests.integration.dr.sandbox_pair import pair_state, service_container, snapshot_listing
from tests.integration.tasks_cli import inv

pytestmark = pytest.mark.integration

NAME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
REPOS = "data/git-data/repositories"
BLOBS = "data/gitlab-rails/shared/registry/docker/registry/v2/blobs/sha256"
PROJECT = "verify/app"
BROKEN_TIMEOUT = 20
"""Seconds a broken copy's GitLab is given to be ready. A zeroed pg_control never is, and waits
all of it; each case asserts its own check failing, which does not need readiness, so a loaded
machine's slow start cannot decide a case."""


@pytest.fixture(scope="module")
def written(paired: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A commit pushed and an image pushed on the master, and the slave's snapshots after."""
    state = State.load(SandboxLayout(paired.parent))
    assert state is not None
    work = tmp_path_factory.mktemp("verify-work")
    sha = standin.push_commit(state.gitlab_url, PROJECT, work / "app")
    load = reg.RegistryLoad(state.registry_address, repos=("verify/image",))
    digest = load.push("verify/image", "v1")
    after = dt.datetime.now(dt.UTC)

    def current() -> str:
        name = snapshot_listing(paired)["current"]
        instant = dt.datetime.strptime(name, NAME_FORMAT).replace(tzinfo=dt.UTC)
        return str(name) if instant > after else ""

    name = wait_until(current, timeout=180, what="a snapshot after the pushes", interval=1.0)
    pair = pair_state(paired)
    assert pair.slave is not None
    slave = state.instance_name(pair.slave.instance_id)
    assert slave is not None
    sync_home = SandboxLayout(paired.parent).data(slave) / SUBVOLUMES[1]
    return {"sha": sha, "digest": digest, "current": name, "sync": sync_home, "state": state}


def _verify(env_file: Path, *args: str) -> Any:
    return inv("verify-slave", *args, env_file=env_file, timeout=600)


def _leftovers(state: State) -> list[str]:
    """The throwaway GitLabs of the sandbox's stacks (either instance)."""
    layout = SandboxLayout(Path(state.root))
    stacks = {layout.stack(str(i["name"])) for i in state.instances}
    found = labelled(docker.from_env(), "gitlab-dr.one-off=verify")
    return [c.name or "" for c in found if c.labels.get("com.docker.compose.project") in stacks]


def test_verify_slave_proves_the_current_snapshot_and_records_it(
    paired: Path, written: dict[str, Any]
) -> None:
    done = _verify(paired, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True and out["snapshot"] >= written["current"], out
    if written["state"].filesystem == "btrfs":
        assert out["copy"]["method"] == "snapshot", out["copy"]  # O(1), on the area's filesystem
    print(f"verify-slave: {out['seconds']} s, copy {out['copy']}, {out['summary']}")
    names = [c["name"] for c in out["checks"]]
    assert names[:3] == ["readiness", "postgresql", "repositories"], names
    assert "registry links" in names and "uploads" in names
    by_name = {c["name"]: c for c in out["checks"]}
    assert "0 connected" not in by_name["repositories"]["detail"]
    assert "0 dangling" in by_name["registry links"]["detail"]
    assert "0 links" not in by_name["registry links"]["detail"]

    listing = snapshot_listing(paired)
    (snap,) = [s for s in listing["snapshots"] if s["name"] == out["snapshot"]]
    assert snap["verified"]["ok"] is True and snap["verified"]["summary"] == out["summary"]
    assert listing["newest_verified"] == out["snapshot"]
    # Thrown away: no container, no copy left in the sync area.
    assert _leftovers(written["state"]) == []
    assert not any((written["sync"] / ".verify").iterdir())

    status = inv("status", env_file=paired)
    assert f"newest verified: {out['snapshot']}" in status.stdout, status.stdout


def test_ctrl_c_still_throws_the_container_and_the_copy_away(
    paired: Path, written: dict[str, Any]
) -> None:
    assert _leftovers(written["state"]) == []  # the container seen below is this run's
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    running = subprocess.Popen(
        [sys.executable, "-m", "invoke", "verify-slave"],
        cwd=ROOT,
        env={**env, "ENV_FILE": str(paired)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def started() -> bool:
            assert running.poll() is None, running.communicate()
            return bool(_leftovers(written["state"]))

        wait_until(
            started,
            timeout=120,
            what="the throwaway GitLab to start",
            interval=0.2,
        )
        assert any((written["sync"] / ".verify").iterdir())
        running.send_signal(signal.SIGINT)
        _out, err = running.communicate(timeout=120)
    finally:
        running.kill()
    assert running.returncode != 0, err
    assert _leftovers(written["state"]) == [], err
    assert not any((written["sync"] / ".verify").iterdir()), err


def test_verify_slave_refuses_an_unknown_snapshot_in_one_line(paired: Path) -> None:
    done = _verify(paired, "--snapshot", "20000101T000000.000000Z")
    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith(
        "refused: the slave has no snapshot 20000101T000000.000000Z"
    ), done.stderr


def _first(root: Path, pattern: str) -> Path:
    found = sorted(p for p in root.glob(pattern) if p.is_file())
    assert found, f"nothing matches {pattern} in {root}"
    return found[0]


def _remove_an_object(copy: Path) -> str:
    repo = copy / REPOS / f"{PROJECT}.git"
    packs = sorted((repo / "objects" / "pack").glob("*.pack"))
    if packs:
        with packs[0].open("r+b") as pack:
            pack.truncate(packs[0].stat().st_size // 2)
        return f"truncated {packs[0].name}"
    loose = _first(repo / "objects", "[0-9a-f][0-9a-f]/*")
    loose.unlink()
    return f"removed object {loose.parent.name}{loose.name}"


def _zero_pg_control(copy: Path) -> str:
    control = copy / "data/postgresql/data/global/pg_control"
    control.write_bytes(b"\0" * control.stat().st_size)
    return "zeroed pg_control"


def _remove_a_blob(copy: Path) -> str:
    # a layer (not the manifest the tag names): the biggest blob is a layer
    blob = max((copy / BLOBS).glob("*/*/data"), key=lambda p: p.stat().st_size)
    blob.unlink()
    return f"removed blob {blob.parent.name[:12]}"


BREAKS: dict[str, tuple[Callable[[Path], str], str]] = {
    "repository": (_remove_an_object, "repositories"),
    "postgresql": (_zero_pg_control, "postgresql"),
    "registry": (_remove_a_blob, "registry links"),
}


def _btrfs(*args: str) -> None:
    subprocess.run(["btrfs", *args], check=True, capture_output=True)


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_verify_slave_catches_a_snapshot_broken_on_purpose(
    paired: Path, written: dict[str, Any], case: str
) -> None:
    if written["state"].filesystem != "btrfs":
        pytest.skip("the broken copies are btrfs snapshots")
    snapshots = written["sync"] / "snapshots"
    source = written["current"]
    instant = dt.datetime.strptime(source, NAME_FORMAT).replace(tzinfo=dt.UTC)
    offset = 1 + sorted(BREAKS).index(case)
    name = (instant + dt.timedelta(microseconds=offset)).strftime(NAME_FORMAT)
    copy = snapshots / name
    _btrfs("subvolume", "snapshot", str(snapshots / source), str(copy))
    meta = json.loads((snapshots / f"{source}.json").read_text())
    meta.pop("verified", None)
    (snapshots / f"{name}.json").write_text(json.dumps({**meta, "name": name}))
    try:
        breaks, failing = BREAKS[case]
        what = breaks(copy)
        done = _verify(paired, "--snapshot", name, "--json", "--timeout", str(BROKEN_TIMEOUT))
        assert done.returncode == 1, f"{what}: " + done.stdout + done.stderr
        out = json.loads(done.stdout)
        failed = [c["name"] for c in out["checks"] if not c["ok"]]
        print(f"verify-slave, {case} ({what}): {out['seconds']} s, {out['failures']}")
        assert failing in failed, (what, out["checks"])
        assert f"snapshot {name} failed: " in done.stderr and failing in done.stderr
        (snap,) = [s for s in snapshot_listing(paired)["snapshots"] if s["name"] == name]
        assert snap["verified"]["ok"] is False and failing in snap["verified"]["summary"]
        assert _leftovers(written["state"]) == []
        assert not any((written["sync"] / ".verify").iterdir())
    finally:
        _btrfs("subvolume", "delete", str(copy))
        (snapshots / f"{name}.json").unlink(missing_ok=True)
    # The real snapshot is whole and still read-only.
    ro = subprocess.run(
        ["btrfs", "property", "get", "-ts", str(snapshots / source), "ro"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ro.stdout.strip() == "ro=true"
    assert any((snapshots / source / "data/postgresql/data/global/pg_control").read_bytes())


def _verifier(pair_role: str, paired: Path) -> Container:
    """The gitlab-verify service's container of the instance in ``pair_role``."""
    pair = pair_state(paired)
    side = pair.slave if pair_role == "slave" else pair.master
    assert side is not None
    return service_container(paired, side.instance_id, "gitlab-verify")


def _verifier_logs(pair_role: str, paired: Path) -> str:
    """What the gitlab-verify service of the instance in ``pair_role`` has logged."""
    return bytes(_verifier(pair_role, paired).logs()).decode(errors="replace")


def _with_setting(env_file: Path, name: str, value: str) -> Path:
    """A copy of the sandbox's settings file with ``name`` set to ``value``."""
    lines = [ln for ln in env_file.read_text().splitlines() if not ln.startswith(f"{name}=")]
    changed = env_file.with_name(f"{env_file.name}.{name.lower()}")
    changed.write_text("\n".join([*lines, f"{name}='{value}'"]) + "\n")
    return changed


def test_the_slave_verifies_its_current_snapshot_on_a_schedule_and_a_stop_cleans_up(
    paired: Path, written: dict[str, Any]
) -> None:
    state = written["state"]
    assert "not verifying: off (VERIFY_EVERY=0)" in _verifier_logs("slave", paired)
    begun = dt.datetime.now(dt.UTC)
    done = inv("pair", env_file=_with_setting(paired, "VERIFY_EVERY", "10s"), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        if state.filesystem != "btrfs":  # the fallback: left to the operator, and said
            wait_until(
                lambda: "off on the fallback method" in _verifier_logs("slave", paired),
                timeout=120,
                what="the verifier to say it is off on the fallback",
            )
            return

        def verified_since() -> dict[str, Any] | None:
            for snap in snapshot_listing(paired)["snapshots"]:
                at = (snap.get("verified") or {}).get("at")
                if at and dt.datetime.fromisoformat(at.replace("Z", "+00:00")) > begun:
                    return dict(snap)
            return None

        # Nobody runs inv verify-slave here: the service does it, on the slave alone.
        snap = wait_until(verified_since, timeout=480, what="a scheduled verification", interval=2)
        assert snap is not None
        assert snap["verified"]["ok"] is True, snap["verified"]
        logs = _verifier_logs("slave", paired)
        assert "verifying the current snapshot" in logs and "verified: all " in logs, logs
        master = _verifier_logs("master", paired)
        assert "not verifying: this host is the master" in master, master
        # The next one (every 10 s) is stopped (docker stop: SIGTERM) while it runs: the first's
        # container is gone first (it is removed after the record is written).
        wait_until(lambda: not _leftovers(state), timeout=120, what="the first one's clean-up")
        wait_until(lambda: bool(_leftovers(state)), timeout=240, what="the next verification")
        verifier = _verifier("slave", paired)
        verifier.stop(timeout=120)
        logs = bytes(verifier.logs()).decode(errors="replace").strip()
        assert logs.splitlines()[-1].endswith(" stopped"), logs  # it ended itself, cleanly
        assert _leftovers(state) == [], logs
        assert not any((written["sync"] / ".verify").iterdir()), logs
    finally:
        done = inv("pair", env_file=paired, timeout=600)  # VERIFY_EVERY=0 again, started
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gitlab-verify running" in done.stdout, done.stdout
