"""inv status's judgement, from what was read (no hosts needed)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from gitlab_sync.status import ErrorNote
from ops import settings as settings_mod
from ops.dr.pair import needs_pairing
from ops.dr.status import StatusReport, checks, render
from ops.errors import SettingError
from tests.unit.dr.layout_cases import SNAPSHOTS, WRONG
from tests.unit.pairs import NOW, master_view, sidecar, slave_view, unreachable

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKf3m4yD5c7Vg2Qx0j9cT1uYtQx7kHkqz8m0Jt3JHq2b"


def _settings() -> settings_mod.Settings:
    return settings_mod.load({"USE_AWS": "false"}, env_file=Path("/nonexistent"))


def _by_name(found: tuple[Any, ...]) -> dict[str, Any]:
    return {c.name: c for c in found}


def test_a_healthy_pair_passes_every_critical_check() -> None:
    found = checks(_settings(), None, master_view(), slave_view(), 1, NOW)
    assert all(c.ok for c in found if c.critical), [c for c in found if not c.ok]
    assert [c.name for c in found] == [
        "master host",
        "slave host",
        "master serving",
        "master sending",
        "slave receiving",
        "slave gitlab not started",
        "master sync method",
        "slave sync method",
        "last complete pass",
        "epoch",
        "newest verified",
    ]


def test_an_unreachable_host_is_a_failed_check_not_a_crash() -> None:
    slave = unreachable("slave")
    found = _by_name(checks(_settings(), None, master_view(), slave, 1, NOW))
    assert not found["slave host"].ok and "connection refused" in found["slave host"].detail
    assert not found["slave receiving"].ok


def test_a_stale_snapshot_fails_the_freshness_check() -> None:
    stale = sidecar("slave", NOW - dt.timedelta(hours=2))
    found = _by_name(checks(_settings(), None, master_view(), slave_view(sync=stale), 1, NOW))
    assert not found["last complete pass"].ok
    assert "7200 s old" in found["last complete pass"].detail


def test_a_sidecar_at_another_epoch_fails() -> None:
    slave = slave_view(sync=sidecar("slave", epoch=2))
    assert not _by_name(checks(_settings(), None, master_view(), slave, 1, NOW))["epoch"].ok


def test_the_sidecars_last_errors_and_watch_notes_are_warnings() -> None:
    noisy = sidecar(
        "master",
        last_error=ErrorNote("2026-11-25T11:59:00.000000Z", "rsync exited 23"),
        watch_note="inotify: 1 event queue overflow",
    )
    found = _by_name(checks(_settings(), None, master_view(sync=noisy), slave_view(), 1, NOW))
    assert found["master last error"].detail == "2026-11-25T11:59:00.000000Z: rsync exited 23"
    assert found["master watch"].ok and not found["master watch"].critical


def test_the_text_and_the_json_show_the_typed_sidecar_status() -> None:
    report = StatusReport(
        None,
        (master_view(), slave_view()),
        checks(_settings(), None, master_view(), slave_view(), 1, NOW),
    )
    text = "\n".join(render(report))
    assert "  sync: master running=True snapshots=3 method=- last=S in-progress=-" in text
    assert "  ok   last complete pass         S, 120 s old" in text
    data = report.to_dict()
    assert data["ok"] is True
    assert data["hosts"][1]["sync"]["last_complete"]["snapshot"] == "S"
    assert data["hosts"][1]["services"][0]["service"] == "gitlab"
    assert list(data["checks"][0]) == ["name", "ok", "critical", "detail", "hint"]


def test_each_hosts_sync_method_is_a_check_and_a_wrong_btrfs_only_warns() -> None:
    master = master_view(sync=sidecar("master", layout=SNAPSHOTS.to_json()))
    slave = slave_view(sync=sidecar("slave", layout=WRONG.to_json()))
    report = StatusReport(None, (master, slave), checks(_settings(), None, master, slave, 1, NOW))
    found = _by_name(report.checks)
    assert found["master sync method"].ok
    assert found["master sync method"].detail == f"snapshots: {SNAPSHOTS.why}"
    assert not found["slave sync method"].ok and not found["slave sync method"].critical
    assert report.ok  # the slave still receives, by the fallback: a warning
    text = "\n".join(render(report))
    assert "  warn slave sync method          fallback: btrfs is set up wrongly: " in text
    assert "method=snapshots" in text and "method=fallback" in text
    data = report.to_dict()
    by_name = {c["name"]: c for c in data["checks"]}
    assert by_name["slave sync method"]["detail"] == f"fallback: {WRONG.why}"
    assert "user_subvol_rm_allowed" in by_name["slave sync method"]["hint"]
    assert data["hosts"][1]["sync"]["layout"]["problems"] == WRONG.problems


def test_a_failed_critical_check_fails_the_report_and_a_warning_does_not() -> None:
    running = slave_view(
        services=tuple(dataclasses.replace(s, state="running") for s in slave_view().services)
    )
    found = checks(_settings(), None, master_view(), running, 1, NOW)
    assert StatusReport(None, (), found).ok  # the slave's GitLab running is a warning
    broken = checks(_settings(), None, master_view(), unreachable("slave"), 1, NOW)
    assert StatusReport(None, (), broken).failed == ["slave host", "slave receiving"]


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
    assert not needs_pairing(current, "slave", "m:2222", KEY + " other-comment", 1)
    assert needs_pairing(current, "slave", "m:2222", KEY, 2)
    assert needs_pairing(current, "master", "m:2222", KEY, 1)
    assert needs_pairing(None, "slave", "m:2222", KEY, 1)
