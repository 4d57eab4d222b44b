"""The GitLab client helpers' own logic: readiness answers, waiting, gitlab-ctl status lines."""

from __future__ import annotations

from typing import Any, cast

import pytest
from docker.models.containers import Container

from ops.rehearsal import standin as gl
from tests.fakes import FakeClock

DOWN = {
    "status": "failed",
    "master_check": [{"status": "ok"}],
    "db_check": [{"status": "failed", "message": "PostgreSQL: no such socket"}],
    "gitaly_check": [{"status": "ok"}],
    "secrets_check": [{"status": "failed", "message": "gitlab-secrets.json is missing"}],
}


def test_readiness_is_ready_only_on_200_with_status_ok() -> None:
    assert gl.Readiness(200, {"status": "ok", "master_check": [{"status": "ok"}]}).ready
    assert not gl.Readiness(200, {"status": "failed"}).ready
    assert not gl.Readiness(503, {"status": "ok"}).ready
    assert not gl.Readiness(0, error="connection refused").ready


def test_readiness_reason_names_each_failed_check() -> None:
    assert gl.Readiness(503, DOWN).reason == (
        "HTTP 503: db_check: PostgreSQL: no such socket; "
        "secrets_check: gitlab-secrets.json is missing"
    )
    assert gl.Readiness(0, error="connection refused").reason == "no answer (connection refused)"
    assert gl.Readiness(502, None, "Bad Gateway").reason == "HTTP 502: Bad Gateway"


def test_wait_ready_returns_the_time_waited_once_green() -> None:
    clock = FakeClock()
    answers = iter([gl.Readiness(0, error="refused"), gl.Readiness(503, DOWN)])

    def probe() -> gl.Readiness:
        return next(answers, gl.Readiness(200, {"status": "ok"}))

    waited = gl.wait_ready(
        "http://gitlab", 10, interval=0.5, probe=probe, clock=clock, sleep=clock.sleep
    )
    assert waited == 1.0


def test_wait_ready_gives_the_last_reason_after_the_deadline() -> None:
    clock = FakeClock()
    with pytest.raises(gl.GitLabNotReady, match=r"not ready after 3 s: HTTP 503: db_check"):
        gl.wait_ready(
            "http://gitlab",
            3,
            interval=1,
            probe=lambda: gl.Readiness(503, DOWN),
            clock=clock,
            sleep=clock.sleep,
        )
    assert clock.now == 3


class FakeContainer:
    name = "gitlab"

    def __init__(self, output: str, code: int = 0) -> None:
        self.output, self.code = output, code

    def exec_run(self, argv: list[str], user: str = "") -> tuple[int, bytes]:
        return self.code, self.output.encode()


def container(output: str, code: int = 0) -> Container:
    return cast(Container, cast(Any, FakeContainer(output, code)))


def test_service_states_read_the_lines_of_gitlab_ctl_status() -> None:
    out = (
        "run: nginx: (pid 139) 7s; run: log: (pid 138) 7s\n"
        "down: postgresql: 1s, normally up; run: log: (pid 140) 8s\n"
        "run: puma: (pid 144) 7s; run: log: (pid 142) 7s\n"
    )
    assert gl.service_states(container(out)) == {
        "nginx": "run",
        "postgresql": "down",
        "puma": "run",
    }


def test_project_paths_and_table_names_are_checked_before_use() -> None:
    assert (
        gl.project_url("http://h:80/", "group/sub/project") == "http://h:80/group/sub/project.git"
    )
    for bad in ("project", "../etc/passwd", "group/-x", "group/project.git/.."):
        with pytest.raises(gl.GitLabClientError, match="not a project path"):
            gl.repository_path(bad)
    with pytest.raises(gl.GitLabClientError, match="not a table name"):
        gl.count_rows(container("1"), "t; DROP TABLE t")
    assert gl.count_rows(container("42\n"), "public.drill_rows") == 42
