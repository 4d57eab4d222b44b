"""What one host of the pair shows: its containers and its sidecar's typed status, or why not.

``inv status`` and promotion read hosts through :func:`look`, once each, and judge from the
immutable :class:`HostView` it returns; a host that cannot be reached is a view with an error.
"""

from __future__ import annotations

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


def look(side: Side | Absent, read_sync: bool = True) -> HostView:
    """Read one host (its sidecar's status too, when ``read_sync`` and the sidecar runs); a
    missing host or any failure to reach it is recorded, not raised."""
    if isinstance(side, Absent):
        return HostView(side.role, "", side.reason)
    try:
        with Engine.open(side.host, side.settings) as engine:
            services = tuple(engine.ps())
            sync = None
            running = any(s.service == sidecar.SERVICE and s.state == "running" for s in services)
            if read_sync and running:
                sync = sidecar.status(engine)
            return HostView(side.role, str(side.host), "", services, sync)
    except OpsError as exc:
        return HostView(side.role, str(side.host), str(exc))
