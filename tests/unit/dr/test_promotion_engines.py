"""Promotion's steps share one engine (one relay) per host: opened once, kept, closed at the
end; one a step's error went through is closed and opened anew (no hosts: Engine.open faked)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import pytest

from ops.dr import sidecar
from ops.dr.journal import Journal
from ops.dr.promotion_steps import Context, _engine, close_engines
from ops.dr.promotion_view import Flags
from ops.errors import HostError
from ops.hosts.engine import Engine
from ops.hosts.ssh import Host
from ops.settings import Settings
from tests.unit.pairs import NOW, A, B, instance, settings_of, state_of


class Opened:
    """What Engine.open returns here: it records what is asked of it."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.closed = False
        self.expected: list[str] = []

    def expect(self, service: str) -> None:
        self.expected.append(service)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Opened]:
    made: list[Opened] = []

    def fake_open(host: Host, settings: Settings) -> Opened:
        made.append(Opened(host))
        return made[-1]

    monkeypatch.setattr(Engine, "open", staticmethod(fake_open))
    return made


def _context(tmp_path: Path) -> tuple[Context, Journal]:
    settings = dataclasses.replace(settings_of(), state_dir=str(tmp_path))
    state = state_of(instance(A, "master"), instance(B, "slave"))
    ctx = Context(settings, cast(Any, None), state, Flags(), lambda _line: None)
    journal = Journal.new(settings, epoch=1, master=A, slave=B, planned=False, started=NOW)
    return ctx, journal


def test_each_host_is_opened_once_for_every_step_and_closed_at_the_end(
    tmp_path: Path, opened: list[Opened]
) -> None:
    ctx, journal = _context(tmp_path)
    for _step in range(3):
        with _engine(ctx, journal, "slave") as slave, _engine(ctx, journal, "master") as master:
            assert slave is not master
    assert len(opened) == 2
    assert not any(engine.closed for engine in opened)
    close_engines(ctx)
    assert all(engine.closed for engine in opened)
    assert ctx.engines == {}


def test_an_engine_a_steps_error_went_through_is_closed_and_opened_anew(
    tmp_path: Path, opened: list[Opened]
) -> None:
    ctx, journal = _context(tmp_path)
    with pytest.raises(HostError), _engine(ctx, journal, "slave"):
        raise HostError("slave: exec gitlab-sync in gitlab-rsync failed: the relay broke")
    assert opened[0].closed
    with _engine(ctx, journal, "slave") as again:
        assert cast(Any, again) is opened[1]
    assert not opened[1].closed


def test_the_slave_reads_gitlabs_configuration_hash_only_before_gitlab_is_started(
    tmp_path: Path, opened: list[Opened]
) -> None:
    ctx, journal = _context(tmp_path)
    with _engine(ctx, journal, "slave"), _engine(ctx, journal, "master"):
        pass
    assert [engine.expected for engine in opened] == [[sidecar.GITLAB], []]
    close_engines(ctx)
    journal.record("start-slave-gitlab", 0, 1, {"snapshot": "S", "restore_method": "snapshot"})
    with _engine(ctx, journal, "slave"):
        pass
    assert opened[-1].expected == []
