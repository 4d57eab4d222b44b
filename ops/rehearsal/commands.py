"""Run an Invoke task as a command, as an operator would: ``python -m invoke TASK ...``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def inv(
    *args: str,
    env_file: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """The task's exit code and output; settings only from ``env_file`` and ``extra_env``.

    The caller's AWS_* variables and ENV_FILE are dropped, so a developer's own AWS profile or
    settings never leak in. A task still running after ``timeout`` s raises TimeoutExpired.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "ENV_FILE"}
    if env_file is not None:
        env["ENV_FILE"] = str(env_file)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
