"""ops.dr.sidecar against scripted engines: gitlab-sync's answers, and the wait for GitLab."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, cast

import pytest

from ops import settings as settings_mod
from ops.dr import sidecar
from ops.dr.promotion_steps import fence_receiver
from ops.errors import HostError, SidecarError
from ops.hosts.compose import STACK_FILE
from ops.hosts.engine import ContainerNotRunning, Engine, ExecResult, ServiceState
from ops.hosts.ssh import Host
from tests.fakes import FakeClock

HOST = Host("slave", "10.0.0.6", 22, "admin")

Answer = ExecResult | Exception
"""What one exec does: returns a result, or raises."""


class ScriptedEngine(Engine):
    """An Engine whose execs answer from a script (the last answer repeats) and count calls."""

    def __init__(self, answers: list[Answer], state: str = "running") -> None:
        settings = settings_mod.load(environ={}, env_file=Path(os.devnull))
        super().__init__(HOST, settings, client=cast(Any, None))
        self.answers = answers
        self.execs: list[list[str]] = []
        self.current = state

    def exec(
        self, service: str, argv: Any, stdin: bytes | None = None, *, timeout: float = 120.0
    ) -> ExecResult:
        self.execs.append([service, *argv])
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def state(self, service: str) -> ServiceState:
        return ServiceState(service, f"x_{service}_1", "id", self.current, None, "image")


def ok(stdout: str = "") -> ExecResult:
    return ExecResult(0, stdout.encode(), b"")


def failed(code: int = 1, stderr: str = "") -> ExecResult:
    return ExecResult(code, b"", stderr.encode())


NOT_RUNNING = ContainerNotRunning(f"{HOST}: exec gitlab-healthcheck in gitlab failed: not running")


def wait(engine: Engine, timeout: float = 900) -> tuple[float, FakeClock]:
    clock = FakeClock()
    return sidecar.wait_gitlab_healthy(engine, timeout, clock, clock.sleep), clock


# --- gitlab-sync ---------------------------------------------------------------------------------


def test_a_failed_gitlab_sync_says_its_last_error_line() -> None:
    engine = ScriptedEngine([failed(2, "reading\ngitlab-sync: error: not paired\n")])
    with pytest.raises(
        SidecarError, match=r"^slave \(admin@10.0.0.6:22\): gitlab-sync ls failed: "
    ):
        sidecar.run(engine, "ls")
    with pytest.raises(SidecarError, match=r"failed: not paired$"):
        sidecar.run(engine, "ls")


def test_status_is_parsed_once_into_the_typed_record() -> None:
    printed = {"role": "slave", "epoch": 3, "last_complete": {"snapshot": "s-1", "files": 2}}
    engine = ScriptedEngine([ok(json.dumps(printed))])
    status = sidecar.status(engine)
    assert engine.execs == [["gitlab-rsync", "gitlab-sync", "status", "--json"]]
    assert (status.role, status.epoch) == ("slave", 3)
    assert status.last_complete is not None and status.last_complete.snapshot == "s-1"


def test_status_that_is_not_a_json_object_is_a_sidecar_error() -> None:
    with pytest.raises(SidecarError, match="did not print JSON"):
        sidecar.status(ScriptedEngine([ok("starting...")]))
    with pytest.raises(SidecarError, match="did not print a JSON object"):
        sidecar.status(ScriptedEngine([ok("[]")]))


# --- the wait for GitLab's health ----------------------------------------------------------------


def test_promotions_health_check_is_the_compose_files_own() -> None:
    """ops.dr.sidecar polls GitLab with the Compose stack's health check: the same command, only
    a shorter --max-time, so a change to one cannot leave the other checking something else."""
    match = re.search(r"^\s*test: (\[.*\])\s*$", STACK_FILE.read_text(), re.MULTILINE)
    assert match, "no healthcheck test in the stack file"
    compose = json.loads(match.group(1))
    assert compose[0] == "CMD"

    def without_max_time(argv: list[str]) -> list[str]:
        at = argv.index("--max-time")
        return argv[:at] + argv[at + 2 :]

    assert without_max_time(compose[1:]) == without_max_time(list(sidecar.HEALTHCHECK))


def test_gitlab_starting_is_waited_for_until_its_check_passes() -> None:
    engine = ScriptedEngine([NOT_RUNNING, NOT_RUNNING, failed(22), ok()])
    waited, clock = wait(engine)
    assert waited == clock.now == pytest.approx(3 * sidecar.HEALTH_POLL)
    assert sidecar.HEALTH_POLL <= 0.1  # the moment GitLab is up is seen within a tenth of a second
    assert len(engine.execs) == 4
    assert engine.execs[0] == ["gitlab", *sidecar.HEALTHCHECK]


def test_gitlab_never_healthy_fails_at_the_deadline_saying_its_state() -> None:
    engine = ScriptedEngine([failed(22)], state="restarting")
    with pytest.raises(HostError, match=r"GitLab not healthy after 30 s \(restarting\)$"):
        wait(engine, timeout=30)


@pytest.mark.parametrize(
    "raised",
    [
        HostError(f"{HOST}: no container for service gitlab (gitlabdr)"),
        HostError(f"{HOST}: listing containers failed: unreachable: no route to host"),
        HostError(f"{HOST}: exec gitlab-healthcheck in gitlab still running after 15s"),
    ],
    ids=["no container", "host unreachable", "exec timed out"],
)
def test_an_error_that_is_not_gitlab_starting_fails_the_wait_at_once(raised: HostError) -> None:
    engine = ScriptedEngine([raised])
    clock = FakeClock()
    with pytest.raises(HostError) as caught:
        sidecar.wait_gitlab_healthy(engine, 900, clock, clock.sleep)
    assert caught.value is raised
    assert clock.now == 0
    assert len(engine.execs) == 1


# --- restarting the sidecar ----------------------------------------------------------------------


class _Container:
    def __init__(self) -> None:
        self.restarts: list[int] = []

    def restart(self, timeout: int) -> None:
        self.restarts.append(timeout)


class RestartableEngine(ScriptedEngine):
    def __init__(self, answers: list[Answer]) -> None:
        super().__init__(answers)
        self.sidecar = _Container()

    def container(self, service: str) -> Any:
        assert service == sidecar.SERVICE
        return self.sidecar


def daemon_answer(started_at: str, alive: bool = True) -> ExecResult:
    return ok(json.dumps({"daemon": {"alive": alive, "started_at": started_at}}))


def test_a_restart_waits_for_the_daemon_to_start_anew() -> None:
    old, new = "2026-11-25T12:00:00.000000Z", "2026-11-25T12:05:00.000000Z"
    engine = RestartableEngine(
        [
            daemon_answer(old),
            daemon_answer(old),
            NOT_RUNNING,
            daemon_answer(new, alive=False),
            daemon_answer(new),
        ]
    )
    clock = FakeClock()
    assert sidecar.restart(engine, clock=clock, sleep=clock.sleep) == new
    assert engine.sidecar.restarts == [30]
    assert clock.now == 1.5


def test_a_sidecar_that_does_not_start_again_fails_the_restart_at_its_deadline() -> None:
    engine = RestartableEngine([daemon_answer("2026-11-25T12:00:00.000000Z")])
    clock = FakeClock()
    with pytest.raises(SidecarError, match=r"timed out after 5 s waiting for slave .*gitlab-rsync"):
        sidecar.restart(engine, timeout=5, clock=clock, sleep=clock.sleep)


# --- fencing the receiver at promotion --------------------------------------------------------


def test_promotion_fences_the_receiver_in_one_exec() -> None:
    engine = ScriptedEngine([ok('{"role": "slave", "was": 1, "epoch": 2, "fenced": true}')])
    said = fence_receiver(engine, 2)
    assert said == "slave: the receiver now refuses senders of epochs before 2"
    assert engine.execs == [["gitlab-rsync", "gitlab-sync", "fence", "2", "--json"]]
    engine = ScriptedEngine([ok('{"role": "master", "was": 1, "epoch": 1, "fenced": false}')])
    assert fence_receiver(engine, 2) == "slave: its sidecar is not receiving; nothing to fence"


def test_a_sidecar_without_the_fence_verb_is_fenced_by_ls_and_add() -> None:
    old_image = failed(
        2, "gitlab-sync: error: argument COMMAND: invalid choice: 'fence' (choose from 'key')"
    )
    pairing = '{"role": "slave", "peer": "10.0.0.5:22", "peer_key": "ssh-ed25519 K", "epoch": 1}'
    engine = ScriptedEngine([old_image, ok(pairing), ok("paired")])
    assert fence_receiver(engine, 2) == "slave: the receiver now refuses senders of epochs before 2"
    assert [argv[2] for argv in engine.execs] == ["fence", "ls", "add"]
    assert engine.execs[2][-2:] == ["--epoch", "2"]
    refused = failed(1, "gitlab-sync: error: the epoch must be 1 or more")
    with pytest.raises(SidecarError, match="gitlab-sync fence failed: the epoch must be 1"):
        fence_receiver(ScriptedEngine([refused]), 0)
