"""The sidecar's Prometheus exposition: names, labels, types, escaping, and where it reads."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gitlab_sync import metrics
from gitlab_sync.config import Pairing, Paths, Peer, iso, save_pairing, write_json
from gitlab_sync.sender import pass_lock
from gitlab_sync.snapshots import Area, snapshot_name

NOW = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd0bXYtZmFrZS1rZXktZm9yLXRlc3RzLW9ubHk test"


def _paths(tmp_path: Path) -> Paths:
    paths = Paths(state=tmp_path / "state", source=tmp_path / "source", sync=tmp_path / "sync")
    paths.state.mkdir(parents=True)
    return paths


def _pair(paths: Paths, role: str, epoch: int = 3, running: bool = True) -> None:
    peer = Peer("slave" if role == "master" else "master", 2222)
    save_pairing(paths, Pairing(role, peer, KEY, epoch=epoch, running=running))  # type: ignore[arg-type]  # role is master or slave
    write_json(
        paths.daemon,
        {"heartbeat": iso(NOW - dt.timedelta(seconds=1)), "receiving": role == "slave",
         "sending": role == "master", "watch": "inotify"},
    )  # fmt: skip


def _snapshot(paths: Paths, started: dt.datetime, files: int, size: int) -> str:
    area = Area(paths.sync)
    name = snapshot_name(started)
    (area.snapshots / name).mkdir(parents=True)
    meta = {
        "name": name,
        "id": "p1",
        "started_at": iso(started),
        "files": files,
        "bytes": size,
        "committed_at": iso(started + dt.timedelta(seconds=4)),
        "state": "complete",
    }
    write_json(area.snapshots / f"{name}.json", meta)
    link = area.root / ".current.tmp"
    link.symlink_to(Path("snapshots") / name)
    link.rename(area.current)
    return name


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, from an exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def test_label_values_escape_backslash_double_quote_and_newline() -> None:
    family = metrics.Family("x", "gauge", "a\\b\nc", (metrics.Sample((("v", 'a\\b"c\nd'),), 1),))
    text = metrics.render([family])
    assert text.splitlines() == [
        "# HELP gitlab_dr_x a\\\\b\\nc",
        "# TYPE gitlab_dr_x gauge",
        'gitlab_dr_x{v="a\\\\b\\"c\\nd"} 1',
    ]


def test_values_are_written_as_prometheus_spells_them() -> None:
    assert [metrics.number(v) for v in (3.0, 0.25, float("nan"), float("inf"))] == [
        "3", "0.25", "NaN", "+Inf"
    ]  # fmt: skip


def test_slave_exports_the_newest_snapshot_instant_and_the_lag_at_scrape_time(
    tmp_path: Path,
) -> None:
    paths = _paths(tmp_path)
    _pair(paths, "slave")
    started = NOW - dt.timedelta(seconds=125)
    _snapshot(paths, started - dt.timedelta(hours=1), 10, 100)
    _snapshot(paths, started, 12, 3400)
    metrics.count(paths, "receiver_failures_total")
    found = _samples(metrics.exposition(paths, NOW))
    assert found["gitlab_dr_snapshot_newest_timestamp_seconds"] == started.timestamp()
    assert found["gitlab_dr_replication_lag_seconds"] == 125
    assert found["gitlab_dr_snapshots"] == 2
    assert found["gitlab_dr_snapshot_newest_bytes"] == 3400
    assert found["gitlab_dr_snapshot_newest_files"] == 12
    assert found["gitlab_dr_receiver_failures_total"] == 1
    assert found['gitlab_dr_role{role="slave"}'] == 1
    assert found['gitlab_dr_role{role="master"}'] == 0
    assert found["gitlab_dr_epoch"] == 3
    assert found["gitlab_dr_up"] == 1
    later = _samples(metrics.exposition(paths, NOW + dt.timedelta(seconds=5)))
    assert later["gitlab_dr_replication_lag_seconds"] == 130


def test_slave_exports_when_its_newest_snapshot_verified_ok_was_verified(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    _pair(paths, "slave")
    older = _snapshot(paths, NOW - dt.timedelta(hours=2), 10, 100)
    newer = _snapshot(paths, NOW - dt.timedelta(hours=1), 10, 100)
    assert "gitlab_dr_snapshot_verified_timestamp_seconds" not in _samples(
        metrics.exposition(paths, NOW)
    )  # none verified: absent, which the alert rule reads as "never"
    marked = NOW - dt.timedelta(minutes=30)
    result = {"ok": True, "checks": [], "summary": "all 5 checks passed"}
    Area(paths.sync, clock=lambda: marked).mark_verified(older, result)
    found = _samples(metrics.exposition(paths, NOW))
    assert found["gitlab_dr_snapshot_verified_timestamp_seconds"] == marked.timestamp()
    failed = {"ok": False, "checks": [], "summary": "1 of 5 checks failed: postgresql"}
    Area(paths.sync, clock=lambda: NOW).mark_verified(newer, failed)  # a failure is not proof
    found = _samples(metrics.exposition(paths, NOW))
    assert found["gitlab_dr_snapshot_verified_timestamp_seconds"] == marked.timestamp()


def test_a_slave_without_a_snapshot_exports_no_lag_rather_than_zero(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    _pair(paths, "slave")
    found = _samples(metrics.exposition(paths, NOW))
    assert "gitlab_dr_replication_lag_seconds" not in found
    assert found["gitlab_dr_snapshots"] == 0


def test_master_exports_its_last_pass_and_counts_passes_by_trigger_kind_and_outcome(
    tmp_path: Path,
) -> None:
    paths = _paths(tmp_path)
    _pair(paths, "master")
    last = {"id": "p2", "trigger": "change", "started_at": iso(NOW - dt.timedelta(seconds=9)),
            "ended_at": iso(NOW - dt.timedelta(seconds=7)), "duration_s": 2.5, "files": 40,
            "bytes": 9000, "outcome": "failed"}  # fmt: skip
    write_json(paths.passes, {"last_pass": last, "last_complete": {**last, "outcome": "ok"}})
    metrics.count_pass(paths, "timer", "ok", files_sent=3, bytes_sent=300, kind="full")
    metrics.count_pass(paths, "change", "failed", files_sent=0, bytes_sent=0)
    metrics.count_pass(paths, "change", "failed", files_sent=1, bytes_sent=50)
    metrics.count_pass(paths, "change", "ok", files_sent=1, bytes_sent=50, kind="change")
    found = _samples(metrics.exposition(paths, NOW))
    assert found['gitlab_dr_passes_total{kind="full",outcome="ok",trigger="timer"}'] == 1
    assert found['gitlab_dr_passes_total{outcome="failed",trigger="change"}'] == 2
    assert found['gitlab_dr_passes_total{kind="change",outcome="ok",trigger="change"}'] == 1
    assert found["gitlab_dr_sent_files_total"] == 5
    assert found["gitlab_dr_sent_bytes_total"] == 400
    assert found["gitlab_dr_pass_last_duration_seconds"] == 2.5
    assert found["gitlab_dr_pass_last_start_timestamp_seconds"] == NOW.timestamp() - 9
    assert found['gitlab_dr_pass_last_outcome{outcome="failed"}'] == 1
    assert found['gitlab_dr_pass_last_outcome{outcome="ok"}'] == 0
    assert found["gitlab_dr_inotify_watching"] == 1
    assert found["gitlab_dr_sending"] == 1
    assert "gitlab_dr_replication_lag_seconds" not in found


def test_counters_survive_a_restart_because_they_live_in_the_state_volume(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    metrics.count_pass(paths, "timer", "ok", 1, 10)
    again = Paths(state=paths.state, source=paths.source, sync=paths.sync)
    assert metrics.read_counters(again)["passes_total"] == {
        (("outcome", "ok"), ("trigger", "timer")): 1.0
    }


def test_an_unpaired_sidecar_says_so_and_exports_no_epoch(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    found = _samples(metrics.exposition(paths, NOW))
    assert found['gitlab_dr_role{role="none"}'] == 1
    assert found["gitlab_dr_paired"] == 0
    assert found["gitlab_dr_up"] == 0  # no daemon heartbeat
    assert "gitlab_dr_epoch" not in found


def test_every_metric_has_help_and_type_and_passes_promtool_check_metrics(tmp_path: Path) -> None:
    for role in ("master", "slave"):
        paths = _paths(tmp_path / role)
        _pair(paths, role)
        if role == "slave":
            _snapshot(paths, NOW - dt.timedelta(seconds=5), 1, 1)
        metrics.count_pass(paths, "timer", "ok", 1, 1)
        text = metrics.exposition(paths, NOW)
        names = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
        typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
        assert names == typed and all(n.startswith("gitlab_dr_") for n in names)
        for line in text.splitlines():
            if line.startswith("# TYPE") and line.endswith(" counter"):
                assert line.split()[2].endswith("_total")
        done = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_reading_metrics_takes_no_lock_while_a_pass_holds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _paths(tmp_path)
    _pair(paths, "slave")
    _snapshot(paths, NOW - dt.timedelta(seconds=5), 1, 1)
    area = Area(paths.sync)
    with pass_lock(paths), area.locked():
        area.begin("p2", 3, NOW)  # a pass being received
        taken: list[int] = []
        # Even a probe without waiting (LOCK_NB) would refuse a pass begun at that instant.
        monkeypatch.setattr(fcntl, "flock", lambda _fd, op: taken.append(op))
        assert "gitlab_dr_replication_lag_seconds 5" in metrics.exposition(paths, NOW)
        assert taken == []


def test_the_endpoint_serves_metrics_and_nothing_else(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    server = metrics.serve(paths, lambda _m: None, port=0, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:  # noqa: S310 - http
            assert answer.headers["Content-Type"] == metrics.CONTENT_TYPE
            assert b"# TYPE gitlab_dr_up gauge" in answer.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/", timeout=5)  # noqa: S310 - http://127.0.0.1
        assert refused.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_the_textfile_is_written_aside_and_renamed_into_place(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    out = tmp_path / "textfile"
    out.mkdir()
    written = metrics.write_textfile(paths, out, NOW)
    assert written == out / "gitlab_dr.prom"
    assert os.listdir(out) == ["gitlab_dr.prom"]  # no temporary file left beside it
    assert written.read_text() == metrics.exposition(paths, NOW)
    assert metrics.textfile_dir({"METRICS_TEXTFILE_DIR": ""}) is None
    assert metrics.textfile_dir({"METRICS_TEXTFILE_DIR": str(out)}) == out


def test_every_metric_the_alert_rules_use_is_exported(tmp_path: Path) -> None:
    rules = (Path(__file__).parents[3] / "compose" / "prometheus" / "alerts.yml").read_text()
    used = set(re.findall(r"gitlab_dr_[a-z_]+", rules))
    exported = set()
    for role in ("master", "slave"):
        paths = _paths(tmp_path / role)
        _pair(paths, role)
        exported |= {metrics.PREFIX + f.name for f in metrics.families(paths, NOW)}
    assert used <= exported, used - exported
    assert json.dumps(sorted(used))  # the rules do use metrics
