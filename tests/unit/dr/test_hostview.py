"""Reading the pair's hosts: both at the same time, and through an engine already open when
promotion has one (no hosts: the engine is faked)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from ops import settings as settings_mod
from ops.dr.hostview import HostView, look, look_at_once
from ops.dr.topology import Side
from ops.hosts.engine import Engine, ServiceState
from ops.hosts.ssh import Host

HOST = Host("slave", "10.0.0.6", 22, "admin")


def test_the_hosts_are_read_at_the_same_time() -> None:
    # Each read waits for the other to have begun: read one after the other, neither could.
    both = threading.Barrier(2, timeout=5)

    def read(role: str) -> HostView:
        both.wait()
        return HostView(role, f"{role} host")

    seen = look_at_once(lambda: read("master"), lambda: read("slave"))
    assert [view.role for view in seen] == ["master", "slave"]


class _Opened:
    """An engine already open: its stack's containers (no sidecar running, so no status)."""

    def __init__(self) -> None:
        self.closed = False

    def ps(self) -> list[ServiceState]:
        return [ServiceState("gitlab", "x-gitlab-1", "id", "created", None, "gitlab:1")]

    def close(self) -> None:
        self.closed = True


def test_a_host_is_read_through_the_engine_given_which_stays_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_open(host: Host, settings: Any) -> Engine:
        raise AssertionError("an engine was given: none is opened")

    monkeypatch.setattr(Engine, "open", staticmethod(no_open))
    settings = settings_mod.load(environ={}, env_file=Path(os.devnull))
    opened = _Opened()
    seen = look(Side("slave", HOST, settings), engine=cast(Engine, opened))
    assert seen.error == "" and seen.target == str(HOST)
    gitlab = seen.service("gitlab")
    assert gitlab is not None and gitlab.state == "created"
    assert not opened.closed  # the caller's, for the steps that follow
