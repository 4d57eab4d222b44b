"""``inv status``: the pair at a glance, as checks a monitor can run.

Like ``barman check``: each check has a name, a result, whether it is critical, what was seen
and a hint (:mod:`ops.dr.checks`); a failed critical check makes the exit code non-zero. The
pair may be in any state: a missing, stopped or unreachable host is a failed check, not a
crash, and a fenced old master is listed as fenced. Everything is gathered first into an
immutable :class:`StatusReport`; :func:`render` is the text writer, ``to_dict`` the JSON one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from gitlab_sync.status import SidecarStatus
from ops.aws.inventory import PairState
from ops.checks import Check
from ops.dr import checks as pair_checks
from ops.dr import layouts, topology
from ops.dr.hostview import HostView, look, look_at_once
from ops.dr.journal import Journal
from ops.dr.snapshots import age_text
from ops.settings import Settings


@dataclass(frozen=True)
class StatusReport:
    """What ``inv status`` read (AWS, both hosts) and the checks judged from it."""

    aws: dict[str, Any] | None
    hosts: tuple[HostView, ...]
    checks: tuple[Check, ...] = field(default_factory=tuple)
    at: dt.datetime | None = None
    """When it was read (the lag shown is computed at that instant)."""

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.checks)

    @property
    def failed(self) -> list[str]:
        """The names of the critical checks that failed."""
        return [c.name for c in self.checks if c.failed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "aws": self.aws,
            "hosts": [h.to_dict() for h in self.hosts],
            "checks": [{k: asdict(c)[k] for k in CHECK_FIELDS} for c in self.checks],
        }


CHECK_FIELDS = ("name", "ok", "critical", "detail", "hint")
"""A check's JSON keys, in the order ``--json`` has always printed them."""


def checks(
    settings: Settings,
    state: PairState | None,
    master: HostView,
    slave: HostView,
    epoch: int,
    now: dt.datetime,
    promotion: pair_checks.Unfinished | None = None,
) -> tuple[Check, ...]:
    """The checks, computed from what was read (pure: tests pass what they like)."""
    seen = pair_checks.Observed(
        state, master, slave, epoch, now, settings.stale_after, promotion, settings.verified_max_age
    )
    return pair_checks.run(seen)


def unfinished_promotion(settings: Settings) -> pair_checks.Unfinished | None:
    """The promotion of this project that was cut short, if any (from its journal)."""
    journal = Journal.unfinished(settings)
    if journal is None:
        return None
    return pair_checks.Unfinished(
        journal.path.name, str(journal.data.get("started_at")), journal.steps_done()
    )


def collect(settings: Settings, now: dt.datetime | None = None) -> StatusReport:
    """Read AWS (when used) and both hosts, whatever state the pair is in, and judge."""
    state = topology.read_aws(settings)
    found = topology.survey(settings, state)
    master, slave = look_at_once(lambda: look(found.master), lambda: look(found.slave))
    when = now or dt.datetime.now(dt.UTC)
    return StatusReport(
        state.to_dict() if state else None,
        (master, slave),
        checks(settings, state, master, slave, found.epoch, when, unfinished_promotion(settings)),
        when,
    )


def _method(sync: SidecarStatus) -> str:
    layout = layouts.parsed(sync.layout)
    return layout.method if layout else "-"


def _verified(sync: SidecarStatus, at: dt.datetime | None) -> str:
    """``NAME, 3.5 h old`` (the newest snapshot verified ok), or ``none``."""
    good = sync.newest_verified
    age = pair_checks.verified_age(good, at or dt.datetime.now(dt.UTC))
    if good is None or age is None:
        return "none (inv verify-slave)"
    return f"{good['name']}, {age_text(age)} old"


def render(report: StatusReport) -> list[str]:
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
        if not view.found:
            lines.append(f"{view.role} -  MISSING: {view.error}")
            continue
        lines.append(
            f"{view.role} {view.target}" + (f"  UNREACHABLE: {view.error}" if view.error else "")
        )
        for s in view.services:
            lines.append(f"  {s.service:13} {s.state:9} {s.health or '-'}")
        if view.sync:
            last, now = view.sync.last_complete, view.sync.in_progress
            lines.append(
                f"  sync: {view.sync.role} running={view.sync.running} "
                f"snapshots={view.sync.snapshots} method={_method(view.sync)} "
                f"last={(last.snapshot if last else '') or '-'} "
                f"in-progress={(now.id if now else '') or '-'}"
            )
            lag = pair_checks.snapshot_age(last, report.at or dt.datetime.now(dt.UTC))
            if view.sync.role == "slave" and lag is not None:
                lines.append(f"  replication lag: {lag:.0f} s (gitlab_dr_replication_lag_seconds)")
            if view.sync.role == "slave":
                lines.append(f"  newest verified: {_verified(view.sync, report.at)}")
    lines.append("checks:")
    for c in report.checks:
        mark = "ok  " if c.ok else ("FAIL" if c.critical else "warn")
        lines.append(
            f"  {mark} {c.name:26} {c.detail}" + (f"  ({c.hint})" if c.hint and not c.ok else "")
        )
    return lines
