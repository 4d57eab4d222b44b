"""The scheduled proof's decisions and rounds, with a fake look and a fake verification: when it
verifies, when it does not and what it says, and that a failure waits a whole period."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from gitlab_sync.config import iso
from gitlab_sync.snapshots import name_time
from ops.checks import Check
from ops.dr import verify_schedule as vsched
from ops.dr import verify_slave as vs
from ops.dr.snapshots import Listing
from ops.errors import HostError
from ops.rehearsal.verify import Verification
from tests.unit.pairs import settings_of

A, B = "20261125T115000.000000Z", "20261125T115500.000000Z"
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
HOUR = 3600.0


def _listing(method: str = "snapshots", verified_at: str | None = None) -> Listing:
    rows: list[dict[str, Any]] = [
        {"name": n, "instant": iso(name_time(n)), "method": method} for n in (A, B)
    ]
    if verified_at is not None:
        rows[0]["verified"] = {"at": verified_at, "ok": False, "summary": "1 of 5 checks failed"}
    return Listing.from_json({"current": B, "snapshots": rows, "method": method})


def _ago(seconds: float) -> str:
    return iso(NOW - dt.timedelta(seconds=seconds))


def test_a_slave_never_verified_is_due_at_once() -> None:
    decision = vsched.decide(6 * HOUR, "slave", _listing(), NOW)
    assert decision == vsched.Decision(True, "no snapshot verified yet")


def test_a_verification_on_record_counts_whatever_its_verdict_until_the_period_ends() -> None:
    young = vsched.decide(6 * HOUR, "slave", _listing(verified_at=_ago(HOUR)), NOW)
    assert not young.due
    assert young.why == "last verified or tried 60 min ago; next in 5.0 h"
    old = vsched.decide(6 * HOUR, "slave", _listing(verified_at=_ago(6 * HOUR)), NOW)
    assert old.due
    assert vsched.last_verified(_listing(verified_at=_ago(60))) == NOW - dt.timedelta(seconds=60)


def test_our_own_last_try_counts_too_so_a_failing_run_is_not_retried_in_a_loop() -> None:
    tried = NOW - dt.timedelta(minutes=5)
    assert not vsched.decide(6 * HOUR, "slave", _listing(), NOW, last_try=tried).due
    assert vsched.decide(6 * HOUR, "slave", _listing(), NOW + dt.timedelta(hours=6), tried).due


@pytest.mark.parametrize(
    ("every", "role", "listing", "why"),
    [
        (0.0, "slave", _listing(), "off (VERIFY_EVERY=0)"),
        (HOUR, "master", None, "this host is the master"),
        (HOUR, None, None, "this host is not paired"),
        (HOUR, "slave", Listing(None, None, "snapshots", ()), "no complete snapshot yet"),
    ],
)
def test_nothing_is_verified_off_a_slave_with_snapshots(
    every: float, role: str | None, listing: Listing | None, why: str
) -> None:
    assert vsched.decide(every, role, listing, NOW) == vsched.Decision(False, why)


def test_the_fallback_is_left_to_the_operator() -> None:
    decision = vsched.decide(HOUR, "slave", _listing(method="fallback"), NOW)
    assert not decision.due
    assert decision.why.startswith("off on the fallback method: a copy of a snapshot is not O(1)")


def _outcome(ok: bool) -> vs.Outcome:
    check = Check("readiness", ok, "green after 1.0 s" if ok else "not ready")
    return vs.Outcome(B, Verification((check,)), {"method": "snapshot"}, {}, 2.0)


class _Rig:
    """A schedule on a fake host whose role and snapshots a test sets, and a fake clock."""

    def __init__(self, role: str | None = "slave", listing: Listing | None = None) -> None:
        self.role, self.listing = role, listing or _listing()
        self.clock = NOW
        self.logged: list[str] = []
        self.verified: list[Any] = []
        self.fail: Exception | None = None
        settings = settings_of(VERIFY_EVERY="6h")
        self.schedule = vsched.Schedule(
            settings,
            self.logged.append,
            now=lambda: self.clock,
            look=lambda _engine: (self.role, self.listing if self.role == "slave" else None),
            verify=self._verify,
        )

    def _verify(self, engine: Any, progress: Any) -> vs.Outcome:
        self.verified.append(engine)
        progress("prepared a writable copy")
        if self.fail is not None:
            raise self.fail
        return _outcome(True)


def test_a_round_verifies_when_due_and_says_what_it_did() -> None:
    rig = _Rig()
    assert rig.schedule.round("engine").due  # type: ignore[arg-type]
    assert rig.verified == ["engine"]
    assert rig.logged == [
        "verifying the current snapshot: no snapshot verified yet",
        "  prepared a writable copy",
        "verified: all 1 checks passed (recorded in the snapshot's metadata; 2 s)",
    ]
    assert rig.schedule.last_try == NOW


def test_a_run_that_fails_is_logged_and_waits_a_whole_period() -> None:
    rig = _Rig()
    rig.fail = HostError("slave: the image gitlab/gitlab-ce:17.8.1-ce.0 is not on the slave")
    rig.schedule.round("engine")  # type: ignore[arg-type]
    assert rig.logged[-1] == (
        "verification failed to run: slave: the image gitlab/gitlab-ce:17.8.1-ce.0 is not on "
        "the slave (tried again in 6.0 h)"
    )
    rig.clock = NOW + dt.timedelta(hours=5, minutes=59)
    assert not rig.schedule.round("engine").due  # type: ignore[arg-type]
    rig.clock = NOW + dt.timedelta(hours=6)
    assert rig.schedule.round("engine").due  # type: ignore[arg-type]
    assert len(rig.verified) == 2


def test_a_reason_not_to_verify_is_said_once_until_it_changes() -> None:
    rig = _Rig(role="master")
    for _ in range(3):
        rig.schedule.round("engine")  # type: ignore[arg-type]
    assert rig.logged == ["not verifying: this host is the master"]
    rig.role = "slave"  # a promotion swapped the roles: the new slave is due
    rig.schedule.round("engine")  # type: ignore[arg-type]
    assert rig.verified == ["engine"]
    rig.logged.clear()
    for minutes in (1, 2, 3):  # not due yet: said once, though the age grows every round
        rig.clock = NOW + dt.timedelta(minutes=minutes)
        rig.schedule.round("engine")  # type: ignore[arg-type]
    assert rig.logged == ["not verifying: last verified or tried 60 s ago; next in 6.0 h"]
