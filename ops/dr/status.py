"""``inv status``: the pair at a glance, as checks a monitor can run.

Like ``barman check``: each check has a name, a result, whether it is critical, what was seen
and a hint; a failed critical check makes the exit code non-zero. An unreachable host is a
failed check, not a crash. Everything is gathered first into an immutable :class:`Report`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from ops.aws.inventory import PairState
from ops.dr import sidecar, topology
from ops.dr.topology import Side
from ops.errors import OpsError
from ops.hosts.engine import Engine
from ops.settings import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    critical: bool
    detail: str
    hint: str = ""


@dataclass(frozen=True)
class HostView:
    """What one host showed: its containers and its sidecar's status (or why not)."""

    role: str
    target: str
    error: str = ""
    services: tuple[dict[str, Any], ...] = ()
    sync: dict[str, Any] | None = None

    def service(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.services if s["service"] == name), None)


@dataclass(frozen=True)
class Report:
    aws: dict[str, Any] | None
    hosts: tuple[HostView, ...]
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.critical)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "aws": self.aws,
            "hosts": [asdict(h) for h in self.hosts],
            "checks": [asdict(c) for c in self.checks],
        }


def look(side: Side) -> HostView:
    """Read one host; any failure to reach it is recorded, not raised."""
    try:
        with Engine.open(side.host, side.settings) as engine:
            services = tuple(asdict(s) for s in engine.ps())
            sync = None
            if any(s["service"] == sidecar.SERVICE and s["state"] == "running" for s in services):
                sync = sidecar.run_json(engine, "status")
            return HostView(side.role, str(side.host), "", services, sync)
    except OpsError as exc:
        return HostView(side.role, str(side.host), str(exc))


def _age(text: str | None, now: dt.datetime) -> float | None:
    if not text:
        return None
    started = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return (now - started).total_seconds()


def checks(
    settings: Settings,
    state: PairState | None,
    master: HostView,
    slave: HostView,
    epoch: int,
    now: dt.datetime,
) -> tuple[Check, ...]:
    """The checks, computed from what was read (pure: tests pass what they like)."""
    out: list[Check] = []
    if state is not None:
        out += [Check("aws tags", False, True, p, "fix the tags") for p in state.problems()]
        for role in ("master", "slave"):
            found = state.host(role)
            running = found is not None and found.state == "running"
            out.append(
                Check(
                    f"aws {role} instance",
                    running,
                    True,
                    f"{found.instance_id} {found.state}" if found else "none tagged",
                    "" if running else "start it, or promote / rebuild-slave",
                )
            )
        for fenced in state.with_role("fenced"):
            closed = "gitlab-open" not in fenced.security_groups
            out.append(
                Check(
                    f"fenced {fenced.instance_id}",
                    closed,
                    True,
                    f"old master, {fenced.state}, groups {','.join(fenced.security_groups)}",
                    "" if closed else "a fenced instance must not be in gitlab-open",
                )
            )
        holder = state.eip_holder
        out.append(
            Check(
                "elastic ip",
                holder == "master",
                True,
                f"held by {holder or 'nobody'}",
                "" if holder == "master" else "associate it with the master",
            )
        )
    for view in (master, slave):
        out.append(
            Check(
                f"{view.role} host",
                not view.error,
                True,
                view.error or view.target,
                "check the instance, SSH_* settings and the host's Docker" if view.error else "",
            )
        )
    gitlab = master.service(sidecar.GITLAB)
    serving = (
        gitlab is not None and gitlab["state"] == "running" and gitlab["health"] != "unhealthy"
    )
    out.append(
        Check(
            "master serving",
            serving,
            True,
            f"gitlab {gitlab['state']}, {gitlab['health'] or 'no health yet'}"
            if gitlab
            else "no gitlab container",
            "" if serving else "see inv status logs / docker logs",
        )
    )
    msync, ssync = master.sync or {}, slave.sync or {}
    sending = msync.get("role") == "master" and bool(msync.get("running"))
    out.append(
        Check(
            "master sending",
            sending,
            True,
            f"role {msync.get('role')}, running {msync.get('running')}",
            "" if sending else "inv pair",
        )
    )
    receiving = ssync.get("role") == "slave" and bool(ssync.get("running"))
    out.append(
        Check(
            "slave receiving",
            receiving,
            True,
            f"role {ssync.get('role')}, running {ssync.get('running')}",
            "" if receiving else "inv pair",
        )
    )
    slave_gitlab = slave.service(sidecar.GITLAB)
    idle = slave_gitlab is None or slave_gitlab["state"] != "running"
    out.append(
        Check(
            "slave gitlab not started",
            idle,
            False,
            slave_gitlab["state"] if slave_gitlab else "not created",
            "" if idle else "a slave's GitLab must stay stopped until promotion",
        )
    )
    last = ssync.get("last_complete") or msync.get("last_complete") or {}
    age = _age(last.get("started_at"), now)
    fresh = age is not None and age <= settings.stale_after
    out.append(
        Check(
            "last complete pass",
            fresh,
            True,
            f"{last.get('name') or last.get('snapshot')}, {age:.0f} s old"
            if age is not None
            else "none",
            "" if fresh else f"older than STALE_AFTER ({settings.stale_after:g} s)",
        )
    )
    epochs = {e for e in (msync.get("epoch"), ssync.get("epoch")) if e is not None}
    same = epochs <= {epoch}
    out.append(
        Check(
            "epoch",
            same,
            True,
            f"AWS {epoch}, sidecars {sorted(epochs) or '-'}",
            "" if same else "inv pair re-pairs at the AWS epoch",
        )
    )
    for view, data in ((master, msync), (slave, ssync)):
        err = data.get("last_error")
        if err:
            out.append(
                Check(
                    f"{view.role} last error", True, False, f"{err.get('at')}: {err.get('message')}"
                )
            )
        if data.get("watch_note"):
            out.append(Check(f"{view.role} watch", True, False, str(data["watch_note"])))
    return tuple(out)


def collect(settings: Settings, now: dt.datetime | None = None) -> Report:
    """Read AWS (when used) and both hosts, and judge."""
    state = topology.read_aws(settings)
    topo = topology.resolve(settings, state)
    master, slave = look(topo.master), look(topo.slave)
    when = now or dt.datetime.now(dt.UTC)
    return Report(
        state.to_dict() if state else None,
        (master, slave),
        checks(settings, state, master, slave, topo.epoch, when),
    )


def render(report: Report) -> list[str]:
    """The report as text: AWS, hosts and containers, sync, then the checks."""
    lines: list[str] = []
    if report.aws:
        lines.append(
            f"AWS {report.aws['region']}  epoch {report.aws['epoch']}  "
            f"elastic ip: {report.aws['eip_holder'] or '-'}"
        )
        for h in report.aws["hosts"]:
            lines.append(
                f"  {h['role']:7} {h['instance_id']:20} {h['state']:9} {h['zone']:12} "
                f"{','.join(h['security_groups'])}"
            )
    for view in report.hosts:
        lines.append(
            f"{view.role} {view.target}" + (f"  UNREACHABLE: {view.error}" if view.error else "")
        )
        for s in view.services:
            lines.append(f"  {s['service']:13} {s['state']:9} {s['health'] or '-'}")
        if view.sync:
            last = view.sync.get("last_complete") or {}
            now = view.sync.get("in_progress") or {}
            lines.append(
                f"  sync: {view.sync.get('role')} running={view.sync.get('running')} "
                f"snapshots={view.sync.get('snapshots')} "
                f"last={last.get('name') or last.get('snapshot') or '-'} "
                f"in-progress={now.get('id') or '-'}"
            )
    lines.append("checks:")
    for c in report.checks:
        mark = "ok  " if c.ok else ("FAIL" if c.critical else "warn")
        lines.append(
            f"  {mark} {c.name:26} {c.detail}" + (f"  ({c.hint})" if c.hint and not c.ok else "")
        )
    return lines
