"""inv promote-slave and inv rebuild-slave for real, in the sandbox (moto, sshd hosts, stand-in).

The tasks run as commands with ENV_FILE pointing at the sandbox's settings, as an operator
would run them at 3 a.m.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from ops.aws.inventory import FENCED
from ops.dr.promote import KILL_AFTER, STEPS
from ops.rehearsal.layout import SandboxLayout, State
from tests.integration.dr.sandbox_pair import (
    in_container,
    pair_state,
    refused_promotion,
    service_container,
    service_status,
)
from tests.integration.tasks_cli import inv

pytestmark = pytest.mark.integration


def test_promote_refuses_a_stale_snapshot_and_changes_nothing(paired: Path) -> None:
    # A snapshot "older than STALE_AFTER": with STALE_AFTER=0s every snapshot is.
    line = refused_promotion(paired, env={"STALE_AFTER": "0s"})
    assert "s old (STALE_AFTER is 0 s); pass --accept-data-loss to go on" in line


def test_promote_refuses_different_images_and_changes_nothing(paired: Path) -> None:
    line = refused_promotion(paired, env={"GITLAB_IMAGE": "gitlab/gitlab-ce:17.7.0-ce.0"})
    assert "the GitLab images differ" in line and "--allow-image-mismatch" in line


def test_promote_dry_run_prints_the_plan_and_changes_nothing(paired: Path) -> None:
    before = pair_state(paired)
    done = inv("promote-slave", "--dry-run", env_file=paired)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in STEPS:
        assert step in done.stdout
    assert "dry run: nothing was changed" in done.stdout
    assert pair_state(paired).eip_holder == before.eip_holder == "master"


def test_promote_without_a_terminal_or_yes_refuses(paired: Path) -> None:
    done = inv("promote-slave", env_file=paired)
    assert done.returncode == 3
    assert "pass --yes" in done.stderr


def test_promotion_killed_after_every_step_resumes_without_redoing_one(paired: Path) -> None:
    """Each run is SIGKILLed as soon as one more step is recorded; the next run resumes."""
    for step in STEPS[:-1]:
        killed = inv("promote-slave", "--yes", env_file=paired, extra_env={KILL_AFTER: step})
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        assert f"promote: {step} done" in killed.stdout, killed.stdout
        for earlier in STEPS[: STEPS.index(step)]:
            assert f"promote: {earlier} ..." not in killed.stdout, f"{earlier} was done twice"
        if step == "fence-master":
            _assert_status_shows_a_half_done_promotion(paired)
    final = inv("promote-slave", "--yes", "--json", env_file=paired)
    assert final.returncode == 0, final.stdout + final.stderr
    report = json.loads(final.stdout)  # progress went to stderr: stdout is the JSON alone
    assert report["done"] and report["to_epoch"] == 2
    assert [s["name"] for s in report["steps"]] == list(STEPS)
    assert report["rto_seconds"] is not None
    # From the first start, across the seven runs: more than the steps' own seconds.
    assert report["rto_seconds"] > sum(s["seconds"] for s in report["steps"][:-1])

    steps = {s["name"]: s for s in report["steps"]}
    sandbox_state = State.load(SandboxLayout(paired.parent))
    assert sandbox_state is not None
    method = "snapshot" if sandbox_state.filesystem == "btrfs" else "copy"
    assert steps["start-slave-gitlab"]["restore_method"] == method, steps["start-slave-gitlab"]
    assert report["restore"].startswith(f"restored snapshot {report['snapshot']} by ")
    if method == "snapshot":
        # GITLAB_HOME is a new subvolume: the new master's sidecar mounts it (the restore's
        # marker is in it), not the old folder set aside beside it.
        assert steps["restart-sidecar"]["sidecar"] == "restarted on the new GITLAB_HOME"
        code, marker = in_container(
            paired, report["new_master"], "gitlab-rsync", "cat /source/.gitlab-dr-restored.json"
        )
        assert code == 0, marker
        assert json.loads(marker)["snapshot"] == report["snapshot"]

    # No throwaway GitLab beside the promoted one: its scheduled verification was stopped.
    assert service_status(paired, report["new_master"], "gitlab-verify") == "exited"

    state = pair_state(paired)
    assert state.master is not None and state.master.instance_id == report["new_master"]
    assert state.eip_holder == "master" and state.epoch == 2
    (fenced,) = state.with_role(FENCED)
    assert "gitlab-open" not in fenced.security_groups

    _assert_status_shows_the_promoted_pair(paired, report["new_master"], fenced.instance_id)

    again = inv("promote-slave", "--yes", env_file=paired)
    assert again.returncode == 0
    assert "already promoted" in again.stdout and "nothing to do" in again.stdout

    rebuilt = inv("rebuild-slave", "--reuse", fenced.instance_id, env_file=paired)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    for instance in (report["new_master"], fenced.instance_id):  # deployed again by the pair
        assert service_status(paired, instance, "gitlab-verify") == "running"
    green = inv("status", "--json", env_file=paired)
    assert green.returncode == 0, green.stdout + green.stderr
    assert json.loads(green.stdout)["ok"] is True

    # The slave's GitLab started by hand, as a reboot of a host whose GitLab kept its restart
    # policy would: promotion stops it before the restore, and starts it on the snapshot.
    service_container(paired, fenced.instance_id, "gitlab").start()
    second = inv("promote-slave", "--yes", "--planned", env_file=paired)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "promoted" in second.stdout and "epoch 2 -> 3" in second.stdout
    assert "GitLab was running on this slave's old data; stopped" in second.stdout
    assert "slave: gitlab: started" in second.stdout, second.stdout


def _status(env_file: Path) -> tuple[int, dict[str, Any]]:
    done = inv("status", "--json", env_file=env_file)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def _assert_status_shows_a_half_done_promotion(env_file: Path) -> None:
    code, data = _status(env_file)
    checks = {c["name"]: c for c in data["checks"]}
    assert code == 1 and data["ok"] is False
    assert not checks["promotion"]["ok"] and checks["promotion"]["critical"]
    assert (
        "steps done: preflight, freshness, stop-master-sync, fence-master"
        in (checks["promotion"]["detail"])
    )
    assert checks["promotion"]["hint"] == "inv promote-slave resumes it"


def _assert_status_shows_the_promoted_pair(env_file: Path, master: str, fenced: str) -> None:
    """After a promotion and before rebuild-slave: no slave, the old master fenced."""
    code, data = _status(env_file)
    checks = {c["name"]: c for c in data["checks"]}
    assert code == 1 and data["ok"] is False
    assert "promotion" not in checks
    assert checks["master host"]["ok"] and checks["master serving"]["ok"], checks
    assert checks["elastic ip"]["ok"] and checks[f"fenced {fenced}"]["ok"]
    assert not checks["slave host"]["ok"] and checks["slave host"]["critical"]
    assert not checks["aws slave instance"]["ok"]
    roles = {h["instance_id"]: h["role"] for h in data["aws"]["hosts"]}
    assert roles == {master: "master", fenced: FENCED}
    text = inv("status", env_file=env_file)
    assert text.returncode == 1
    assert f"  fenced  {fenced}" in text.stdout
    assert "FAIL slave host" in text.stdout
    assert "critical check(s) failed" in text.stderr
