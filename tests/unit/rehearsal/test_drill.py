"""The drill's checks of the fenced old master: what counts as refused, and as listed fenced."""

from __future__ import annotations

import json
import subprocess

import pytest

from gitlab_sync import keys
from ops.rehearsal.drill import fenced_in_status, receiver_refusal

OLD = "i-0aaaaaaaaaaaaaaaa"


def _sent(stderr: str) -> str:
    """The error the master's pass records when its ssh to the slave failed with ``stderr``."""
    return keys.explain_ssh_failure("172.17.0.1:41004", 12, stderr)


@pytest.mark.parametrize(
    "said",
    [
        "refused: sender epoch 1 is not this slave's epoch 2 (fenced)",
        "refused: this sidecar is not a slave (fenced or not paired)",
    ],
)
def test_the_receivers_own_refusal_counts_as_refused(said: str) -> None:
    error = _sent(f"gitlab-sync receiver: {said}\nrsync error: (code 12)")
    assert receiver_refusal(error) == said


@pytest.mark.parametrize(
    "stderr",
    [
        "ssh: connect to host 172.17.0.1 port 41004: Connection timed out",
        "ssh: connect to host 172.17.0.1 port 41004: Connection refused",
        "kex_exchange_identification: read: Connection reset by peer",
        "root@172.17.0.1: Permission denied (publickey).",
        "Host key verification failed.",
    ],
)
def test_a_timeout_an_unreachable_host_or_no_receiver_is_not_a_refusal(stderr: str) -> None:
    error = _sent(stderr)
    assert error.startswith("the slave at")
    assert receiver_refusal(error) == ""


def test_a_pass_that_timed_out_is_not_a_refusal() -> None:
    assert receiver_refusal("the slave at 172.17.0.1:41004 did not answer within 30 s") == ""
    assert receiver_refusal("") == ""


def _status(code: int, out: object, err: str = "") -> subprocess.CompletedProcess[str]:
    stdout = out if isinstance(out, str) else json.dumps(out)
    return subprocess.CompletedProcess(["inv", "status", "--json"], code, stdout, err)


def test_inv_status_listing_the_old_master_fenced_passes_whatever_its_exit_code() -> None:
    checks = [
        {"name": "aws slave instance", "ok": False, "detail": "none tagged"},
        {"name": f"fenced {OLD}", "ok": True, "detail": "old master, running, groups gitlab-slave"},
    ]
    found = fenced_in_status(_status(1, {"ok": False, "checks": checks}), OLD)
    assert found.ok
    assert found.name == "inv status shows it fenced"
    assert found.detail == f"fenced {OLD} ok: old master, running, groups gitlab-slave"


def test_a_fenced_check_that_fails_or_is_missing_fails() -> None:
    open_to_clients = {"name": f"fenced {OLD}", "ok": False, "detail": "groups gitlab-open"}
    assert not fenced_in_status(_status(1, {"checks": [open_to_clients]}), OLD).ok
    missing = fenced_in_status(_status(0, {"ok": True, "checks": []}), OLD)
    assert not missing.ok
    assert missing.detail == f"inv status (exit 0) has no check 'fenced {OLD}'"


def test_inv_status_crashing_without_json_fails_with_its_last_words() -> None:
    crashed = _status(1, "", "error: SLAVE_HOST is not set and AWS has no running instance\n")
    found = fenced_in_status(crashed, OLD)
    assert not found.ok
    assert found.detail == (
        "inv status --json exited 1, no JSON: "
        "error: SLAVE_HOST is not set and AWS has no running instance"
    )
