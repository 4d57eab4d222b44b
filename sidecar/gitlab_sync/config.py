"""Where the sidecar keeps things, its tunables, and the pairing that survives restarts.

Standard library only: this package runs inside the gitlab-rsync image and is also imported by
``ops`` on the operator's machine (durations, the status schema).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from gitlab_sync.retention import Tiers

Role = Literal["master", "slave"]
Log = Callable[[str], None]
"""Where the sidecar says what it does, one line at a time (the daemon's log, stderr)."""


class SyncError(Exception):
    """A refusal or failure with a one-line message for the user (exit code 1 at the CLI)."""


QUOTE_MAX = 80


def quoted(text: str, limit: int = QUOTE_MAX) -> str:
    """``text`` as a message may echo a peer's words: quoted, on one line, at most ``limit``
    characters of it, and ``...`` when it was cut."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


@dataclass(frozen=True)
class Paths:
    """The sidecar's three areas (overridable by environment for tests outside a container)."""

    state: Path  # pairing, keys, status: a volume of its own
    source: Path  # the master's GITLAB_HOME, read-only
    sync: Path  # the slave's snapshots

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        return cls(
            state=Path(env.get("GITLAB_SYNC_STATE", "/state")),
            source=Path(env.get("GITLAB_SYNC_SOURCE", "/source")),
            sync=Path(env.get("GITLAB_SYNC_AREA", "/sync")),
        )

    @property
    def ssh(self) -> Path:
        return self.state / "ssh"

    @property
    def pairing(self) -> Path:
        return self.state / "pairing.json"

    @property
    def passes(self) -> Path:
        return self.state / "passes.json"

    @property
    def daemon(self) -> Path:
        return self.state / "daemon.json"

    @property
    def receiver(self) -> Path:
        return self.state / "receiver.json"

    @property
    def tunables(self) -> Path:
        return self.state / "tunables.json"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` → seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError("a duration like 90s, 15m, 2h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Tunables:
    """How often and how the sidecar syncs (non-secret; from the container's environment)."""

    interval: float = 300.0  # full pass period
    batch: float = 0.2  # quiet time closing a batch of events
    max_delay: float = 1.0  # longest a batch waits once it has an event
    bwlimit: int = 0  # KiB/s, 0 = none
    # Retention (gitlab_sync.retention): every snapshot younger than keep_all, the newest of
    # each minute, hour and UTC day younger than the next three, at most keep_max (0: no cap).
    keep_all: float = Tiers.every
    keep_minutely: float = Tiers.minutely
    keep_hourly: float = Tiers.hourly
    keep_daily: float = Tiers.daily
    keep_max: int = Tiers.most

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tunables:
        env = os.environ if environ is None else environ
        base = cls()
        retired = [name for name in RETIRED if name in env]
        if retired:
            raise SyncError(f"{' and '.join(retired)}: {RETIRED_WHY}")

        def span(name: str, default: float) -> float:
            return parse_duration(env.get(name, f"{default:g}"))

        try:
            return cls(
                interval=parse_duration(env.get("SYNC_INTERVAL", "300")),
                batch=parse_duration(env.get("SYNC_BATCH", str(base.batch))),
                max_delay=parse_duration(env.get("SYNC_MAX_DELAY", str(base.max_delay))),
                bwlimit=int(env.get("SYNC_BWLIMIT", "0")),
                keep_all=span("SNAPSHOT_KEEP_ALL", base.keep_all),
                keep_minutely=span("SNAPSHOT_KEEP_MINUTELY", base.keep_minutely),
                keep_hourly=span("SNAPSHOT_KEEP_HOURLY", base.keep_hourly),
                keep_daily=span("SNAPSHOT_KEEP_DAILY", base.keep_daily),
                keep_max=_count(env.get("SNAPSHOT_KEEP_MAX", "0")),
            )
        except ValueError as exc:
            raise SyncError(f"bad sidecar setting: {exc}") from None

    @classmethod
    def saved(cls, paths: Paths) -> Tunables:
        """The daemon's tunables, as it saved them: sshd gives the receiver no environment.
        Fields an older version saved and this one lacks are left out."""
        data = read_json(paths.tunables)
        if not isinstance(data, dict):
            return cls.from_env()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def tiers(self) -> Tiers:
        return Tiers(
            every=self.keep_all,
            minutely=self.keep_minutely,
            hourly=self.keep_hourly,
            daily=self.keep_daily,
            most=self.keep_max,
        )


RETIRED = ("SNAPSHOT_KEEP", "SNAPSHOT_MAX_AGE")
RETIRED_WHY = (
    "no longer read: retention is by tiers, SNAPSHOT_KEEP_ALL, SNAPSHOT_KEEP_MINUTELY, "
    "SNAPSHOT_KEEP_HOURLY and SNAPSHOT_KEEP_DAILY (SNAPSHOT_KEEP_MAX caps the count)"
)
"""The settings retention by tiers replaced, refused rather than read with another meaning: a
count of 24 kept 24 seconds of history at a pass a second."""


def _count(text: str) -> int:
    if not (text.strip().isascii() and text.strip().isdigit()):
        raise ValueError(f"a whole number of snapshots (0: no limit), not {text!r}")
    return int(text)


_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_IPV6 = re.compile(r"^\[([0-9A-Fa-f:.]+)\]$")


@dataclass(frozen=True)
class Peer:
    """The other side: where the master sends to, or which master the slave accepts."""

    host: str
    port: int = 2222

    @classmethod
    def parse(cls, text: str) -> Peer:
        """``host``, ``host:port`` or ``[v6]:port``; a ``user:password@`` part is refused."""
        if "@" in text:
            raise SyncError(
                f"malformed peer {text!r}: give host[:port]; pairing uses keys, not user:password"
            )
        host, port = text, "2222"
        if text.startswith("["):
            head, _, rest = text.partition("]")
            host, port = head + "]", rest[1:] if rest.startswith(":") else port
            if rest and not rest.startswith(":"):
                raise SyncError(f"malformed peer {text!r}: expected host[:port]")
        elif text.count(":") == 1:
            host, port = text.split(":")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise SyncError(f"malformed peer {text!r}: the port must be a number from 1 to 65535")
        if not (_HOST.match(host) or _IPV6.match(host)) or len(host) > 253:
            raise SyncError(f"malformed peer {text!r}: {host!r} is not a host name or address")
        return cls(host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Pairing:
    """What ``gitlab-sync add`` recorded, plus the running/stopped switch (master only)."""

    role: Role
    peer: Peer
    peer_key: str  # master: the slave's host key; slave: the master's client key
    epoch: int = 1
    running: bool = False
    added_at: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["peer"] = str(self.peer)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pairing:
        return cls(
            role=data["role"],
            peer=Peer.parse(data["peer"]),
            peer_key=data["peer_key"],
            epoch=int(data.get("epoch", 1)),
            running=bool(data.get("running", False)),
            added_at=str(data.get("added_at", "")),
        )

    def with_running(self, running: bool) -> Pairing:
        return replace(self, running=running)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def write_text(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename).

    The temporary file's name is unique to this call: the daemon, the CLI and the sender thread
    write the same files (``known_hosts``, ``passes.json``) at the same moments.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write ``data`` as JSON to ``path`` atomically (see :func:`write_text`)."""
    write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n", mode)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None if there is no such file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def load_pairing(paths: Paths) -> Pairing | None:
    data = read_json(paths.pairing)
    return Pairing.from_json(data) if data else None


def save_pairing(paths: Paths, pairing: Pairing) -> None:
    write_json(paths.pairing, pairing.to_json())
