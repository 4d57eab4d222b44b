"""make drill's rehearsal, as the suite runs it (a shorter load): every verification passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.tasks_cli import inv

pytestmark = pytest.mark.integration


def test_the_drill_passes_and_reports_rto_rpo_steps_and_verifications(tmp_path: Path) -> None:
    folder = tmp_path / "sandbox"
    done = inv(
        "drill",
        "--json",
        "--load-seconds",
        "6",
        "--seed",
        "7",
        "--directory",
        str(folder),
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)  # progress went to stderr: stdout is the JSON alone
    assert report["ok"] is True
    assert 0 < report["rto_seconds"] < 120
    assert report["rpo_seconds"] is not None and report["rpo_seconds"] >= 0
    names = [s["name"] for s in report["steps"]]
    assert names[0] == "sandbox up" and "promote-slave" in names
    results = {v["name"]: v["result"] for v in report["verifications"]}
    for name in (
        "rows",
        "uploads",
        "repositories",
        "old master's sending refused",
        "zero bytes reach the new master",
        "inv status shows it fenced",
        "the new pair syncs",
    ):
        assert results[name] == "pass", report["verifications"]
    assert report["written"]["commits"] > 3
    # On btrfs (the sandbox's default) GitLab's home is a writable snapshot, not a copy.
    assert "by a writable btrfs snapshot in" in report["promotion"]["restore"]
    assert not folder.exists() or not any(folder.iterdir()), "the sandbox was not removed"
