"""``make bench`` at a smoke size, as a command: every contender really runs and syncs.

The figures themselves are not judged here (they are this machine's, and CI's is busy): what
is checked is that each metric was measured from real runs, that every contender's final copy
equals the master's tree, and that the outputs are written. The RTO metric is left to the
drill's own test (tests/integration/rehearsal/test_drill.py), which runs the same code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]  # the repository: python -m bench runs there


def test_a_quick_bench_measures_every_contender_on_the_same_tree(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "first-sync,no-change,changed,lag,snapshots,memory",
            "--files",
            "1500",
            "--seconds",
            "4",
            "--runs",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    names = {m["name"]: m for m in doc["metrics"]}
    assert set(names) == {
        "first full sync throughput",
        "sidecar peak memory, first full pass",
        "pass with nothing changed",
        "pass after 20 changed files",
        "snapshot cost",
        "replication lag (p99)",
    }
    for metric in doc["metrics"]:
        assert metric["value"] is not None and metric["value"] > 0, metric
    lag = names["replication lag (p99)"]["detail"]
    assert set(lag) == {"ours", "lsyncd delay=1", "lsyncd delay=15", "rsync loop (seed)"}
    for name, figures in lag.items():
        assert figures["changes"] == 80 and figures["never_seen"] == 0, name
    assert lag["lsyncd delay=15"]["p50"] > lag["lsyncd delay=1"]["p99"]  # its delay shows
    assert {k: v["differences"] for k, v in doc["final_copy_checks"].items()} == dict.fromkeys(
        lag, 0
    )
    assert "default.rsyncssh" in doc["contenders"]["lsyncd delay=1"]
    snapshots = names["snapshot cost"]["detail"]
    assert snapshots["passes_failed"] == 0 and snapshots["snapshots_kept"] >= 2
    memory = names["sidecar peak memory, first full pass"]["detail"]
    assert memory["master_kib"] > 1024 and memory["slave_kib"] > 1024
    assert (tmp_path / "lag.png").read_bytes()[:4] == b"\x89PNG"
    assert "| replication lag (p99) |" in done.stdout
