"""Run a piece of the sidecar's code in a user namespace of its own, where it may lower its own
inotify limits without touching the machine's (``unshare -Ur``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gitlab_sync

SIDECAR = str(Path(gitlab_sync.__file__).parent.parent)


def run_in_user_namespace(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c script args...`` as root of a new user namespace, the sidecar importable;
    the test is skipped where user namespaces are not allowed."""
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) is not installed")
    done = subprocess.run(
        ["unshare", "-Ur", sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SIDECAR},
        check=False,
    )
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"no user namespaces here: {done.stderr.strip()}")
    return done
