"""The stack's services on a host: the gitlab-rsync sidecar (its ``gitlab-sync`` CLI) and GitLab."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from gitlab_sync.status import SidecarStatus
from gitlab_sync.waits import wait_until
from ops.errors import HostError, SidecarError
from ops.hosts.engine import ContainerNotRunning, Engine

SERVICE = "gitlab-rsync"
GITLAB = "gitlab"


def run(engine: Engine, *args: str, timeout: float = 120.0) -> str:
    """``gitlab-sync ARGS`` in the host's sidecar: its stdout, or a SidecarError saying why."""
    result = engine.exec(SERVICE, ["gitlab-sync", *args], timeout=timeout)
    if result.exit_code != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        reason = (
            said[-1].removeprefix("gitlab-sync: error: ") if said else f"exit {result.exit_code}"
        )
        raise SidecarError(f"{engine.host}: gitlab-sync {args[0]} failed: {reason}")
    return result.stdout.decode(errors="replace")


def run_json(engine: Engine, *args: str, timeout: float = 120.0) -> Any:
    """``gitlab-sync ARGS --json``, parsed."""
    out = run(engine, *args, "--json", timeout=timeout)
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        raise SidecarError(f"{engine.host}: gitlab-sync {args[0]} did not print JSON") from exc


def status(engine: Engine, timeout: float = 120.0) -> SidecarStatus:
    """The sidecar's ``gitlab-sync status``, parsed once into the shared typed record."""
    data = run_json(engine, "status", timeout=timeout)
    if not isinstance(data, dict):
        raise SidecarError(f"{engine.host}: gitlab-sync status did not print a JSON object")
    return SidecarStatus.from_json(data)


def same_key(a: str, b: str) -> bool:
    """Whether two OpenSSH public key lines hold the same key (comments aside)."""
    return a.split()[:2] == b.split()[:2]


HEALTHCHECK = ("/opt/gitlab/bin/gitlab-healthcheck", "--fail", "--max-time", "5")


def wait_gitlab_healthy(
    engine: Engine,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Run GitLab's own health check (the Compose one) every half second until it passes; the
    seconds it took.

    Docker's health status would only say so after the check's interval (30 s); polling the
    same command gives the moment GitLab is really up. Only a GitLab on its way up is waited
    for (its container not running yet, or the check failing); anything else (no container,
    an unreachable host) fails at once with its own sentence.
    """
    start = clock()

    def healthy() -> bool:
        try:
            result = engine.exec(GITLAB, list(HEALTHCHECK), timeout=15)
        except ContainerNotRunning:
            return False  # created or restarting: still starting
        return result.exit_code == 0

    def not_healthy(_: str) -> HostError:
        state = engine.state(GITLAB).state
        return HostError(f"{engine.host}: GitLab not healthy after {timeout:g} s ({state})")

    wait_until(
        healthy,
        timeout=timeout,
        what="GitLab's health check",
        interval=0.5,
        error=not_healthy,
        clock=clock,
        sleep=sleep,
    )
    return clock() - start
