"""The scheduled proof: on the slave, ``inv verify-slave``'s work every ``VERIFY_EVERY``.

The stack's ``gitlab-verify`` service runs this (``gitlab-dr-verify``, in the sidecar's image)
on both hosts, since the roles swap: on each round it asks its own host's sidecar for the role
and the snapshots, and on a slave whose snapshots are made from one instant it verifies the
current snapshot when the newest verification on record (or its own last try) is older than
``VERIFY_EVERY``. A verification is :func:`ops.dr.verify_slave.verify_on` on the engine of the
host it runs on, so its checks, its record in the snapshot's metadata and its clean-up are the
ones ``inv verify-slave`` has. On the fallback it does nothing: a copy of a snapshot there is a
copy of the data, not O(1), and the operator runs ``inv verify-slave`` when they choose.

Why a service of its own rather than the sidecar: starting a throwaway GitLab needs the Docker
engine's socket, which is root on the host. The sidecar is what the master's SSH key reaches (a
forced command, but still a door), so the socket is given to this service alone, which opens
no port and reads nothing from the network.

A stop (``docker stop``, a redeploy) during a verification ends it as Ctrl-C ends ``inv
verify-slave``: the throwaway GitLab and the copy are removed before it exits (the service's
``stop_grace_period`` leaves the time). A failure is logged, recorded when the checks ran, and
tried again after ``VERIFY_EVERY``, never in a tight loop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from gitlab_sync.status import moment
from ops import settings as settings_mod
from ops.dr import sidecar, snapshots, verify_slave
from ops.dr.snapshots import Listing, age_text
from ops.errors import OpsError
from ops.hosts.engine import Engine
from ops.settings import Settings

ROUND = 60.0
"""Seconds between two looks at the host's role and snapshots (at most VERIFY_EVERY)."""


@dataclass(frozen=True)
class Decision:
    """Whether to verify now, and why (or why not), in a sentence for the log. ``waiting``: not
    due yet, for a reason that holds until the period ends (its sentence changes every round)."""

    due: bool
    why: str
    waiting: bool = False


def last_verified(listing: Listing) -> dt.datetime | None:
    """When the newest verification on record was made (of any kept snapshot)."""
    times = [moment(s.verified.at) for s in listing.snapshots if s.verified is not None]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _not_here(every: float, role: str | None, listing: Listing | None) -> str:
    """Why this host verifies nothing at all now; empty when it may."""
    if every <= 0:
        return "off (VERIFY_EVERY=0)"
    if role != "slave":
        return f"this host is {f'the {role}' if role else 'not paired'}"
    if listing is None or listing.newest is None:
        return "no complete snapshot yet"
    if listing.method != "snapshots":
        return (
            f"off on the {listing.method or 'unknown'} method: a copy of a snapshot is not O(1) "
            "here (run inv verify-slave when you choose)"
        )
    return ""


def decide(
    every: float,
    role: str | None,
    listing: Listing | None,
    now: dt.datetime,
    last_try: dt.datetime | None = None,
) -> Decision:
    """Verify now? Only a slave with snapshots from one instant, a complete snapshot, and no
    verification on record (nor a try of ours) younger than ``every`` seconds."""
    why_not = _not_here(every, role, listing)
    if why_not or listing is None:
        return Decision(False, why_not)
    done = last_verified(listing)
    newest = max((t for t in (done, last_try) if t is not None), default=None)
    if newest is None:
        return Decision(True, "no snapshot verified yet")
    age = (now - newest).total_seconds()
    if age < every:
        return Decision(
            False,
            f"last verified or tried {age_text(age)} ago; next in {age_text(every - age)}",
            waiting=True,
        )
    return Decision(True, f"last verified or tried {age_text(age)} ago (every {age_text(every)})")


def look(engine: Engine) -> tuple[str | None, Listing | None]:
    """The host's role and, on a slave, its snapshots, from its sidecar."""
    role = sidecar.status(engine).role
    return role, snapshots.read(engine) if role == "slave" else None


class Schedule:
    """The rounds: look, decide, verify when due. ``look`` and ``verify`` are the engine's
    (:func:`look`, :func:`ops.dr.verify_slave.verify_on`) unless a test gives its own."""

    def __init__(
        self,
        settings: Settings,
        log: Callable[[str], None],
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        look: Callable[[Engine], tuple[str | None, Listing | None]] = look,
        verify: Callable[..., verify_slave.Outcome] = verify_slave.verify_on,
    ) -> None:
        self.settings = settings
        self.log = log
        self.now = now
        self._look = look
        self._verify = verify
        self.last_try: dt.datetime | None = None
        self._said = ""

    def round(self, engine: Engine) -> Decision:
        """One round on ``engine``: what was decided (and done)."""
        role, listing = self._look(engine)
        decision = decide(self.settings.verify_every, role, listing, self.now(), self.last_try)
        if not decision.due:
            reason = "waiting" if decision.waiting else decision.why
            if reason != self._said:  # say a change, not every round
                self._said = reason
                self.log(f"not verifying: {decision.why}")
            return decision
        self._said = ""
        self.last_try = self.now()
        self.log(f"verifying the current snapshot: {decision.why}")
        try:
            outcome = self._verify(engine, progress=lambda line: self.log(f"  {line}"))
        except OpsError as exc:
            again = age_text(self.settings.verify_every)
            self.log(f"verification failed to run: {exc} (tried again in {again})")
            return decision
        self.log(outcome.render()[-1])
        return decision


class _Stop(BaseException):
    """SIGTERM: end as Ctrl-C ends inv verify-slave (its clean-up runs in ``finally``)."""


def _on_term(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def _log(line: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} {line}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gitlab-dr-verify",
        description="On the slave, verify the current snapshot with a throwaway GitLab every "
        "VERIFY_EVERY (the settings come from the environment, as the stack passes them).",
    )
    parser.add_argument("--once", action="store_true", help="one round, then exit")
    args = parser.parse_args(argv)
    try:
        settings = settings_mod.load(environ=dict(os.environ), env_file=Path(os.devnull))
    except OpsError as exc:
        print(f"gitlab-dr-verify: error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_term)
    schedule = Schedule(settings, _log)
    pause = min(ROUND, settings.verify_every) if settings.verify_every > 0 else ROUND
    try:
        while True:
            try:
                with Engine.local(settings) as engine:
                    schedule.round(engine)
            except OpsError as exc:
                _log(f"could not look at this host: {exc}")
            if args.once:
                return 0
            time.sleep(pause)
    except (_Stop, KeyboardInterrupt):
        _log("stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
