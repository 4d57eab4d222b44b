"""Promotion's steps table, its post-mortem bundle and the readiness wait (no AWS, no hosts)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import docker.errors
import pytest
from botocore.exceptions import ClientError

from ops.dr import promotion_steps as steps
from ops.dr import readiness
from ops.dr.journal import Journal
from ops.dr.promote import STEPS as EXPORTED
from ops.dr.promotion_steps import STEPS, TABLE, Context, postmortem, restart_sidecar
from ops.dr.promotion_view import Flags
from ops.errors import AwsError, HostError
from tests.fakes import FakeClock
from tests.unit.pairs import NOW, settings_of, state_of

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


def test_one_table_names_every_step_once_in_the_documented_order() -> None:
    assert (
        STEPS
        == EXPORTED
        == (
            "preflight",
            "freshness",
            "stop-master-sync",
            "fence-master",
            "start-slave-gitlab",
            "open-slave",
            "move-address-and-tags",
            "restart-sidecar",
            "report",
        )
    )
    assert len({step.run for step in TABLE}) == len(TABLE)


class _Ec2:
    def __init__(self, console: Exception) -> None:
        self.console = console

    def get_console_output(self, **_: Any) -> dict[str, Any]:
        raise self.console

    def describe_instance_status(self, **_: Any) -> dict[str, Any]:
        return {"InstanceStatuses": []}


def _context(tmp_path: Path, ec2: _Ec2) -> tuple[Context, Journal]:
    settings = dataclasses.replace(settings_of(), state_dir=str(tmp_path))
    ctx = Context(settings, cast("EC2Client", ec2), state_of(), Flags(), lambda _line: None)
    journal = Journal.new(
        settings, epoch=1, master="i-gone", slave="i-slave", planned=False, started=NOW
    )
    return ctx, journal


def test_the_post_mortem_bundle_records_what_aws_refused_and_goes_on(tmp_path: Path) -> None:
    denied = ClientError(
        {"Error": {"Code": "UnauthorizedOperation", "Message": "not allowed"}}, "GetConsoleOutput"
    )
    ctx, journal = _context(tmp_path, _Ec2(denied))
    folder = Path(postmortem(ctx, journal))
    console = json.loads((folder / "console-output.json").read_text())
    assert "UnauthorizedOperation" in console["error"]
    assert json.loads((folder / "instance-status.json").read_text()) == {"InstanceStatuses": []}
    assert "i-gone is not in AWS any more" in (folder / "hosts.txt").read_text()


def test_the_post_mortem_bundle_does_not_hide_a_programming_error(tmp_path: Path) -> None:
    ctx, journal = _context(tmp_path, _Ec2(TypeError("a bug")))
    with pytest.raises(TypeError, match="a bug"):
        postmortem(ctx, journal)


def test_after_a_restore_by_a_copy_the_sidecar_is_not_restarted(tmp_path: Path) -> None:
    # The journal's slave is not in AWS: a restart would fail to reach it, so this shows that
    # nothing is reached for.
    ctx, journal = _context(tmp_path, _Ec2(RuntimeError("unused")))
    journal.record("start-slave-gitlab", 0, 1, {"snapshot": "S", "restore_method": "copy"})
    done = restart_sidecar(ctx, journal, cast(Any, None))
    assert done == {"skipped": "the restore copied into GITLAB_HOME: /source is the same folder"}
    journal.record("start-slave-gitlab", 0, 1, {"snapshot": "S", "restore_method": "snapshot"})
    with pytest.raises(AwsError, match="i-slave is not in AWS any more"):
        restart_sidecar(ctx, journal, cast(Any, None))


def test_the_readiness_wait_names_the_url_and_the_last_reason() -> None:
    clock = FakeClock()
    answers = iter([readiness.Readiness(0, error="refused"), readiness.Readiness(502, None, "x")])
    with pytest.raises(readiness.NotReady) as caught:
        readiness.wait_ready(
            "http://198.51.100.7:80",
            1,
            probe=lambda: next(answers, readiness.Readiness(503, {"status": "failed"})),
            clock=clock,
            sleep=clock.sleep,
        )
    assert str(caught.value) == (
        "GitLab at http://198.51.100.7:80 not ready after 1 s: HTTP 503: no reason given"
    )
    ok = readiness.Readiness(200, {"status": "ok"})
    assert readiness.wait_ready("http://h", 5, probe=lambda: ok, clock=clock) == 0.0


class _Verifier:
    """A gitlab-verify container: its status, and whether (and how) it was stopped."""

    def __init__(self, status: str, fails: Exception | None = None) -> None:
        self.status, self.fails = status, fails
        self.stopped: list[str] = []

    def kill(self, signal: str) -> None:
        if self.fails is not None:
            raise self.fails
        self.stopped.append(signal)
        self.status = "exited"


class _Slave:
    def __init__(self, verifier: _Verifier | None) -> None:
        self.verifier = verifier

    def container(self, service: str) -> _Verifier:
        assert service == "gitlab-verify"
        if self.verifier is None:
            raise HostError("slave: no container for service gitlab-verify (gitlab-dr)")
        return self.verifier


def test_promotion_asks_the_slaves_scheduled_verification_to_stop_and_does_not_wait() -> None:
    running = _Verifier("running")
    said = steps.stop_verifier(_Slave(running))  # type: ignore[arg-type]
    assert said == (
        "slave: scheduled verification asked to stop (inv pair or inv rebuild-slave starts it "
        "again)"
    )
    assert running.stopped == ["SIGTERM"]  # it cleans up and ends by itself: nothing waits


def test_a_verifier_missing_stopped_or_refusing_never_stops_the_promotion() -> None:
    assert steps.stop_verifier(_Slave(None)) == (  # type: ignore[arg-type]
        "slave: the scheduled verification was not stopped: slave: no container for service "
        "gitlab-verify (gitlab-dr)"
    )
    exited = _Verifier("exited")
    assert steps.stop_verifier(_Slave(exited)) == (  # type: ignore[arg-type]
        "slave: the scheduled verification is not running (exited)"
    )
    assert exited.stopped == []
    refusing = _Verifier("running", docker.errors.APIError("500 Server Error: engine busy"))
    said = steps.stop_verifier(_Slave(refusing))  # type: ignore[arg-type]
    assert said.startswith("slave: the scheduled verification was not stopped: 500 Server Error")
