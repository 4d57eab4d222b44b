"""What the OpenSSH client says when it fails, sorted into kinds: the one table of its messages.

ssh exits 255 and leaves a line or two on stderr. :func:`classify` names the failure; each
caller turns the kind into its own sentence (``ops.hosts.ssh`` for the operator's ssh to a host,
``gitlab_sync.keys`` for the master's ssh to the slave's receiver). Standard library only: the
sidecar runs it in its container, and ``ops`` imports it.
"""

from __future__ import annotations

import enum
from collections.abc import Collection


class SshFailure(enum.Enum):
    """Why an ssh failed, as far as its messages tell."""

    HOST_KEY_CHANGED = "the host presented another key than the one known for it"
    HOST_KEY_UNKNOWN = "no key is known for the host"
    KEY_REFUSED = "the host refused the client's key"
    KEY_UNUSABLE = "the client's key could not be loaded"
    CONNECTION_REFUSED = "nothing listens on that port"
    TIMED_OUT = "no answer in time"
    NO_ROUTE = "no route to the host"
    UNRESOLVED = "the host name does not resolve"
    CLOSED = "the server closed the connection before SSH began"


MESSAGES: tuple[tuple[SshFailure, tuple[str, ...]], ...] = (
    (
        SshFailure.HOST_KEY_CHANGED,
        ("remote host identification has changed", "has changed and you have"),
    ),
    (SshFailure.HOST_KEY_UNKNOWN, ("host key verification failed", "host key is known")),
    (SshFailure.KEY_REFUSED, ("permission denied",)),
    (SshFailure.KEY_UNUSABLE, ("load key", "invalid format", "passphrase")),
    (SshFailure.CONNECTION_REFUSED, ("connection refused",)),
    (SshFailure.TIMED_OUT, ("timed out",)),
    (SshFailure.NO_ROUTE, ("no route to host", "network is unreachable")),
    (SshFailure.UNRESOLVED, ("could not resolve", "name or service not known")),
    (SshFailure.CLOSED, ("kex_exchange", "connection reset", "connection closed")),
)
"""What ssh writes (lower case) for each kind, in the order they are tried: the first wins."""


def classify(stderr: str, among: Collection[SshFailure] = tuple(SshFailure)) -> SshFailure | None:
    """The first kind in :data:`MESSAGES` (of those in ``among``) that ``stderr`` shows; None
    when none does."""
    text = stderr.lower()
    for kind, needles in MESSAGES:
        if kind in among and any(needle in text for needle in needles):
            return kind
    return None
