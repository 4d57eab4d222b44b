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

from bench import probe, report, stats
from bench.__main__ import parse, sizes_of
from bench.contenders import logged_passes, lsyncd_config
from bench.metric import QUICK, Metric, Sizes


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
    lines = report.table([metric, lag, rto])
    assert "2.00 s (1.90-2.40, 3 runs)" in lines[2] and "**no**" in lines[2]
    assert "orchestration share: 7.62;" in lines[4] and "ratio: 0.896 " in lines[4]
    assert "p99 never" in lines[3]
    assert metric.to_dict()["competitors"] == {"bare rsync": 1.0, "ratio": 2.0}
    assert lag.to_dict()["value"] is None  # JSON has no infinity


def test_results_are_written_whole(tmp_path: Path) -> None:
    metric = Metric("m", "s", 1.0, "s")
    doc = report.document([metric], QUICK, {"ours": "defaults"}, {}, {}, 12.0, {"cores": 2})
    written = report.write(doc, [metric], tmp_path)
    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["metrics"][0]["name"] == "m" and data["sizes"]["files"] == QUICK.files
    assert {p.name for p in written} == {"latest.json", "latest.md"}
    assert not list(tmp_path.glob("*.tmp"))


def test_the_table_is_rendered_again_from_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.__main__ import main

    lag = Metric("lag", "x", math.inf, "s", {"p50": 0.4}, {"lsyncd p99": 1.2}, "t", False)
    doc = report.document([lag], QUICK, {}, {}, {}, 1.0, {})
    (tmp_path / "latest.json").write_text(json.dumps(doc))
    assert main(["--table", str(tmp_path / "latest.json")]) == 0
    assert capsys.readouterr().out.splitlines() == report.table([lag])
    assert main(["--table", str(tmp_path / "missing.json")]) == 2
    assert "cannot read results" in capsys.readouterr().err


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    lags = {"ours": [[0, "create", 0.1, 0.5], [1, "modify", 0.2, None]]}
    path = report.plot(lags, tmp_path / "lag.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(["--only", "lag,speed"])
    assert exit_info.value.code == 2
    assert "unknown metric(s) speed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--rate", "0"])
    assert "--rate must be above zero" in capsys.readouterr().err


def test_sizes_default_to_the_issue_and_quick_is_small() -> None:
    default = sizes_of(parse([]))
    assert (default.files, default.bytes, default.rate, default.seconds) == (
        100_000,
        5 << 30,
        50.0,
        120.0,
    )
    assert default.memory_files == (100_000, 1_000_000)
    quick = sizes_of(parse(["--quick", "--files", "500", "--memory-files", "500,900"]))
    assert quick.files == 500 and quick.memory_files == (500, 900) and quick.rate == QUICK.rate
    assert isinstance(Sizes().to_dict()["memory_files"], list)


def test_lsyncd_runs_its_rsyncssh_mode_on_our_transport() -> None:
    config = lsyncd_config(1)
    assert "default.rsyncssh" in config and "delay = 1," in config
    assert 'StrictHostKeyChecking = "yes"' in config and 'ControlPersist = "60"' in config
    assert "port = 2222" in config and "archive = true" in config


def test_the_master_log_gives_each_pass_and_its_outcome() -> None:
    log = (
        "2026-11-25T04:00:00Z gitlab-sync: pass 20261125T040000-ab (change) ok in 2.50 s: 9 files\n"
        "2026-11-25T04:00:03Z gitlab-sync: pass 20261125T040003-cd (timer) failed in 0.10 s: x\n"
    )
    assert logged_passes(log) == [
        ("20261125T040000-ab", "ok", 2.5),
        ("20261125T040003-cd", "failed", 0.1),
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
