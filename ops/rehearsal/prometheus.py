"""A real Prometheus for the sandbox and the tests: Debian's ``/usr/bin/prometheus`` on 127.0.0.1.

It scrapes the sidecars' ``/metrics`` (one target per instance, labelled by the instance's
name) with the shipped alert rules (``compose/prometheus/alerts.yml``). The rules' lag
threshold is STALE_AFTER's default, 15 minutes; a sandbox syncs every 20 s, so its copy of
the rules uses :data:`SANDBOX_LAG_ALERT` and the drill sees the alert fire soon after the
master dies. Its HTTP API (``/api/v1/query``, ``/api/v1/alerts``) is how the drill and the
tests read what it saw.
"""

from __future__ import annotations

import json
import string
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitlab_sync.waits import wait_until
from ops.checks import Check
from ops.errors import SandboxError
from ops.rehearsal.processes import PROMETHEUS, alive, base_env, free_port, http_answers, spawn

BINARY = "/usr/bin/prometheus"
MARKER = PROMETHEUS
RULES_DIR = Path(__file__).resolve().parents[2] / "compose" / "prometheus"
LAG_RULE = "gitlab_dr_replication_lag_seconds > 900"
LAG_ALERT = "GitlabDrReplicationLagHigh"
SANDBOX_LAG_ALERT = 45
"""Seconds of lag that fire the sandbox's lag alert: over its SYNC_INTERVAL (20 s) and a slow
pass, so that a live pair never fires it, and the drill waits less than a minute for it once
the master is dead."""
JOB = "gitlab-dr"


def rules_text(lag_seconds: float) -> str:
    """The shipped alert rules, with the lag threshold at ``lag_seconds``."""
    text = (RULES_DIR / "alerts.yml").read_text()
    if LAG_RULE not in text:
        raise SandboxError(f"alerts.yml no longer holds {LAG_RULE!r}: update {__name__}")
    return text.replace(LAG_RULE, f"gitlab_dr_replication_lag_seconds > {lag_seconds:g}")


def config_text(targets: Mapping[str, str], rules: Path, interval: str = "1s") -> str:
    """The scrape configuration (from ``scrape.yml.template``): ``targets`` is name -> host:port."""
    template = string.Template((RULES_DIR / "scrape.yml.template").read_text())
    lines = []
    for name, address in sorted(targets.items()):
        lines += [f"      - targets: [{json.dumps(address)}]",
                  f"        labels: {{instance: {json.dumps(name)}}}"]  # fmt: skip
    return template.substitute(interval=interval, rules=str(rules), targets="\n".join(lines))


@dataclass(frozen=True)
class Prometheus:
    """A running Prometheus: its pid and URL."""

    pid: int
    url: str

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/PATH``'s data, or a SandboxError with Prometheus' own error."""
        query = urllib.parse.urlencode(params)
        address = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(address, timeout=10) as answer:  # noqa: S310 - 127.0.0.1
                body = json.load(answer)
        except (OSError, ValueError) as exc:
            raise SandboxError(f"Prometheus at {self.url}: {path}: {exc}") from exc
        if body.get("status") != "success":
            raise SandboxError(f"Prometheus at {self.url}: {path}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """An instant query: each series' ``instance`` label -> its value."""
        data = self.api("query", query=expr)
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in data["result"]}

    def firing(self, alertname: str) -> list[dict[str, str]]:
        """The labels of the ``alertname`` alerts firing now."""
        alerts = self.api("alerts")["alerts"]
        return [
            a["labels"]
            for a in alerts
            if a["labels"].get("alertname") == alertname and a.get("state") == "firing"
        ]


def start(
    directory: Path, targets: Mapping[str, str], lag_seconds: float, timeout: float = 30.0
) -> Prometheus:
    """Start Prometheus with its files in ``directory`` (config, rules, data, log), scraping
    ``targets`` every second; returns once it is ready."""
    if not Path(BINARY).is_file():
        raise SandboxError(f"{BINARY} is missing: make host-deps installs Debian's prometheus")
    directory.mkdir(parents=True, exist_ok=True)
    rules = directory / "alerts.yml"
    rules.write_text(rules_text(lag_seconds))
    config = directory / "prometheus.yml"
    config.write_text(config_text(targets, rules))
    url = f"http://127.0.0.1:{free_port()}"
    argv = [
        BINARY,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        "--storage.tsdb.retention.time=1d",
    ]
    log = directory / "prometheus.log"
    pid = spawn(argv, log, base_env(), directory)

    def ready() -> bool:
        if not alive(pid, ""):  # any command line: it may not have exec'd yet
            raise SandboxError(f"Prometheus exited: {_last_line(log)}")
        return http_answers(f"{url}/-/ready", ok_only=True)  # 503 while its TSDB starts

    wait_until(
        ready,
        timeout=timeout,
        what="Prometheus",
        interval=0.1,
        error=SandboxError,
        detail=lambda: _last_line(log),
    )
    return Prometheus(pid, url)


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    return lines[-1][:300] if lines else "no log"


def alert_fired(
    prom: Prometheus, alertname: str, instance: str, timeout: float, died: float | None = None
) -> Check:
    """The drill's check that ``alertname`` fires for ``instance`` within ``timeout`` s; the
    seconds it took are counted from ``died`` (a ``time.monotonic()``; None: from now)."""
    name = f"{alertname} fires"

    def firing() -> bool:
        return any(labels.get("instance") == instance for labels in prom.firing(alertname))

    began = time.monotonic() if died is None else died
    try:
        wait_until(firing, timeout=timeout, what=f"{alertname} for {instance}", interval=1.0)
    except TimeoutError as exc:
        lag = prom.query(f'gitlab_dr_replication_lag_seconds{{instance="{instance}"}}')
        return Check(name, False, f"{exc}; lag seen: {lag.get(instance, 'none')}")
    waited = time.monotonic() - began
    return Check(name, True, f"for {instance}, {waited:.0f} s after the master died")


def shows_roles(prom: Prometheus, master: str, slave: str, timeout: float) -> Check:
    """The drill's check that Prometheus sees ``master`` as the master (with a complete pass)
    and ``slave`` as the slave (with a lag under the alert's threshold)."""
    name = "Prometheus shows the new pair"

    def seen() -> str:
        masters = prom.query('gitlab_dr_role{role="master"} == 1')
        slaves = prom.query('gitlab_dr_role{role="slave"} == 1')
        passes = prom.query('sum by (instance) (gitlab_dr_passes_total{outcome="ok"})')
        lag = prom.query("gitlab_dr_replication_lag_seconds")
        fine = (
            set(masters) == {master}
            and set(slaves) == {slave}
            and passes.get(master, 0) > 0
            and lag.get(slave, float("inf")) < SANDBOX_LAG_ALERT
        )
        return f"master {master}, slave {slave} lagging {lag[slave]:.0f} s" if fine else ""

    try:
        detail = wait_until(seen, timeout=timeout, what="the new pair's metrics", interval=1.0)
    except TimeoutError as exc:
        return Check(name, False, str(exc))
    return Check(name, True, detail)
