"""The benchmark's arithmetic, its outputs, and its probe run here on real files (no Docker).

The probe runs inside the bench's containers; here it runs against two local folders with a
local rsync standing in for the contender, so what it measures is checked to be measured.
"""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bench import plots, probe, report, stats
from bench.__main__ import parse
from bench.contenders import Pass, logged_passes, lsyncd_config
from bench.metric import QUICK, Metric


def test_percentile_interpolates_and_nearest_rank_picks_a_value() -> None:
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert stats.percentile([5.0], 99) == 5.0
    assert stats.nearest_rank([float(n) for n in range(1, 101)], 99) == 99.0
    assert stats.nearest_rank([1.0, math.inf], 99) == math.inf
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 50)


def test_summary_is_the_median_with_its_spread() -> None:
    summary = stats.Summary.of([3.0, 1.0, 2.0])
    assert (summary.median, summary.low, summary.high, summary.runs) == (2.0, 1.0, 3.0, 3)
    assert summary.text("s") == "2.00 s (1.00-3.00)"


def test_a_change_never_seen_counts_as_infinitely_late() -> None:
    lags: list[float | None] = [0.5] * 98 + [None, None]
    lag = stats.Lag.of(lags)
    assert (lag.changes, lag.seen) == (100, 98)
    assert lag.p50 == 0.5
    assert lag.p99 == math.inf and lag.max == math.inf


def test_the_table_shows_spread_competitors_and_a_missed_target() -> None:
    metric = Metric(
        "pass with nothing changed",
        "100 files",
        2.0,
        "s",
        stats.Summary.of([1.9, 2.0, 2.4]).to_dict(),
        {"bare rsync": 1.0, "ratio": 2.0},
        "at most 1.1x bare rsync",
        False,
    )
    lag = Metric("lag", "x", math.inf, "s", {"p50": 0.4}, {}, "", None)
    rto = Metric("rto", "x", 9.0, "s", {}, {"orchestration share": 7.621, "ratio": 0.8964})
    metric.path = "snapshots: btrfs in loop files on tmpfs (/dev/shm)"
    lines = report.table([metric, lag, rto])
    assert "2.00 s (1.90-2.40, 3 runs)" in lines[2] and "**no**" in lines[2]
    assert "| snapshots: btrfs in loop files on tmpfs (/dev/shm) |" in lines[2]
    assert "| lag | - |" in lines[3]
    assert "orchestration share: 7.62;" in lines[4] and "ratio: 0.896 " in lines[4]
    assert "p99 never" in lines[3]
    assert metric.to_dict()["competitors"] == {"bare rsync": 1.0, "ratio": 2.0}
    assert lag.to_dict()["value"] is None  # JSON has no infinity


def test_results_are_written_whole(tmp_path: Path) -> None:
    metric = Metric("m", "s", 1.0, "s")
    doc = report.document([metric], QUICK, {"configs": {"ours": "defaults"}}, 120.0, {"cores": 2})
    written = report.write(doc, [metric], tmp_path)
    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["metrics"][0]["name"] == "m"
    assert data["sizes"]["trees"] == [{"files": 4000, "bytes": 64 << 20, "small_max": 16 << 10}]
    assert data["contenders"] == {"ours": "defaults"} and "in memory" in data["storage"]
    assert {p.name for p in written} == {"latest.json", "latest.md"}
    assert not list(tmp_path.glob("*.tmp"))
    md = (tmp_path / "latest.md").read_text().splitlines()
    assert md[0].startswith("Measured on 2 cores") and "the run took 2 min" in md[0]
    assert md[2].startswith("| Metric | Path |")


def test_the_table_is_rendered_again_from_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.__main__ import main

    lag = Metric("lag", "x", math.inf, "s", {"p50": 0.4}, {"lsyncd p99": 1.2}, "t", False)
    doc = report.document([lag], QUICK, {}, 1.0, {})
    (tmp_path / "latest.json").write_text(json.dumps(doc))
    assert main(["--table", str(tmp_path / "latest.json")]) == 0
    assert capsys.readouterr().out.splitlines() == report.table([lag])
    assert main(["--table", str(tmp_path / "missing.json")]) == 2
    assert "cannot read results" in capsys.readouterr().err


def test_the_plots_are_pngs(tmp_path: Path) -> None:
    records = [[0, "create", 0.1, 0.5], [1, "modify", 0.2, None]]
    lags = {"btrfs 100,000": {"ours": records}, "tmpfs 100,000": {"ours": records}, "x": {}}
    path = plots.lag(lags, tmp_path / "lag.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = [
        {"fs": "btrfs", "path": "snapshots", "files": n, "full": t, "change": 0.1, "bare": t}
        for n, t in ((100_000, 2.0), (1_000_000, 20.0))
    ]
    path = plots.passes(points, tmp_path / "passes.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(["--only", "lag,speed"])
    assert exit_info.value.code == 2
    assert "unknown metric(s) speed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--rate", "0"])
    assert "--rate must be above zero" in capsys.readouterr().err


def test_lsyncd_runs_its_rsyncssh_mode_on_our_transport() -> None:
    config = lsyncd_config(1)
    assert "default.rsyncssh" in config and "delay = 1," in config
    assert 'StrictHostKeyChecking = "yes"' in config and 'ControlPersist = "60"' in config
    assert "port = 2222" in config and "archive = true" in config


def test_the_master_log_gives_each_pass_and_its_outcome() -> None:
    log = (
        "2026-11-25T04:00:00Z gitlab-sync: pass 20261125T040000-ab (change) ok in 2.50 s: 9 files\n"
        "2026-11-25T04:00:03Z gitlab-sync: pass 20261125T040003-cd (timer) failed in 0.10 s: x\n"
        "2026-11-25T04:00:04Z gitlab-sync: pass 20261125T040004-ef (change) ok in 0.04 s, change, "
        "100 paths listed: 100 files, 100 sent, 4096 bytes, PostgreSQL snapshot\n"
        "2026-11-25T04:00:05Z gitlab-sync: pass 20261125T040005-01 (timer) ok in 3.10 s, full "
        "(the timer): 9 files, 0 sent, 0 bytes [freeze 0.01, rsync 3.00 s]\n"
        "2026-11-25T04:00:06Z gitlab-sync: pass 20261125T040006-02: no list; sending it all\n"
    )
    assert logged_passes(log) == [
        Pass("20261125T040000-ab", "change", "ok", 2.5, "", "9 files"),
        Pass("20261125T040003-cd", "timer", "failed", 0.1, "", "x"),
        Pass(
            "20261125T040004-ef",
            "change",
            "ok",
            0.04,
            "change",
            "100 paths listed: 100 files, 100 sent, 4096 bytes, PostgreSQL snapshot",
        ),
        Pass(
            "20261125T040005-01",
            "timer",
            "ok",
            3.1,
            "full",
            "(the timer): 9 files, 0 sent, 0 bytes [freeze 0.01, rsync 3.00 s]",
        ),
    ]


def test_the_tree_looks_like_gitlab_data(tmp_path: Path) -> None:
    made = probe.make_tree(tmp_path, 3000, 8 << 20, seed=1)
    assert made["files"] == 3000
    sizes = [p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()]
    assert len(sizes) == 3000
    assert sum(sizes) == made["bytes"]
    assert list(tmp_path.glob(f"{probe.REPOS}/*/*/*.git/refs/heads/main"))
    assert list(tmp_path.glob(f"{probe.UPLOADS}/*/*/*/file*.bin"))
    packs = list(tmp_path.glob(f"{probe.REPOS}/*/*/*.git/objects/pack/*.pack"))
    assert packs and min(p.stat().st_size for p in packs) > 64 << 10


def _rsync(source: Path, dest: Path) -> None:
    subprocess.run(["rsync", "-a", "--delete", f"{source}/", f"{dest}/"], check=True)


def test_churn_measures_the_delay_until_the_copy_has_each_change(tmp_path: Path) -> None:
    source, copy = tmp_path / "source", tmp_path / "copy"
    probe.make_tree(source, 400, 1 << 20, seed=2)
    _rsync(source, copy)
    stop = threading.Event()

    def contender() -> None:  # an rsync loop with a 0.3 s pause
        while not stop.is_set():
            _rsync(source, copy)
            time.sleep(0.3)

    loop = threading.Thread(target=contender)
    loop.start()
    try:
        result = probe.Churn(source, copy, rate=40, seed=3).run(seconds=1.5, drain=10)
    finally:
        stop.set()
        loop.join()
    records = result["records"]
    assert isinstance(records, list)
    assert result["changes"] == 60 == len(records) and result["never_seen"] == 0
    assert {str(r[1]) for r in records} <= {"create", "modify", "delete"}
    lags = [float(r[3]) for r in records]
    assert 0 < max(lags) < 5
    assert probe.compare(source, copy)["differences"] == 0


def test_churn_reports_changes_that_never_arrive(tmp_path: Path) -> None:
    source, copy = tmp_path / "source", tmp_path / "copy"
    probe.make_tree(source, 200, 1 << 20, seed=2)
    _rsync(source, copy)
    result = probe.Churn(source, copy, rate=20, seed=3).run(seconds=0.5, drain=0.3)
    assert result["never_seen"] == result["changes"] == 10
    found = probe.compare(source, copy)
    assert int(str(found["differences"])) >= 10  # nothing synced: every change differs


def test_compare_sees_content_mode_and_time(tmp_path: Path) -> None:
    source, copy = tmp_path / "source", tmp_path / "copy"
    probe.make_tree(source, 100, 1 << 20, seed=4)
    _rsync(source, copy)
    assert probe.compare(source, copy)["differences"] == 0
    victim = next(p for p in copy.rglob("*") if p.is_file() and p.stat().st_size > 10)
    stat = victim.stat()
    victim.write_bytes(b"X" + victim.read_bytes()[1:])
    import os

    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and time
    found = probe.compare(source, copy)
    assert found["differences"] == 1 and found["first"] == [str(victim.relative_to(copy))]


def test_touch_rewrites_small_files(tmp_path: Path) -> None:
    probe.make_tree(tmp_path / "t", 300, 1 << 20, seed=5)
    before = probe.entries(tmp_path / "t")
    assert probe.touch(tmp_path / "t", 25, seed=6) == {"changed": 25}
    after = probe.entries(tmp_path / "t")
    assert sum(1 for k in before if before[k] != after.get(k)) >= 25


def test_the_memory_sampler_reports_a_peak(tmp_path: Path) -> None:
    out, stop = tmp_path / "rss.json", tmp_path / "stop"
    sampler = threading.Thread(target=probe.rss, args=(out, stop))
    sampler.start()
    time.sleep(0.3)
    stop.touch()
    sampler.join(5)
    data = json.loads(out.read_text())
    assert data["peak_kib"] > 0 and data["by_process_kib"]


def test_ballast_is_sparse_and_grows_in_place(tmp_path: Path) -> None:
    made = probe.ballast(tmp_path, (2 << 30) + (1 << 20))
    assert made["files"] == 3 and made["bytes"] == (2 << 30) + (1 << 20)
    assert int(str(made["allocated"])) < 16 << 20  # holes: a few blocks, not GiB
    files = sorted(tmp_path.glob(f"{probe.BALLAST}/*/*/data"))
    assert sorted(p.stat().st_size for p in files) == [1 << 20, 1 << 30, 1 << 30]
    first = next(p for p in files if p.stat().st_size == 1 << 30)
    mtime = first.stat().st_mtime_ns
    again = probe.ballast(tmp_path, 3 << 30)
    assert again["files"] == 3 and again["bytes"] == 3 << 30
    assert first.stat().st_mtime_ns == mtime  # kept: a pass need not send it again
    assert first.read_bytes()[:8] != b"\0" * 8


def test_what_was_measured_is_written_when_a_later_step_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.__main__ import main
    from bench.run import Bench

    def measure_then_fail(self: Bench) -> list[Metric]:
        self.results.append(Metric("full pass, nothing changed", "x", 1.5, "s"))
        raise RuntimeError("drill 1 failed")

    monkeypatch.setattr(Bench, "run", measure_then_fail)
    with pytest.raises(RuntimeError, match="drill 1 failed"):
        main(["--quick", "--only", "full,rto", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["complete"] is False
    assert [m["name"] for m in doc["metrics"]] == ["full pass, nothing changed"]
