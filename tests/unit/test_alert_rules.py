"""The alert rules shipped in compose/prometheus: valid, and firing on the series they should.

promtool comes with Debian's ``prometheus`` package, which ``make host-deps`` installs (so
``make test`` has it): it is required here, not skipped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

RULES = Path(__file__).resolve().parents[2] / "compose" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_alert_rules_are_valid_prometheus_rules() -> None:
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_on_its_series_and_stays_quiet_on_the_others() -> None:
    done = _promtool("test", "rules", "tests.yml")
    assert done.returncode == 0, done.stdout + done.stderr
