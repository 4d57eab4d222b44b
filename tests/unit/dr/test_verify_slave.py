"""``inv verify-slave``'s logic with a fake engine: the choice, the throwaway container's shape,
the readiness wait, the uploads check's reading, the record, the cleanup on every way out, the
``discard-copy`` verb's limits, and ``inv status``'s line and warning."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from gitlab_sync import cli_data
from gitlab_sync.config import Paths, SyncError, iso
from gitlab_sync.snapshots import name_time
from ops.checks import Check
from ops.dr import verify_slave as vs
from ops.dr.snapshots import Listing
from ops.dr.status import StatusReport, checks, render
from ops.errors import Refusal
from ops.hosts.engine import ExecResult
from ops.rehearsal import standin as gl
from ops.rehearsal.verify import Verification
from tests.fakes import FakeClock
from tests.unit.pairs import NOW, master_view, settings_of, sidecar, slave_view

A, B = "20261125T115000.000000Z", "20261125T115500.000000Z"


def _listing(current: str | None = B) -> Listing:
    rows = [{"name": n, "instant": iso(name_time(n)), "method": "snapshots"} for n in (A, B)]
    return Listing.from_json({"current": current, "snapshots": rows, "method": "snapshots"})


def test_pick_defaults_to_current_and_refuses_an_unknown_name_in_one_line() -> None:
    assert vs.pick(_listing(), "").name == B
    assert vs.pick(_listing(current=None), "").name == B  # the newest
    assert vs.pick(_listing(), A).name == A
    with pytest.raises(Refusal, match=r"^the slave has no snapshot 2000 \(it keeps 2\); inv snap"):
        vs.pick(_listing(), "2000")
    with pytest.raises(Refusal, match="no complete snapshot to verify"):
        vs.pick(Listing.from_json({"snapshots": []}), "")


def test_summary_and_result_name_what_failed() -> None:
    good = Verification((Check("readiness", True, "green"), Check("postgresql", True, "up")))
    bad = Verification(
        (Check("readiness", True, "green"), Check("repositories", False, "1 broken: x"))
    )
    assert vs.summary(good) == "all 2 checks passed"
    assert vs.summary(bad) == "1 of 2 checks failed: repositories"
    record = vs.result(bad)
    assert record["ok"] is False and record["checks"][1]["name"] == "repositories"
    assert set(record) == {"ok", "checks", "summary"}


class FakeContainer:
    def __init__(self, answers: list[tuple[int, bytes]] | None = None, status: str = "running"):
        self.answers = answers or []
        self.status = status
        self.attrs: dict[str, Any] = {
            "Config": {"Env": ["GITLAB_OMNIBUS_CONFIG=x"], "Hostname": "gl.test"},
            "HostConfig": {"ShmSize": 268435456},
        }
        self.removed = False
        self.argv: list[list[str]] = []

    def reload(self) -> None:
        pass

    def logs(self, **_: Any) -> bytes:
        return b"FATAL: incorrect checksum in control file\n"

    def exec_run(self, argv: list[str], user: str = "root") -> tuple[int, bytes]:
        self.argv.append(argv)
        return self.answers.pop(0) if self.answers else (0, b"")

    def remove(self, force: bool, v: bool) -> None:
        assert force and v
        self.removed = True


class FakeContainers:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def list(
        self, all: bool, filters: dict[str, list[str]], ignore_removed: bool
    ) -> list[FakeContainer]:
        assert all and ignore_removed and "gitlab-dr.one-off=verify" in filters["label"]
        return [c for c in self.engine.made if not c.removed]

    def run(self, image: str, **options: Any) -> FakeContainer:
        self.engine.options = {"image": image, **options}
        container = FakeContainer()
        self.engine.made.append(container)
        return container


class FakeClient:
    def __init__(self, engine: FakeEngine) -> None:
        self.containers = FakeContainers(engine)


class FakeEngine:
    """The slave: a sidecar answering snapshots/prepare/mark-verified/discard-copy."""

    host = "admin@slave:22"

    def __init__(self, **settings: str) -> None:
        self.settings = settings_of(SYNC_HOME="/srv/gitlab-sync", **settings)
        self.project = self.settings.project_name
        self.client = FakeClient(self)
        self.made: list[FakeContainer] = []
        self.options: dict[str, Any] = {}
        self.calls: list[list[str]] = []
        self.marked: dict[str, Any] | None = None
        self.stack = FakeContainer()

    def one_off_name(self, name: str) -> str:
        return f"{self.project}-{name}"

    def container(self, service: str) -> FakeContainer:
        assert service == "gitlab"
        return self.stack

    def exec(
        self, service: str, argv: list[str], stdin: bytes | None = None, *, timeout: float = 0
    ) -> ExecResult:
        assert service == "gitlab-rsync" and argv[0] == "gitlab-sync"
        self.calls.append(argv[1:])
        verb = argv[1]
        if verb == "snapshots":
            return ExecResult(0, json.dumps(_listing().to_json()).encode(), b"")
        if verb == "prepare":
            return ExecResult(0, b'{"method": "snapshot", "seconds": 0.01}', b"")
        if verb == "mark-verified":
            assert stdin is not None
            self.marked = json.loads(stdin)
            return ExecResult(0, json.dumps({"verified": self.marked}).encode(), b"")
        return ExecResult(0, b"", b"")


def test_the_throwaway_gitlab_has_no_port_no_network_and_the_stacks_mounts_and_labels() -> None:
    engine = FakeEngine()
    made = vs.options(engine, B, "/srv/gitlab-sync/.verify/" + B)  # type: ignore[arg-type]
    assert made["network_mode"] == "none"
    assert "ports" not in made and "publish_all_ports" not in made
    assert made["volumes"] == {
        f"/srv/gitlab-sync/.verify/{B}/config": {"bind": "/etc/gitlab", "mode": "rw"},
        f"/srv/gitlab-sync/.verify/{B}/logs": {"bind": "/var/log/gitlab", "mode": "rw"},
        f"/srv/gitlab-sync/.verify/{B}/data": {"bind": "/var/opt/gitlab", "mode": "rw"},
    }
    assert made["labels"] == {
        "com.docker.compose.project": engine.project,
        "gitlab-dr.one-off": "verify",
        "gitlab-dr.verify-snapshot": B,
    }
    assert made["name"] == f"{engine.project}-verify" and "restart_policy" not in made
    assert made["environment"] == ["GITLAB_OMNIBUS_CONFIG=x"] and made["shm_size"] == 268435456


def test_the_copy_sits_in_the_sync_area_under_verify() -> None:
    settings = settings_of(SYNC_HOME="/srv/gitlab-sync/")
    assert vs.copy_paths(settings, B) == (
        f"/srv/gitlab-sync/.verify/{B}",
        f"/sync/.verify/{B}",
    )


def _ready(status: int, body: dict[str, Any]) -> tuple[int, bytes]:
    return 0, (json.dumps(body) + f"\n{status}").encode()


def test_readiness_is_waited_for_within_the_timeout() -> None:
    not_yet = _ready(503, {"status": "failed", "db_check": [{"status": "failed", "message": "x"}]})
    container = FakeContainer([not_yet, not_yet, _ready(200, {"status": "ok"})])
    clock = FakeClock()
    check = vs.wait_ready(container, 10, clock, clock.sleep)  # type: ignore[arg-type]
    assert check.ok and check.detail == "green after 2.0 s"
    assert container.argv[0][0] == vs.CURL and vs.READINESS_URL in container.argv[0]


def test_readiness_that_never_comes_fails_with_the_last_reason() -> None:
    not_yet = _ready(503, {"status": "failed", "db_check": [{"status": "failed", "message": "x"}]})
    container = FakeContainer([not_yet] * 10)
    clock = FakeClock()
    check = vs.wait_ready(container, 3, clock, clock.sleep)  # type: ignore[arg-type]
    assert not check.ok and check.detail == (
        "GitLab at localhost in the copy not ready after 3 s: HTTP 503: db_check: x"
    )


def test_a_gitlab_that_stops_fails_readiness_at_once_with_its_last_log_line() -> None:
    container = FakeContainer(status="exited")
    check = vs.wait_ready(container, 600, FakeClock())  # type: ignore[arg-type]
    assert not check.ok and "stopped (exited): FATAL: incorrect checksum" in check.detail


@pytest.mark.parametrize(
    ("output", "ok", "detail"),
    [
        ("none\n", True, "no uploads table: nothing to resolve"),
        ("ok\nok\nproject\n", True, "2 local uploads there (1 project uploads not resolved)"),
        ("ok\nMISSING uploads/-/system/a.png\n", False, "1 of 2 local uploads missing"),
    ],
)
def test_the_uploads_check_reads_the_script(output: str, ok: bool, detail: str) -> None:
    check = vs.check_uploads(FakeContainer([(0, output.encode())]))  # type: ignore[arg-type]
    assert check.ok is ok and check.detail.startswith(detail), check


def test_verify_records_the_result_and_throws_the_copy_away() -> None:
    engine = FakeEngine()
    ready = [_ready(200, {"status": "ok"}), (0, b"f\n"), (0, b"OK a/b 2\n"), (0, b"none\n")]
    original = FakeContainers.run

    def run(self: FakeContainers, image: str, **options: Any) -> FakeContainer:
        container = original(self, image, **options)
        container.answers = [*ready, (0, b"none\n")]
        return container

    FakeContainers.run = run  # type: ignore[method-assign]
    try:
        outcome = vs.verify_on(engine, "", 5)  # type: ignore[arg-type]
    finally:
        FakeContainers.run = original  # type: ignore[method-assign]
    assert outcome.ok, outcome.verification.render()
    assert outcome.snapshot == B and engine.marked and engine.marked["ok"] is True
    verbs = [c[0] for c in engine.calls]
    assert verbs == ["snapshots", "discard-copy", "prepare", "mark-verified", "discard-copy"]
    assert engine.calls[1] == ["discard-copy", "--all"]
    assert engine.calls[2][:2] == ["prepare", f"/sync/.verify/{B}"]
    assert engine.calls[-1] == ["discard-copy", f"/sync/.verify/{B}"]
    assert all(c.removed for c in engine.made)
    assert engine.options["image"] == engine.settings.gitlab_image


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_the_container_and_copy_go_also_on_ctrl_c_or_a_crash(
    interrupt: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()

    def boom(*_: Any) -> Verification:
        raise interrupt()

    monkeypatch.setattr(vs, "run_checks", boom)
    with pytest.raises(interrupt):
        vs.verify_on(engine, A, 5)  # type: ignore[arg-type]
    assert engine.made and all(c.removed for c in engine.made)
    assert engine.calls[-1] == ["discard-copy", f"/sync/.verify/{A}"]
    assert engine.marked is None


def test_a_leftover_throwaway_gitlab_is_removed_first() -> None:
    engine = FakeEngine()
    left = FakeContainer()
    engine.made.append(left)
    said: list[str] = []

    def no_checks(*_: Any) -> Verification:
        assert left.removed, "the leftover is gone before the new one starts"
        return Verification((Check("readiness", False, "x"),))

    original = vs.run_checks
    vs.run_checks = no_checks  # type: ignore[assignment]
    try:
        outcome = vs.verify_on(engine, "", 5, said.append)  # type: ignore[arg-type]
    finally:
        vs.run_checks = original
    assert not outcome.ok and engine.marked and engine.marked["ok"] is False
    assert "removed a throwaway GitLab an earlier run left" in said


# --- the sidecar's discard-copy ------------------------------------------------------------------


def _discard(tmp_path: Path, path: str | None = None, everything: bool = False) -> int:
    paths = Paths(state=tmp_path / "state", source=tmp_path / "source", sync=tmp_path / "sync")
    args = argparse.Namespace(path=path, all=everything, json=True)
    return cli_data.cmd_discard_copy(args, paths)


def test_discard_copy_removes_only_copies_under_verify(tmp_path: Path) -> None:
    sync = tmp_path / "sync"
    (sync / ".verify" / B / "data").mkdir(parents=True)
    (sync / "snapshots" / A).mkdir(parents=True)
    for outside in (str(sync / "snapshots" / A), str(sync / ".verify"), "/etc"):
        with pytest.raises(SyncError, match="is not a copy in"):
            _discard(tmp_path, outside)
    with pytest.raises(SyncError, match="name a copy, or --all"):
        _discard(tmp_path)
    assert _discard(tmp_path, str(sync / ".verify" / B)) == 0
    assert not (sync / ".verify" / B).exists() and (sync / "snapshots" / A).is_dir()
    (sync / ".verify" / "x").mkdir()
    assert _discard(tmp_path, everything=True) == 0
    assert list((sync / ".verify").iterdir()) == []


def test_a_verify_folder_is_not_a_snapshot_to_the_area(tmp_path: Path) -> None:
    from gitlab_sync.snapshots import Area

    (tmp_path / ".verify" / B).mkdir(parents=True)
    (tmp_path / "snapshots" / A).mkdir(parents=True)
    assert Area(tmp_path).names() == [A]


# --- inv status ---------------------------------------------------------------------------------


def _status(newest_verified: dict[str, Any] | None, **settings: str) -> dict[str, Check]:
    slave = slave_view(sync=sidecar("slave", newest_verified=newest_verified))
    found = checks(settings_of(USE_AWS="false", **settings), None, master_view(), slave, 1, NOW)
    return {c.name: c for c in found}


def test_status_warns_when_no_snapshot_is_verified() -> None:
    check = _status(None)["newest verified"]
    assert not check.ok and not check.critical and check.hint == "inv verify-slave"


def test_status_warns_when_the_newest_verified_is_older_than_the_setting() -> None:
    good = {"name": A, "at": "2026-11-25T11:58:00Z"}  # 10 min before NOW
    assert _status(good)["newest verified"].ok
    old = _status(good, VERIFIED_MAX_AGE="5m")["newest verified"]
    assert not old.ok and not old.critical and "600 s old" in old.detail


def test_status_shows_the_newest_verified_snapshot_and_its_age() -> None:
    good = {"name": A, "at": "2026-11-25T11:58:00Z"}
    slave = slave_view(sync=sidecar("slave", newest_verified=good))
    report = StatusReport(None, (master_view(), slave), (), NOW)
    assert f"  newest verified: {A}, 10 min old" in render(report)
    none = dataclasses.replace(slave, sync=sidecar("slave"))
    assert "  newest verified: none (inv verify-slave)" in render(
        StatusReport(None, (master_view(), none), (), NOW)
    )


def test_probe_reads_status_and_body(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any, **__: Any) -> Any:
        raise gl.GitLabClientError("docker exec failed: gone")

    monkeypatch.setattr(gl, "run_in", fail)
    found = vs.probe(FakeContainer())  # type: ignore[arg-type]
    assert found.status == 0 and "gone" in found.error


def test_an_engine_error_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import docker.errors

    from ops.errors import HostError

    engine = FakeEngine()

    def refuse(*_: Any, **__: Any) -> Any:
        raise docker.errors.APIError("500 Server Error", explanation="engine is shutting down")

    monkeypatch.setattr(FakeContainers, "list", refuse)
    with pytest.raises(HostError, match=r"listing throwaway GitLabs failed: engine is shutting"):
        vs.verify_on(engine, "", 5)  # type: ignore[arg-type]
