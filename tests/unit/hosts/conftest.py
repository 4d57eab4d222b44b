"""Fixtures for ops.hosts' unit tests: settings with SSH files of their own and an SSH endpoint."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from ops import settings as settings_mod
from ops.hosts.ssh import Host
from ops.settings import Settings


@pytest.fixture
def host() -> Host:
    """The master at 10.0.0.5:2201, user admin."""
    return Host("master", "10.0.0.5", 2201, "admin")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The defaults, with SSH files under /keys (one with a space) and a 7.5 s connect timeout;
    shared connections' sockets go under this test's own runtime directory."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    return dataclasses.replace(
        settings_mod.load(environ={}, env_file=Path(os.devnull)),
        ssh_key_file="/keys/operator key",
        ssh_known_hosts="/keys/known_hosts",
        ssh_connect_timeout=7.5,
    )
