"""The gitlab-rsync sidecar on a host, driven through its ``gitlab-sync`` CLI."""

from __future__ import annotations

import json
from typing import Any

from ops.errors import SyncError
from ops.hosts import Engine

SERVICE = "gitlab-rsync"
GITLAB = "gitlab"


def run(engine: Engine, *args: str, timeout: float = 120.0) -> str:
    """``gitlab-sync ARGS`` in the host's sidecar; its stdout, or a SyncError with its message."""
    result = engine.exec(SERVICE, ["gitlab-sync", *args], timeout=timeout)
    if result.exit_code != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        reason = (
            said[-1].removeprefix("gitlab-sync: error: ") if said else f"exit {result.exit_code}"
        )
        raise SyncError(f"{engine.host}: gitlab-sync {args[0]} failed: {reason}")
    return result.stdout.decode(errors="replace")


def run_json(engine: Engine, *args: str, timeout: float = 120.0) -> Any:
    """``gitlab-sync ARGS --json``, parsed."""
    out = run(engine, *args, "--json", timeout=timeout)
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        raise SyncError(f"{engine.host}: gitlab-sync {args[0]} did not print JSON") from exc


def same_key(a: str, b: str) -> bool:
    """Whether two OpenSSH public key lines hold the same key (comments aside)."""
    return a.split()[:2] == b.split()[:2]
