"""A real pair scraped by a real Prometheus: the lag it reads through its API is the slave's."""

from __future__ import annotations

import time
from pathlib import Path

from gitlab_sync.status import SidecarStatus
from ops.rehearsal import prometheus
from ops.rehearsal.processes import stop
from tests.integration.sidecar.sync_pair import SidecarNode, sync_pair, wait_for


def _address(node: SidecarNode) -> str:
    networks = node.container.attrs["NetworkSettings"]["Networks"]
    ip = next(n["IPAddress"] for n in networks.values() if n.get("IPAddress"))
    return f"{ip}:9187"


def test_prometheus_scrapes_both_sidecars_and_reads_the_slaves_lag(tmp_path: Path) -> None:
    with sync_pair() as pair:
        pair.writer.run(["sh", "-c", "mkdir -p /source/data && echo one > /source/data/a"])
        pair.wait_in_sync()
        targets = {"master": _address(pair.master), "slave": _address(pair.slave)}
        prom = prometheus.start(tmp_path / "prometheus", targets, lag_seconds=900)
        try:
            roles = wait_for(
                lambda: (
                    prom.query("gitlab_dr_role == 1 and on (instance) gitlab_dr_up == 1")
                    if len(prom.query("gitlab_dr_role == 1")) == 2
                    else None
                ),
                30,
                "Prometheus to scrape both sidecars",
                every=0.5,
            )
            assert set(roles) == {"master", "slave"}
            assert prom.query('gitlab_dr_role{role="slave"} == 1').keys() == {"slave"}
            lag = wait_for(
                lambda: prom.query("gitlab_dr_replication_lag_seconds"), 30, "a lag", every=0.5
            )
            assert lag.keys() == {"slave"}
            status = SidecarStatus.from_json(pair.slave.status())
            started = status.newest_started
            assert started is not None
            newest = prom.query("gitlab_dr_snapshot_newest_timestamp_seconds")["slave"]
            # The same instant as gitlab-sync status; the lag is now minus it at the last scrape.
            assert abs(newest - started.timestamp()) < 0.001
            assert 0 <= lag["slave"] <= time.time() - started.timestamp() + 0.5
            passes = prom.query('sum by (instance) (gitlab_dr_passes_total{outcome="ok"})')
            assert passes["master"] >= 1
            assert prom.query("gitlab_dr_epoch") == {"master": 1.0, "slave": 1.0}
            assert prom.firing(prometheus.LAG_ALERT) == []
        finally:
            stop(prom.pid, prometheus.MARKER)
