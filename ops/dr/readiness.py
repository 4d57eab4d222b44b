"""GitLab's readiness over HTTP (``/-/readiness``): one probe and one wait.

Promotion's RTO ends when the public address answers ready, and the rehearsal's clients wait
for the same answer; both use these.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gitlab_sync.waits import wait_until
from ops.errors import OpsError

READY_POLL = 0.1
"""Seconds between two readiness probes: one local HTTP request each, so a short interval costs
little, and promotion's RTO ends within about that of GitLab answering ready."""


class NotReady(OpsError):
    """GitLab did not answer ready in time; the message gives the last reason."""


@dataclass(frozen=True)
class Readiness:
    """One answer of ``/-/readiness``: the HTTP status (0 when nothing answered) and body."""

    status: int
    body: Mapping[str, Any] | None = None
    error: str = ""

    @property
    def ready(self) -> bool:
        """GitLab's own test: HTTP 200 and ``"status": "ok"``."""
        return self.status == 200 and self.body is not None and self.body.get("status") == "ok"

    @property
    def reason(self) -> str:
        """Why it is not ready, in a sentence (empty when ready)."""
        if self.ready:
            return ""
        if self.status == 0:
            return f"no answer ({self.error})" if self.error else "no answer"
        messages = []
        for name, results in (self.body or {}).items():
            if not isinstance(results, list):
                continue
            for result in results:
                if isinstance(result, dict) and result.get("status") != "ok":
                    messages.append(f"{name}: {result.get('message', 'failed')}")
        detail = "; ".join(messages) or self.error or "no reason given"
        return f"HTTP {self.status}: {detail}"


def http_request(
    url: str, method: str = "GET", data: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One HTTP request: (status, body) for any HTTP answer, OSError when nothing answered."""
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (http only)
    if data is not None:
        request.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read())


def readiness(base_url: str, timeout: float = 5.0, all_checks: bool = True) -> Readiness:
    """Ask ``/-/readiness`` once (with ``?all=1``: every check and its message)."""
    url = f"{base_url.rstrip('/')}/-/readiness" + ("?all=1" if all_checks else "")
    try:
        status, raw = http_request(url, timeout=timeout)
    except OSError as exc:
        return Readiness(0, error=str(exc))
    try:
        body = json.loads(raw)
    except ValueError:
        return Readiness(status, error=raw.decode(errors="replace")[:200])
    return Readiness(status, body if isinstance(body, dict) else None)


def wait_ready(
    base_url: str,
    timeout: float,
    *,
    interval: float = READY_POLL,
    all_checks: bool = True,
    probe: Callable[[], Readiness] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    error: Callable[[str], Exception] = NotReady,
) -> float:
    """Poll readiness until it is green; returns the seconds waited.

    After ``timeout`` s raises ``error("GitLab at URL not ready after N s: LAST REASON")``.
    ``all_checks`` asks with ``?all=1``; ``probe`` replaces the HTTP request (tests).
    """
    ask = probe or (
        lambda: readiness(base_url, timeout=min(5.0, max(timeout, 0.1)), all_checks=all_checks)
    )
    start = clock()
    last: list[Readiness] = []

    def ready() -> bool:
        last[:] = [ask()]
        return last[0].ready

    def failed(_message: str) -> Exception:
        reason = last[0].reason if last else "not asked"
        return error(f"GitLab at {base_url} not ready after {clock() - start:.0f} s: {reason}")

    wait_until(
        ready,
        timeout=timeout,
        what=f"GitLab at {base_url} to answer ready",
        interval=interval,
        error=failed,
        clock=clock,
        sleep=sleep,
    )
    return clock() - start
