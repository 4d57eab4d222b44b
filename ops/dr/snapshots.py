"""``inv snapshots``, and the point in time a promotion starts from (``--snapshot``/``--before``).

The slave's snapshots are points in time: when the master's data was damaged rather than lost
(a project deleted by mistake, a bad upgrade, ransomware), the damage reaches the slave within
seconds, and the way back is to promote from the snapshot before it. The list comes from the
slave's sidecar (``gitlab-sync snapshots --json``, read once into an immutable
:class:`Listing`); :func:`choose` turns ``--snapshot NAME`` or ``--before TIME`` into one
:class:`Choice`, or refuses in one sentence, before anything is changed.

A choice loses the writes between its snapshot's instant and the newest's: :class:`Choice` says
how many seconds, and the plan and the report say it to the operator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitlab_sync.config import iso, parse_duration
from gitlab_sync.status import moment
from ops.dr import sidecar, topology
from ops.dr.topology import Absent, Side
from ops.errors import HostError, Refusal, SidecarError
from ops.hosts.engine import Engine
from ops.settings import Settings

JOURNAL_KEY = "snapshot_choice"
"""Where a promotion's journal keeps the chosen snapshot (absent: the newest)."""

EXAMPLES = (
    "ISO 8601 with a zone (2026-11-25T11:30:00Z) or an age (90s ago, 30m ago, 2h ago, 1d ago)"
)


@dataclass(frozen=True)
class Verified:
    """The last verification of a snapshot (``inv verify-slave``, or the sidecar's schedule)."""

    at: str
    ok: bool
    summary: str
    checks: tuple[Any, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Verified | None:
        if not isinstance(data, Mapping):
            return None
        checks = data.get("checks")
        return cls(
            str(data.get("at") or ""),
            data.get("ok") is True,
            str(data.get("summary") or ""),
            tuple(checks) if isinstance(checks, list) else (),
        )

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "ok": self.ok, "checks": list(self.checks), "summary": self.summary}

    def sentence(self) -> str:
        """``verified at T: ok`` or ``verified at T: FAILED (summary)``."""
        said = f" ({self.summary})" if self.summary else ""
        return f"verified at {self.at}: {'ok' if self.ok else 'FAILED'}{said}"


@dataclass(frozen=True)
class Snapshot:
    """One complete snapshot on the slave: its name, instant (its pass's start), and more."""

    name: str
    instant: dt.datetime
    age_seconds: float
    bytes: int | None
    method: str
    current: bool
    verified: Verified | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        name, instant = str(data.get("name") or ""), moment(str(data.get("instant") or ""))
        if not name or instant is None:
            raise SidecarError(
                f"gitlab-sync snapshots listed a snapshot without a name or instant: {dict(data)}"
            )
        size = data.get("bytes")
        age = data.get("age_seconds")
        return cls(
            name=name,
            instant=instant,
            age_seconds=float(age) if isinstance(age, int | float) else 0.0,
            bytes=size if isinstance(size, int) and not isinstance(size, bool) else None,
            method=str(data.get("method") or ""),
            current=data.get("current") is True,
            verified=Verified.from_json(data.get("verified")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instant": iso(self.instant),
            "age_seconds": self.age_seconds,
            "bytes": self.bytes,
            "method": self.method,
            "current": self.current,
            "verified": self.verified.to_json() if self.verified else None,
        }

    def verification(self) -> str:
        """``verified at T: ok`` (or FAILED), or ``never verified``."""
        return self.verified.sentence() if self.verified else "never verified"


@dataclass(frozen=True)
class Listing:
    """The slave's snapshots, newest first, as its sidecar lists them."""

    current: str | None
    newest_verified: str | None
    method: str
    snapshots: tuple[Snapshot, ...]

    @classmethod
    def from_json(cls, data: Any) -> Listing:
        if not isinstance(data, Mapping) or not isinstance(data.get("snapshots"), list):
            raise SidecarError("gitlab-sync snapshots did not print a list of snapshots")
        items = [Snapshot.from_json(s) for s in data["snapshots"] if isinstance(s, Mapping)]
        return cls(
            current=str(data["current"]) if data.get("current") else None,
            newest_verified=str(data["newest_verified"]) if data.get("newest_verified") else None,
            method=str(data.get("method") or ""),
            snapshots=tuple(sorted(items, key=lambda s: s.instant, reverse=True)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "newest_verified": self.newest_verified,
            "method": self.method,
            "snapshots": [s.to_json() for s in self.snapshots],
        }

    @property
    def newest(self) -> Snapshot | None:
        return self.snapshots[0] if self.snapshots else None

    @property
    def oldest(self) -> Snapshot | None:
        return self.snapshots[-1] if self.snapshots else None

    def named(self, name: str) -> Snapshot | None:
        return next((s for s in self.snapshots if s.name == name), None)


# --- reading ------------------------------------------------------------------------------------


def read(engine: Engine) -> Listing:
    """The snapshots of the host ``engine`` reaches, from its sidecar."""
    return Listing.from_json(sidecar.run_json(engine, "snapshots"))


def read_side(side: Side | Absent) -> Listing:
    """The snapshots of the slave at ``side`` (an error saying why when there is none)."""
    if isinstance(side, Absent):
        raise HostError(f"no slave to list the snapshots of: {side.reason}")
    with Engine.open(side.host, side.settings) as engine:
        return read(engine)


def collect(settings: Settings) -> Listing:
    """``inv snapshots``: the slave's snapshots (the slave as ``inv status`` finds it)."""
    return read_side(topology.locate("slave", settings, topology.read_aws(settings)))


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def age_text(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``, ``2.0 d``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def render(listing: Listing) -> list[str]:
    """The list for a terminal: one line a snapshot, newest first; ``*`` marks ``current``."""
    out = [
        f"{len(listing.snapshots)} snapshot(s) on the slave ({listing.method}); "
        f"current {listing.current or 'none'}, newest verified {listing.newest_verified or 'none'}"
    ]
    if not listing.snapshots:
        return out
    out.append(f"  {'name':24} {'instant':27} {'age':>8} {'size':>9}  {'made by':11} verified")
    for snap in listing.snapshots:
        out.append(
            f"{'*' if snap.current else ' '} {snap.name:24} {iso(snap.instant):27} "
            f"{age_text(snap.age_seconds):>8} {_size(snap.bytes):>9}  "
            f"{_made_by(snap.method):11} {_verified_cell(snap.verified)}"
        )
    out.append("promote from one: inv promote-slave --snapshot NAME (or --before TIME)")
    return out


def _made_by(method: str) -> str:
    """How the snapshot was made: from one instant (btrfs) or by the fallback (live files)."""
    return {"snapshots": "one instant", "fallback": "fallback"}.get(method, method or "-")


def _verified_cell(verified: Verified | None) -> str:
    if verified is None:
        return "no"
    return f"{'ok' if verified.ok else 'FAILED'} at {verified.at}"


# --- choosing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """The snapshot a promotion starts from, instead of the newest, and what that loses."""

    snapshot: Snapshot
    newest: Snapshot
    asked: str
    """What the operator asked: ``--snapshot NAME`` or ``--before TIME``."""

    @property
    def is_newest(self) -> bool:
        return self.snapshot.name == self.newest.name

    @property
    def lost_seconds(self) -> float:
        """The writes the choice loses: from its snapshot's instant to the newest's."""
        return max(0.0, (self.newest.instant - self.snapshot.instant).total_seconds())

    def loss(self) -> str:
        """What choosing it loses, in one clause (the plan's and the report's)."""
        if self.is_newest:
            return f"snapshot {self.snapshot.name} ({self.asked}) is the newest: nothing more lost"
        return (
            f"snapshot {self.snapshot.name} (not the newest, {self.newest.name}): the writes "
            f"between {iso(self.snapshot.instant)} and {iso(self.newest.instant)}, "
            f"{self.lost_seconds:.0f} s, are not in it"
        )

    def to_json(self) -> dict[str, Any]:
        """What the journal keeps, so that a resumed promotion keeps the same snapshot."""
        return {
            "name": self.snapshot.name,
            "asked": self.asked,
            "snapshot": self.snapshot.to_json(),
            "newest": self.newest.to_json(),
            "lost_seconds": self.lost_seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Choice:
        return cls(
            Snapshot.from_json(data["snapshot"]),
            Snapshot.from_json(data["newest"]),
            str(data.get("asked") or ""),
        )


def parse_time(text: str, now: dt.datetime) -> dt.datetime:
    """``--before``'s time: ISO 8601 with a zone (or Z), or ``N{s,m,h,d} ago``; else a refusal."""
    given = text.strip()
    if given.endswith(" ago"):
        try:
            return now - dt.timedelta(seconds=parse_duration(given.removesuffix(" ago")))
        except ValueError:
            raise Refusal(f"--before {text!r} is not a time: give {EXAMPLES}") from None
    try:
        parsed = dt.datetime.fromisoformat(given)
    except ValueError:
        raise Refusal(f"--before {text!r} is not a time: give {EXAMPLES}") from None
    if parsed.tzinfo is None:
        raise Refusal(f"--before {text!r} has no zone: add Z or +HH:MM (or give an age: 30m ago)")
    return parsed.astimezone(dt.UTC)


def before(snapshots: Sequence[Snapshot], text: str, now: dt.datetime) -> Snapshot:
    """The newest snapshot whose instant is at or before ``text``'s time (refusals as said)."""
    moment_ = parse_time(text, now)
    if moment_ > now:
        raise Refusal(f"--before {text} ({iso(moment_)}) is in the future; now is {iso(now)}")
    found = [s for s in snapshots if s.instant <= moment_]
    if not found:
        oldest = min(snapshots, key=lambda s: s.instant)
        raise Refusal(
            f"--before {text} ({iso(moment_)}) is before the oldest snapshot, {oldest.name} "
            f"({iso(oldest.instant)}): the slave keeps nothing that old"
        )
    return max(found, key=lambda s: s.instant)


def choose(listing: Listing, snapshot: str, before_text: str, now: dt.datetime) -> Choice:
    """The one snapshot ``--snapshot NAME`` or ``--before TIME`` names, or a one-line refusal."""
    if snapshot and before_text:
        raise Refusal("give --snapshot or --before, not both")
    newest = listing.newest
    if newest is None:
        raise Refusal("the slave has no complete snapshot to choose from")
    if snapshot:
        found = listing.named(snapshot)
        if found is None:
            oldest = listing.oldest or newest
            raise Refusal(
                f"the slave has no snapshot {snapshot} (it keeps {len(listing.snapshots)}, from "
                f"{oldest.name} to {newest.name}); inv snapshots lists them"
            )
        return Choice(found, newest, f"--snapshot {snapshot}")
    return Choice(before(listing.snapshots, before_text, now), newest, f"--before {before_text}")
