"""The stack's services on a host: the gitlab-rsync sidecar (its ``gitlab-sync`` CLI) and GitLab."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from gitlab_sync.layout import Layout
from gitlab_sync.status import SidecarStatus
from gitlab_sync.waits import wait_until
from ops.errors import HostError, SidecarError
from ops.hosts.engine import ContainerNotRunning, Engine, ExecResult

SERVICE = "gitlab-rsync"
GITLAB = "gitlab"
VERIFIER = "gitlab-verify"
"""The service that verifies the slave's snapshots on a schedule (:mod:`ops.dr.verify_schedule`)."""


ERROR_PREFIX = "gitlab-sync: error: "


def _failed(engine: Engine, verb: str, result: ExecResult) -> SidecarError:
    said = result.stderr.decode(errors="replace").strip().splitlines()
    reason = said[-1].removeprefix(ERROR_PREFIX) if said else f"exit {result.exit_code}"
    return SidecarError(f"{engine.host}: gitlab-sync {verb} failed: {reason}")


def run(engine: Engine, *args: str, timeout: float = 120.0) -> str:
    """``gitlab-sync ARGS`` in the host's sidecar: its stdout, or a SidecarError saying why."""
    result = engine.exec(SERVICE, ["gitlab-sync", *args], timeout=timeout)
    if result.exit_code != 0:
        raise _failed(engine, args[0], result)
    return result.stdout.decode(errors="replace")


def run_json(engine: Engine, *args: str, timeout: float = 120.0) -> Any:
    """``gitlab-sync ARGS --json``, parsed."""
    out = run(engine, *args, "--json", timeout=timeout)
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        raise SidecarError(f"{engine.host}: gitlab-sync {args[0]} did not print JSON") from exc


def add(engine: Engine, peer: str, role: str, peer_key: str, epoch: int) -> None:
    """``gitlab-sync add``: the host's sidecar becomes the ``role`` of ``peer`` at ``epoch``,
    trusting ``peer_key`` (replacing any earlier pairing)."""
    run(engine, "add", peer, "--role", role, "--peer-key", peer_key, "--epoch", str(epoch))


def status(engine: Engine, timeout: float = 120.0) -> SidecarStatus:
    """The sidecar's ``gitlab-sync status``, parsed once into the shared typed record."""
    data = run_json(engine, "status", timeout=timeout)
    if not isinstance(data, dict):
        raise SidecarError(f"{engine.host}: gitlab-sync status did not print a JSON object")
    return SidecarStatus.from_json(data)


def layout(engine: Engine, timeout: float = 60.0) -> Layout:
    """The host's layout as its sidecar reads it from its mounts (``gitlab-sync layout``).

    Exit 1 is the sidecar's way of saying that btrfs is set up wrongly: the problems are its
    stderr lines (or the JSON, when it printed one too), not a failed command.
    """
    result = engine.exec(SERVICE, ["gitlab-sync", "layout", "--json"], timeout=timeout)
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        data = None
    if result.exit_code in {0, 1} and isinstance(data, dict) and "method" in data:
        return Layout.from_json(data)
    if result.exit_code == 1:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        problems = [p.removeprefix(ERROR_PREFIX) for p in said if p.strip()]
        if problems:
            why = "btrfs is set up wrongly: " + "; ".join(problems)
            return Layout("fallback", why, problems, None, None)
    if result.exit_code == 0:
        raise SidecarError(f"{engine.host}: gitlab-sync layout did not print a layout")
    raise _failed(engine, "layout", result)


def restart(
    engine: Engine,
    timeout: float = 120.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Restart the host's sidecar, so that its mounts are made again from the host's folders
    (after a restore replaced GITLAB_HOME by a new subvolume, the running container still has
    the old one at /source); wait until its daemon has started anew and return when it did."""
    try:
        before = status(engine).daemon_started_at
    except (ContainerNotRunning, SidecarError):
        before = None  # not running: the restart starts it
    engine.restart(SERVICE)

    def started() -> str:
        """When the new daemon started ("" while it has not)."""
        try:
            now = status(engine)
        except ContainerNotRunning:
            return ""
        fresh = now.daemon_alive and now.daemon_started_at != before
        return (now.daemon_started_at or "") if fresh else ""

    return wait_until(
        started,
        timeout=timeout,
        what=f"{engine.host}'s gitlab-rsync to start again",
        interval=0.5,
        error=SidecarError,
        clock=clock,
        sleep=sleep,
    )


def stop_slave_gitlab(engine: Engine, timeout: float = 120.0) -> str:
    """Stop the slave's GitLab if it runs; a sentence when it did ("" when it was not running).

    A slave's GitLab never runs: it would serve its old data, and a running container keeps
    the GITLAB_HOME it mounted when it started, so after a restore put a snapshot in its place
    it would still run on the old one, and "already running" would hide that. It runs on a
    slave when the old master, dead when it was fenced (its restart policy left as it was),
    came back with its GitLab and was made the slave again (``inv rebuild-slave --reuse``)."""
    if not engine.stop(GITLAB, timeout=timeout):
        return ""
    return f"{engine.host}: GitLab was running on this slave's old data; stopped"


def same_key(a: str, b: str) -> bool:
    """Whether two OpenSSH public key lines hold the same key (comments aside)."""
    return a.split()[:2] == b.split()[:2]


HEALTHCHECK = ("/opt/gitlab/bin/gitlab-healthcheck", "--fail", "--max-time", "5")

HEALTH_POLL = 0.1
"""Seconds between two runs of GitLab's health check while promotion waits for it: each is an
exec over the relay (a tenth of a second or so), so the moment GitLab is up is seen within
about that, where half a second of sleep added a quarter of a second to the RTO on average."""


def wait_gitlab_healthy(
    engine: Engine,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = HEALTH_POLL,
) -> float:
    """Run GitLab's own health check (the Compose one) every ``interval`` s until it passes; the
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
        interval=interval,
        error=not_healthy,
        clock=clock,
        sleep=sleep,
    )
    return clock() - start
