"""The pair's checks, the way ``barman check`` has them: one function per area, one strategy.

Each area (promotion, aws, hosts, sync, layout, freshness, notes) is a function from what was
read (:class:`Observed`) to :class:`~ops.checks.Check` s; :func:`run` collects them in order.
``inv status`` prints them; promotion's preflight and freshness judge with the same single
checks (:func:`host_reached`, :func:`sidecar_alive`, :func:`last_complete_pass`). Everything
here is pure: tests pass what they like.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitlab_sync import metrics
from gitlab_sync.snapshots import NAME_PATTERN, name_time
from gitlab_sync.status import PassSummary, SidecarStatus
from ops.aws.inventory import FENCED, OPEN_GROUP, PairState
from ops.checks import Check
from ops.dr import layouts, sidecar
from ops.dr.hostview import HostView


@dataclass(frozen=True)
class Unfinished:
    """A promotion whose journal is not done: when it began and the steps it has done."""

    journal: str
    started_at: str
    done: tuple[str, ...]


@dataclass(frozen=True)
class Observed:
    """Everything the checks judge, read once."""

    state: PairState | None
    master: HostView
    slave: HostView
    epoch: int
    now: dt.datetime
    stale_after: float
    promotion: Unfinished | None = None
    verified_max_age: float = 86400.0


# --- single checks, reused by promotion --------------------------------------------------------


def host_reached(view: HostView) -> Check:
    """``ROLE host``: the host has the role and its engine answered."""
    if not view.error:
        hint = ""
    elif view.found:
        hint = "check the instance, SSH_* settings and the host's Docker"
    elif view.role == "master":
        hint = "start it, or promote the slave (inv promote-slave)"
    else:
        hint = "start it, or give the master a new slave (inv rebuild-slave)"
    return Check(f"{view.role} host", not view.error, view.error or view.target, hint=hint)


def sidecar_alive(view: HostView) -> Check:
    """``ROLE sidecar``: the host's gitlab-rsync runs and its daemon is alive."""
    if view.sync is None:
        running = view.service(sidecar.SERVICE)
        detail = (
            f"the sidecar is not running ({running.state})" if running else "no sidecar container"
        )
        return Check(f"{view.role} sidecar", False, view.error or detail, hint="inv pair")
    alive = view.sync.daemon_alive
    return Check(
        f"{view.role} sidecar",
        alive,
        "sidecar alive" if alive else "the sidecar's daemon is not running",
        hint="" if alive else "inv pair",
    )


def snapshot_age(last: PassSummary | None, now: dt.datetime) -> float | None:
    """Seconds since the pass of ``last`` began (None without one): the slave's exported
    ``gitlab_dr_replication_lag_seconds``, computed the one way."""
    return metrics.replication_lag_seconds(last, now)


def last_complete_pass(last: PassSummary | None, now: dt.datetime, stale_after: float) -> Check:
    """``last complete pass``: there is one, and it began at most STALE_AFTER ago."""
    age = snapshot_age(last, now)
    fresh = age is not None and age <= stale_after
    return Check(
        "last complete pass",
        fresh,
        f"{last.snapshot if last else None}, {age:.0f} s old" if age is not None else "none",
        hint="" if fresh else f"older than STALE_AFTER ({stale_after:g} s)",
    )


# --- the areas ----------------------------------------------------------------------------------


def promotion_checks(seen: Observed) -> list[Check]:
    """A promotion cut short: the pair is half promoted until it is resumed."""
    if seen.promotion is None:
        return []
    done = ", ".join(seen.promotion.done) or "none"
    return [
        Check(
            "promotion",
            False,
            f"unfinished since {seen.promotion.started_at} ({seen.promotion.journal}); "
            f"steps done: {done}",
            hint="inv promote-slave resumes it",
        )
    ]


def aws_checks(seen: Observed) -> list[Check]:
    """Tags, instances, fenced old masters and the Elastic IP (with AWS only)."""
    state = seen.state
    if state is None:
        return []
    out = [Check("aws tags", False, p, hint="fix the tags") for p in state.problems()]
    for role in ("master", "slave"):
        found = state.host(role)
        running = found is not None and found.state == "running"
        out.append(
            Check(
                f"aws {role} instance",
                running,
                f"{found.instance_id} {found.state}" if found else "none tagged",
                hint="" if running else "start it, or promote / rebuild-slave",
            )
        )
    for fenced in state.with_role(FENCED):
        closed = OPEN_GROUP not in fenced.security_groups
        out.append(
            Check(
                f"fenced {fenced.instance_id}",
                closed,
                f"old master, {fenced.state}, groups {','.join(fenced.security_groups)}",
                hint="" if closed else "a fenced instance must not be in gitlab-open",
            )
        )
    holder = state.eip_holder
    out.append(
        Check(
            "elastic ip",
            holder == "master",
            f"held by {holder or 'nobody'}",
            hint="" if holder == "master" else "associate it with the master",
        )
    )
    return out


def host_checks(seen: Observed) -> list[Check]:
    """Both hosts answer, and the master's GitLab serves."""
    gitlab = seen.master.service(sidecar.GITLAB)
    serving = gitlab is not None and gitlab.state == "running" and gitlab.health != "unhealthy"
    return [
        host_reached(seen.master),
        host_reached(seen.slave),
        Check(
            "master serving",
            serving,
            f"gitlab {gitlab.state}, {gitlab.health or 'no health yet'}"
            if gitlab
            else "no gitlab container",
            hint="" if serving else "see inv status logs / docker logs",
        ),
    ]


def _role_running(status: SidecarStatus | None) -> str:
    if status is None:
        return "role None, running None"
    return f"role {status.role}, running {status.running}"


def sync_checks(seen: Observed) -> list[Check]:
    """The master sends, the slave receives, and the slave's GitLab stays stopped."""
    msync, ssync = seen.master.sync, seen.slave.sync
    sending = msync is not None and msync.role == "master" and msync.running
    receiving = ssync is not None and ssync.role == "slave" and ssync.running
    slave_gitlab = seen.slave.service(sidecar.GITLAB)
    idle = slave_gitlab is None or slave_gitlab.state != "running"
    return [
        Check("master sending", sending, _role_running(msync), hint="" if sending else "inv pair"),
        Check(
            "slave receiving", receiving, _role_running(ssync), hint="" if receiving else "inv pair"
        ),
        Check(
            "slave gitlab not started",
            idle,
            slave_gitlab.state if slave_gitlab else "not created",
            hint="" if idle else "a slave's GitLab must stay stopped until promotion",
            critical=False,
        ),
    ]


def layout_checks(seen: Observed) -> list[Check]:
    """Which way each host syncs (snapshots from one instant, or the fallback) and why."""
    return [
        layouts.method_check(view.role, layouts.parsed(view.sync.layout))
        for view in (seen.master, seen.slave)
        if view.sync is not None
    ]


def freshness_checks(seen: Observed) -> list[Check]:
    """The newest complete snapshot is recent, and both sidecars are at AWS's epoch."""
    msync, ssync = seen.master.sync, seen.slave.sync
    last = (ssync.last_complete if ssync else None) or (msync.last_complete if msync else None)
    epochs = {s.epoch for s in (msync, ssync) if s is not None and s.epoch is not None}
    same = epochs <= {seen.epoch}
    return [
        last_complete_pass(last, seen.now, seen.stale_after),
        Check(
            "epoch",
            same,
            f"AWS {seen.epoch}, sidecars {sorted(epochs) or '-'}",
            hint="" if same else "inv pair re-pairs at the AWS epoch",
        ),
    ]


def verified_age(verified: Mapping[str, Any] | None, now: dt.datetime) -> float | None:
    """The age of the newest snapshot verified ok (its instant, from its name); None: none."""
    name = str((verified or {}).get("name") or "")
    if not NAME_PATTERN.match(name):
        return None
    return (now - name_time(name)).total_seconds()


def verified_checks(seen: Observed) -> list[Check]:
    """The newest snapshot a throwaway GitLab proved (inv verify-slave) is recent: a warning."""
    if seen.slave.sync is None:
        return []
    verified = seen.slave.sync.newest_verified
    age = verified_age(verified, seen.now)
    if verified is None or age is None:
        return [
            Check(
                "newest verified",
                False,
                "no snapshot verified",
                hint="inv verify-slave",
                critical=False,
            )
        ]
    fresh = age <= seen.verified_max_age
    return [
        Check(
            "newest verified",
            fresh,
            f"{verified['name']}, {age:.0f} s old (verified at {verified.get('at') or '-'})",
            hint="" if fresh else "older than VERIFIED_MAX_AGE: inv verify-slave",
            critical=False,
        )
    ]


def note_checks(seen: Observed) -> list[Check]:
    """What the sidecars last complained of (warnings, never failures)."""
    out: list[Check] = []
    for view in (seen.master, seen.slave):
        if view.sync is None:
            continue
        err = view.sync.last_error
        if err:
            out.append(
                Check(f"{view.role} last error", True, f"{err.at}: {err.message}", critical=False)
            )
        if view.sync.watch_note:
            out.append(Check(f"{view.role} watch", True, view.sync.watch_note, critical=False))
    return out


Area = Callable[[Observed], Sequence[Check]]

AREAS: tuple[Area, ...] = (
    promotion_checks,
    aws_checks,
    host_checks,
    sync_checks,
    layout_checks,
    freshness_checks,
    verified_checks,
    note_checks,
)
"""The strategy: every area, in the order ``inv status`` prints them."""


def run(seen: Observed, areas: Sequence[Area] = AREAS) -> tuple[Check, ...]:
    """Every check of ``areas``, in order."""
    return tuple(check for area in areas for check in area(seen))
