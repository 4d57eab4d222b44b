"""The benchmark's sizes, its arithmetic across sizes and runs, and its plain hosts (no Docker).

What a run is measured at (``--sizes``, ``--fs``, the tree's shape at each count), how growth
with the tree is judged, pgbench's figures, and how a host's folders are emptied between runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import pgbench, stats
from bench.__main__ import parse, sizes_of
from bench.metric import QUICK, Sizes, Tree, default_bytes, parse_count, parse_trees


def test_sizes_default_to_the_issue_and_quick_is_small() -> None:
    default = sizes_of(parse([]))
    assert default.trees == (Tree(100_000, 5 << 30),)
    assert (default.rate, default.seconds, default.changed) == (50.0, 120.0, 100)
    assert default.filesystems == ("btrfs", "tmpfs") and default.storage == "tmpfs"
    assert default.restore_gib == (5.0, 50.0)
    quick = sizes_of(parse(["--quick", "--files", "500"]))
    assert quick.trees == (Tree(500, 5 * (1 << 30) * 500 // 100_000),) and quick.rate == QUICK.rate
    assert Sizes().to_dict()["trees"] == [{"files": 100_000, "bytes": 5 << 30, "small_max": 16384}]


def test_a_million_files_is_one_option_away() -> None:
    both = sizes_of(parse(["--sizes", "1M,100k", "--fs", "btrfs,ext4", "--storage", "disk"]))
    assert both.trees == (Tree(100_000, 5 << 30), Tree(1_000_000, 2 << 30))
    assert both.filesystems == ("btrfs", "ext4") and both.storage == "disk"
    assert sizes_of(parse(["--files", "1000000"])).trees == (Tree(1_000_000, 2 << 30),)
    assert sizes_of(parse(["--sizes", "100k:1.5"])).trees == (Tree(100_000, 3 << 29),)
    assert sizes_of(parse(["--restore-gib", "1,10"])).restore_gib == (1.0, 10.0)


def test_file_counts_and_tree_shapes() -> None:
    assert [parse_count(t) for t in ("4000", "100k", "1M", "1.5m")] == [
        4000,
        100_000,
        1_000_000,
        1_500_000,
    ]
    for bad in ("", "1G", "-3", "0"):
        with pytest.raises(ValueError, match=r"file count|needs files"):
            parse_count(bad)
    with pytest.raises(ValueError, match="GiB"):
        parse_trees("100k:lots")
    # The largest loose object shrinks with the count, so 1M files stay a few GiB.
    assert Tree(4000, 1).small_max == Tree(100_000, 1).small_max == 16 << 10
    assert Tree(200_000, 1).small_max == 8 << 10
    assert Tree(1_000_000, 1).small_max == 1 << 10
    assert Tree(100_000_000, 1).small_max == 256
    assert default_bytes(100_000) == 5 << 30 and default_bytes(1_000_000) == 2 << 30
    assert default_bytes(10) == 1 << 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fs", "zfs"], "unknown filesystem(s) zfs"),
        (["--sizes", "100k", "--files", "5"], "--sizes or --files/--gib"),
        (["--sizes", "lots"], "not a file count"),
        (["--restore-gib", "5,0"], "above zero"),
        (["--pg-seconds", "0"], "--pg-seconds must be above zero"),
    ],
)
def test_bad_sizes_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(argv)
    assert message in capsys.readouterr().err


def test_growth_is_the_exponent_of_a_power_law() -> None:
    assert stats.exponent(100_000, 0.05, 1_000_000, 0.05) == 0.0
    assert stats.exponent(100_000, 2.0, 1_000_000, 20.0) == pytest.approx(1.0)
    assert stats.exponent(1, 1.0, 100, 10.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no growth"):
        stats.exponent(10, 1.0, 10, 2.0)


def test_the_change_pass_growth_is_judged_across_sizes() -> None:
    from bench.run import Bench

    bench = Bench(Sizes(filesystems=("btrfs", "tmpfs")), lambda line: None)
    bench.points = [
        {"fs": "btrfs", "path": "snapshots", "files": 100_000, "full": 2.0, "change": 0.04},
        {"fs": "btrfs", "path": "snapshots", "files": 1_000_000, "full": 19.0, "change": 0.05},
        {"fs": "tmpfs", "path": "fallback", "files": 100_000, "full": 5.0, "change": 5.0},
        {"fs": "tmpfs", "path": "fallback", "files": 1_000_000, "full": 50.0, "change": 50.0},
    ]
    bench.growth()
    flat, steep = bench.results
    assert flat.path == "snapshots" and flat.met is True
    assert flat.value == pytest.approx(math.log10(0.05 / 0.04))
    assert flat.competitors["1,000,000 files (s)"] == 0.05
    assert steep.path == "fallback" and steep.met is False and steep.value == pytest.approx(1.0)
    assert steep.competitors["full pass exponent"] == pytest.approx(1.0)


def test_pgbench_output_lsns_and_costs() -> None:
    out = (
        "number of transactions actually processed: 48720\n"
        "latency average = 4.925 ms\n"
        "tps = 812.054321 (without initial connection time)\n"
    )
    assert pgbench.tps_of(out) == pytest.approx(812.054321)
    with pytest.raises(ValueError, match="no TPS"):
        pgbench.tps_of("connection to server failed")
    assert pgbench.lsn_bytes("0/16B3740") == 0x16B3740
    assert pgbench.lsn_bytes("16/B374D848\n") == (0x16 << 32) + 0xB374D848
    with pytest.raises(ValueError, match="not an LSN"):
        pgbench.lsn_bytes("16-B374D848")
    assert pgbench.per_minute(300.0, 30.0) == 600.0
    # TPS: less is a cost; WAL: more is a cost; the other way round is below zero.
    assert pgbench.cost(1000.0, 930.0, more_is_better=True) == pytest.approx(0.07)
    assert pgbench.cost(100.0, 150.0, more_is_better=False) == pytest.approx(0.5)
    assert pgbench.cost(1000.0, 1010.0, more_is_better=True) < 0


def test_plain_hosts_are_emptied_and_given_a_fresh_home(tmp_path: Path) -> None:
    from bench.storage import Host, check

    host = Host("tmpfs", tmp_path)
    (host.sync / "snapshots/a/b").mkdir(parents=True)
    (host.sync / "current").symlink_to("snapshots/a")
    (host.sync / ".incoming.json").write_text("{}")
    host.empty(host.sync)
    assert host.sync.is_dir() and not any(host.sync.iterdir())
    (host.home / "data").mkdir(parents=True)
    (tmp_path / "gitlab.before-restore-20261202T000000Z/data").mkdir(parents=True)
    host.fresh_home()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gitlab", "gitlab-sync"]
    assert not any(host.home.iterdir())
    assert host.used() > 0
    assert "choose ext4" in check("tmpfs", "disk")
    assert check("tmpfs", "tmpfs") == ""


def test_timed_steps_are_repeated_up_to_a_hundred_thousand_files() -> None:
    assert Sizes(runs=3).runs_at(100_000) == 3
    assert Sizes(runs=3).runs_at(1_000_000) == 1


def test_a_filesystem_that_cannot_be_made_here_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench.__main__ import main

    assert main(["--quick", "--fs", "tmpfs", "--storage", "disk"]) == 2
    assert capsys.readouterr().err == (
        "make bench: cannot use tmpfs here: --fs tmpfs keeps the trees in memory; on the disk, "
        "choose ext4\n"
    )
