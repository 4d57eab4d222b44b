"""``inv status`` shows the slave's replication lag as its sidecar exports it."""

from __future__ import annotations

import datetime as dt

from gitlab_sync import metrics
from gitlab_sync.config import iso
from gitlab_sync.status import PassSummary, SidecarStatus
from ops.dr import checks
from ops.dr.hostview import HostView
from ops.dr.status import StatusReport, render

NOW = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def _slave(age: float) -> HostView:
    last = PassSummary(snapshot="s1", started_at=iso(NOW - dt.timedelta(seconds=age)))
    sync = SidecarStatus(role="slave", epoch=1, running=True, last_complete=last)
    return HostView("slave", "127.0.0.1:22", sync=sync)


def test_status_prints_the_lag_the_slave_exports() -> None:
    view = _slave(42.4)
    lines = render(StatusReport(None, (view,), (), at=NOW))
    assert "  replication lag: 42 s (gitlab_dr_replication_lag_seconds)" in lines
    exported = metrics.replication_lag_seconds(view.sync.last_complete if view.sync else None, NOW)
    assert exported == checks.snapshot_age(view.sync.last_complete if view.sync else None, NOW)


def test_a_master_shows_no_lag_line() -> None:
    master = HostView("master", "h", sync=SidecarStatus(role="master", epoch=1))
    assert not any("replication lag" in line for line in render(StatusReport(None, (master,))))
