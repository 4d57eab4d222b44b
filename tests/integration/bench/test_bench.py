"""``make bench`` at a smoke size, as a command: every contender really runs and syncs.

The figures themselves are not judged here (they are this machine's, and CI's is busy): what
is checked is that each metric was measured from real runs on the snapshot path (btrfs in loop
files), that every contender's final copy equals the master's tree, that the restore and
pgbench ran for real, and that the outputs are written. The fallback's path (plain tmpfs
folders) runs the passes at two tree sizes; its other metrics are the same code on another
storage, kept out of the suite's time (a minute and a half). The RTO metric is left to the
drill's own test (tests/integration/rehearsal/test_drill.py), which runs the same code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]  # the repository: python -m bench runs there
SYNCS = "first-sync,full,changed,lag,snapshots,memory,restore,pgbench"


def bench(out: Path, *args: str, timeout: float) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc: dict[str, Any] = json.loads((out / "latest.json").read_text())
    return doc, done.stdout


def sidecar_has_snapshots() -> bool:
    """Whether the sidecar image under test has the snapshot path (``gitlab-sync layout``)."""
    from tests.integration.sidecar.sync_pair import SYNC_IMAGE

    done = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "gitlab-sync", SYNC_IMAGE, "layout", "--help"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_a_quick_bench_measures_every_contender_on_the_snapshot_path(tmp_path: Path) -> None:
    doc, stdout = bench(
        tmp_path,
        *("--only", SYNCS, "--files", "1000", "--seconds", "4", "--runs", "1", "--fs", "btrfs"),
        *("--restore-gib", "0.0625,0.25", "--pg-seconds", "5"),
        timeout=1500,
    )
    by_path: dict[str, dict[str, dict[str, Any]]] = {}
    for metric in doc["metrics"]:
        by_path.setdefault(metric["path"], {})[metric["name"]] = metric
        assert metric["value"] is not None and metric["value"] > 0, metric
    assert len(by_path) == 1
    layouts = doc["layouts"]
    expected = "snapshots" if sidecar_has_snapshots() else "fallback"
    assert layouts["btrfs 1,000"]["method"] == expected, layouts["btrfs 1,000"]
    for path, names in by_path.items():
        assert set(names) == {
            "first full sync throughput",
            "sidecar peak memory, first full pass",
            "full pass, nothing changed",
            "change-triggered pass, 20 files changed",
            "snapshot cost",
            "replication lag (p99)",
            "PostgreSQL TPS with the sync on",
            "PostgreSQL WAL with the sync on",
            "restore for promotion, 0.0625 GiB",
            "restore for promotion, 0.25 GiB",
        }, path
        lag = names["replication lag (p99)"]["detail"]
        assert set(lag) == {"ours", "lsyncd delay=1", "lsyncd delay=15", "rsync loop (seed)"}
        for name, figures in lag.items():
            assert figures["changes"] == 80 and figures["never_seen"] == 0, (path, name)
        assert lag["lsyncd delay=15"]["p50"] > lag["lsyncd delay=1"]["p99"]  # its delay shows
        memory = names["sidecar peak memory, first full pass"]["detail"]
        assert memory["master_kib"] > 1024 and memory["slave_kib"] > 1024
        big = names["restore for promotion, 0.25 GiB"]["detail"]
        assert big["sparse_bytes"] > 200 << 20 and big["answer"]["snapshot"]
        pg = names["PostgreSQL TPS with the sync on"]
        assert pg["competitors"]["sync off"] > 0 and pg["detail"]["passes_while_on"] >= 1
    assert len(doc["final_copy_checks"]) == 4
    assert {k: v["differences"] for k, v in doc["final_copy_checks"].items()} == dict.fromkeys(
        doc["final_copy_checks"], 0
    )
    assert "default.rsyncssh" in doc["contenders"]["lsyncd delay=1"]
    assert (tmp_path / "lag.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "passes.png").read_bytes()[:4] == b"\x89PNG"
    assert "| replication lag (p99) |" in stdout


def test_the_change_pass_is_judged_against_the_tree_size(tmp_path: Path) -> None:
    doc, _ = bench(
        tmp_path,
        *("--only", "full,changed", "--sizes", "1000,3000", "--fs", "tmpfs", "--runs", "1"),
        timeout=600,
    )
    growth = next(m for m in doc["metrics"] if m["name"].endswith("against tree size"))
    assert growth["size"] == "1,000 to 3,000 files" and growth["unit"] == "exponent"
    assert set(growth["competitors"]) == {
        "1,000 files (s)",
        "3,000 files (s)",
        "full pass exponent",
    }
    assert [p["files"] for p in doc["pass_times"]] == [1000, 3000]
    assert {layout["method"] for layout in doc["layouts"].values()} == {"fallback"}
