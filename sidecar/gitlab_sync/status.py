"""The sidecar's status: one typed record, the same field names on master and slave.

``gitlab-sync status --json`` prints :meth:`SidecarStatus.to_json`; ``ops`` parses it once with
:meth:`SidecarStatus.from_json` and reads fields, never the sidecar's files. A pass is described
alike on both sides (:class:`PassSummary`): on the master from its pass log, on the slave from
the snapshot's metadata, so ``last_complete.snapshot`` names the snapshot on either.

Standard library only: this module runs in the sidecar and is imported by ``ops``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gitlab_sync.config import parse_iso

_PASS_FIELDS = (
    "id",
    "snapshot",
    "trigger",
    "started_at",
    "ended_at",
    "duration_s",
    "files",
    "bytes",
    "outcome",
    "phase",
    "error",
)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _count(value: object) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def moment(text: str) -> dt.datetime | None:
    """An ISO time as the sidecar writes it, or None for an empty or malformed one."""
    if not text:
        return None
    try:
        return parse_iso(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class PassSummary:
    """One pass: complete, failed, or in progress.

    ``snapshot`` is the name of the snapshot the pass made ("" until it is complete). What a
    side records beyond these fields (PostgreSQL's backup figures on the master, the epoch on
    the slave) is kept in ``extra`` and printed back as it came.
    """

    id: str = ""
    snapshot: str = ""
    trigger: str = ""
    started_at: str = ""
    ended_at: str = ""
    duration_s: float = 0.0
    files: int = 0
    bytes: int = 0
    outcome: str = ""
    phase: str = ""
    error: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def started(self) -> dt.datetime | None:
        return moment(self.started_at)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> PassSummary | None:
        """A pass from either side's record; None for none."""
        if not data:
            return None
        return cls(
            id=_text(data.get("id")),
            snapshot=_text(data.get("snapshot")),
            trigger=_text(data.get("trigger")),
            started_at=_text(data.get("started_at")),
            ended_at=_text(data.get("ended_at")),
            duration_s=_number(data.get("duration_s")),
            files=_count(data.get("files")),
            bytes=_count(data.get("bytes")),
            outcome=_text(data.get("outcome")),
            phase=_text(data.get("phase") or data.get("state")),
            error=_text(data.get("error")),
            extra={k: v for k, v in data.items() if k not in _PASS_FIELDS and k != "state"},
        )

    @classmethod
    def from_snapshot_meta(cls, meta: Mapping[str, Any]) -> PassSummary:
        """The slave's metadata of a complete snapshot, as a pass."""
        started, ended = _text(meta.get("started_at")), _text(meta.get("committed_at"))
        begun, done = moment(started), moment(ended)
        seconds = round((done - begun).total_seconds(), 3) if begun and done else 0.0
        rest = {k: v for k, v in meta.items() if k not in {"name", "committed_at", "state"}}
        summary = cls.from_json(rest) or cls()
        return dataclasses.replace(
            summary,
            snapshot=_text(meta.get("name")),
            ended_at=ended,
            duration_s=summary.duration_s or seconds,
            outcome="ok",
        )

    def to_json(self) -> dict[str, Any]:
        data = dict(self.extra)
        data.update({name: getattr(self, name) for name in _PASS_FIELDS})
        return data


@dataclass(frozen=True)
class ErrorNote:
    """The last error a side recorded: when, and the sentence."""

    at: str
    message: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ErrorNote | None:
        if not data or not data.get("message"):
            return None
        return cls(at=_text(data.get("at")), message=_text(data.get("message")))

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "message": self.message}


@dataclass(frozen=True)
class SidecarStatus:
    """Everything ``gitlab-sync status`` reports (the ``--json`` schema)."""

    role: str | None = None
    """master, slave, or None when not paired."""
    peer: str | None = None
    epoch: int | None = None
    running: bool = False
    """master: sending; slave: its receiver listening."""
    daemon_alive: bool = False
    heartbeat: str | None = None
    daemon_started_at: str | None = None
    watch: str | None = None
    watch_note: str = ""
    last_complete: PassSummary | None = None
    last_pass: PassSummary | None = None
    in_progress: PassSummary | None = None
    last_error: ErrorNote | None = None
    snapshots: int | None = None
    current: str | None = None
    """The newest complete snapshot's name (the slave's ``current``, the master's last sent)."""
    last_contact: str | None = None
    """slave: the last time the master was heard from (a pass received, begun or refused)."""
    secrets_present: bool | None = None
    """slave: whether the newest snapshot holds ``config/gitlab-secrets.json``."""
    newest_verified: dict[str, Any] | None = None
    """slave: the newest snapshot verified ok, ``{"name", "at"}`` (None: none is)."""
    layout: dict[str, Any] = field(default_factory=dict)
    """``gitlab_sync.layout.Layout.to_json()`` of this host: the method (``snapshots`` or
    ``fallback``), why, and what is wrong with btrfs (``problems``); empty when not known."""

    @property
    def paired(self) -> bool:
        return self.role is not None

    @property
    def newest_started(self) -> dt.datetime | None:
        """When the newest complete snapshot's pass began."""
        return self.last_complete.started if self.last_complete else None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SidecarStatus:
        """Parse ``status --json`` once; absent or malformed fields read as unknown."""
        raw_daemon = data.get("daemon")
        daemon: Mapping[str, Any] = raw_daemon if isinstance(raw_daemon, Mapping) else {}
        epoch, snapshots = data.get("epoch"), data.get("snapshots")
        secrets, good = data.get("secrets_present"), data.get("newest_verified")
        return cls(
            role=data.get("role") if data.get("role") in {"master", "slave"} else None,
            peer=data.get("peer") or None,
            epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
            running=data.get("running") is True,
            daemon_alive=daemon.get("alive") is True,
            heartbeat=daemon.get("heartbeat") or None,
            daemon_started_at=daemon.get("started_at") or None,
            watch=data.get("watch") or None,
            watch_note=_text(data.get("watch_note")),
            last_complete=PassSummary.from_json(data.get("last_complete")),
            last_pass=PassSummary.from_json(data.get("last_pass")),
            in_progress=PassSummary.from_json(data.get("in_progress")),
            last_error=ErrorNote.from_json(data.get("last_error")),
            snapshots=snapshots if isinstance(snapshots, int) else None,
            current=data.get("current") or None,
            last_contact=data.get("last_contact") or None,
            secrets_present=secrets if isinstance(secrets, bool) else None,
            layout=dict(found) if isinstance(found := data.get("layout"), Mapping) else {},
            newest_verified=dict(good) if isinstance(good, Mapping) else None,
        )

    def to_json(self) -> dict[str, Any]:
        def summary(item: PassSummary | None) -> dict[str, Any] | None:
            return item.to_json() if item else None

        return {
            "role": self.role,
            "peer": self.peer,
            "epoch": self.epoch,
            "running": self.running,
            "daemon": {
                "alive": self.daemon_alive,
                "heartbeat": self.heartbeat,
                "started_at": self.daemon_started_at,
            },
            "watch": self.watch,
            "watch_note": self.watch_note,
            "last_complete": summary(self.last_complete),
            "last_pass": summary(self.last_pass),
            "in_progress": summary(self.in_progress),
            "last_error": self.last_error.to_json() if self.last_error else None,
            "snapshots": self.snapshots,
            "current": self.current,
            "last_contact": self.last_contact,
            "secrets_present": self.secrets_present,
            "newest_verified": self.newest_verified,
            "layout": dict(self.layout),
        }
