"""inv status's judgement, from what was read (no hosts needed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from ops import settings as settings_mod
from ops.dr.pair import _needs_pairing
from ops.dr.status import HostView, checks
from ops.errors import SettingError

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKf3m4yD5c7Vg2Qx0j9cT1uYtQx7kHkqz8m0Jt3JHq2b"


def _settings() -> settings_mod.Settings:
    return settings_mod.load({"USE_AWS": "false"}, env_file=Path("/nonexistent"))


def _sync(role: str, started: str = "2026-11-25T11:58:00.000000Z", **extra: Any) -> dict[str, Any]:
    return {
        "role": role,
        "running": True,
        "epoch": 1,
        "watch_note": "",
        "last_complete": {"snapshot": "S", "started_at": started},
        "last_error": None,
        **extra,
    }


def _service(name: str, state: str, health: str | None = None) -> dict[str, Any]:
    return {"service": name, "state": state, "health": health}


def _views(**slave_sync: Any) -> tuple[HostView, HostView]:
    master = HostView(
        "master",
        "admin@m:22",
        "",
        (_service("gitlab", "running", "healthy"), _service("gitlab-rsync", "running")),
        _sync("master"),
    )
    slave = HostView(
        "slave", "admin@s:22", "", (_service("gitlab", "created"),), _sync("slave", **slave_sync)
    )
    return master, slave


def _by_name(found: tuple[Any, ...]) -> dict[str, Any]:
    return {c.name: c for c in found}


def test_a_healthy_pair_passes_every_critical_check() -> None:
    master, slave = _views()
    found = checks(_settings(), None, master, slave, 1, NOW)
    assert all(c.ok for c in found if c.critical), [c for c in found if not c.ok]


def test_an_unreachable_host_is_a_failed_check_not_a_crash() -> None:
    master, _ = _views()
    slave = HostView("slave", "admin@s:22", "slave (admin@s:22): unreachable: connection refused")
    found = _by_name(checks(_settings(), None, master, slave, 1, NOW))
    assert not found["slave host"].ok and "connection refused" in found["slave host"].detail
    assert not found["slave receiving"].ok


def test_a_stale_snapshot_fails_the_freshness_check() -> None:
    master, slave = _views(started="2026-11-25T10:00:00.000000Z")
    found = _by_name(checks(_settings(), None, master, slave, 1, NOW))
    assert not found["last complete pass"].ok
    assert "7200 s old" in found["last complete pass"].detail


def test_a_sidecar_at_another_epoch_fails() -> None:
    master, slave = _views(epoch=2)
    assert not _by_name(checks(_settings(), None, master, slave, 1, NOW))["epoch"].ok


def test_role_overrides_apply_to_one_host_and_are_validated() -> None:
    loaded = settings_mod.load(
        {"SLAVE_OVERRIDES": "SYNC_PORT=2300 PROJECT_NAME=other"}, env_file=Path("/nonexistent")
    )
    assert (loaded.for_role("slave").sync_port, loaded.for_role("slave").project_name) == (
        2300,
        "other",
    )
    assert loaded.for_role("master").sync_port == 2222
    bad = settings_mod.load({"MASTER_OVERRIDES": "NOT_A_SETTING=1"}, env_file=Path("/nonexistent"))
    with pytest.raises(SettingError, match="MASTER_OVERRIDES: NOT_A_SETTING is not a setting"):
        bad.for_role("master")


def test_pairing_is_redone_only_when_something_differs() -> None:
    current = {"role": "slave", "peer": "m:2222", "epoch": 1, "peer_key": KEY + " comment"}
    assert not _needs_pairing(current, "slave", "m:2222", KEY + " other-comment", 1)
    assert _needs_pairing(current, "slave", "m:2222", KEY, 2)
    assert _needs_pairing(current, "master", "m:2222", KEY, 1)
    assert _needs_pairing(None, "slave", "m:2222", KEY, 1)
