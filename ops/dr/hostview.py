"""What one host of the pair shows: its containers and its sidecar's typed status, or why not.

``inv status`` and promotion read hosts through :func:`look`, once each, and judge from the
immutable :class:`HostView` it returns; a host that cannot be reached is a view with an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from gitlab_sync.status import SidecarStatus
from ops.dr import sidecar
from ops.dr.topology import Absent, Side
from ops.errors import OpsError
from ops.hosts.engine import Engine, ServiceState


@dataclass(frozen=True)
class HostView:
    """One role's host: its containers and its sidecar's status, or the error that stopped us.

    ``target`` is empty when no host has the role (``error`` says why).
    """

    role: str
    target: str
    error: str = ""
    services: tuple[ServiceState, ...] = ()
    sync: SidecarStatus | None = None

    @property
    def found(self) -> bool:
        """Whether a host has the role at all (reached or not)."""
        return bool(self.target)

    def service(self, name: str) -> ServiceState | None:
        return next((s for s in self.services if s.service == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "target": self.target,
            "error": self.error,
            "services": [asdict(s) for s in self.services],
            "sync": self.sync.to_json() if self.sync else None,
        }


def look(side: Side | Absent, read_sync: bool = True, engine: Engine | None = None) -> HostView:
    """Read one host (its sidecar's status too, when ``read_sync`` and the sidecar runs); a
    missing host or any failure to reach it is recorded, not raised. ``engine``: the host's,
    already open (the caller keeps it and closes it); else one is opened for the read."""
    if isinstance(side, Absent):
        return HostView(side.role, "", side.reason)
    try:
        with (
            contextlib.nullcontext(engine) if engine else Engine.open(side.host, side.settings) as e
        ):
            services = tuple(e.ps())
            sync = None
            running = any(s.service == sidecar.SERVICE and s.state == "running" for s in services)
            if read_sync and running:
                sync = sidecar.status(e)
            return HostView(side.role, str(side.host), "", services, sync)
    except OpsError as exc:
        return HostView(side.role, str(side.host), str(exc))


def look_at_once(*reads: Callable[[], HostView]) -> list[HostView]:
    """Several hosts read at the same time (each over its own relay), so that reading the pair
    takes as long as its slower host, not the sum: an unreachable master's SSH timeout then
    hides the slave's read."""
    with ThreadPoolExecutor(len(reads), thread_name_prefix="gitlab-dr-look") as pool:
        return [future.result() for future in [pool.submit(read) for read in reads]]
