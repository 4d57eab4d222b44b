"""The Compose stack: the one place ``docker-compose`` runs.

``compose/docker-compose.yml`` is the single source of truth for how containers are made: it is
deployed with ``docker-compose`` (Debian's 1.29, or a v2 binary of that name) with
``-p PROJECT_NAME`` and the settings as its environment, and no other environment. Containers
are then found with the SDK by their Compose labels (``com.docker.compose.project`` and
``com.docker.compose.service``), never by name (:class:`ops.hosts.engine.Engine`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ops.errors import HostError, OpsError, SettingError
from ops.hosts.relay import LocalDockerClient, SSHDockerClient
from ops.settings import Settings

STACK_FILE = Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml"
"""The Compose stack deployed on every host."""

COMPOSE_TIMEOUT = 600.0
"""Seconds one docker-compose run may take (pulling or building images included)."""

PROJECT_LABEL = "com.docker.compose.project"
"""The label Compose puts on everything it makes for a project; its value is the project."""

_PROJECT = re.compile(r"[^-_a-z0-9]")

_PASSED_ENV = (
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "SSH_AUTH_SOCK",
    "DOCKER_CONFIG",
)


def compose_project(settings: Settings) -> str:
    """PROJECT_NAME as Compose labels containers with it (lower case, ``[-_a-z0-9]``)."""
    name = _PROJECT.sub("", settings.project_name.lower())
    if not name:
        raise SettingError(f"PROJECT_NAME {settings.project_name!r} has no usable character")
    return name


def compose_binary() -> str:
    """The path of ``docker-compose``; an OpsError saying how to install it when absent."""
    found = shutil.which("docker-compose")
    if found is None:
        raise OpsError("docker-compose is not installed: apt-get install docker-compose")
    return found


def compose(
    settings: Settings,
    args: Sequence[str],
    *,
    client: SSHDockerClient | LocalDockerClient | None = None,
    compose_file: Path = STACK_FILE,
    timeout: float = COMPOSE_TIMEOUT,
) -> str:
    """Run ``docker-compose`` on the stack file with the settings; return its standard output.

    With ``client`` it drives that host's engine through the client's socket (``DOCKER_HOST=
    unix://…``: over ssh, the relay's, with the same options and checks as the SDK); without, it
    touches no engine (``config``). Its environment is the settings' ``compose_env()`` and a few
    basics, nothing else of ours (no stray ``DOCKER_*`` or ``COMPOSE_*``), and a ``.env`` beside
    the file is not read. A failure is a one-line :class:`HostError`.
    """
    where = str(client.host) if client else "local"
    verb = args[0] if args else "?"
    with tempfile.TemporaryDirectory(prefix="gitlab-dr-compose-") as tmp:
        empty_env = Path(tmp) / "empty.env"
        empty_env.write_text("")
        env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
        env["PATH"] = os.environ.get("PATH", os.defpath)
        env.update(settings.compose_env())
        if client is not None:
            env["DOCKER_HOST"] = f"unix://{client.socket_path}"
        argv = [
            compose_binary(),
            "--ansi", "never",
            "--file", str(compose_file),
            "--project-name", compose_project(settings),
            "--env-file", str(empty_env),
            *args,
        ]  # fmt: skip
        try:
            done = subprocess.run(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                cwd=compose_file.parent,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HostError(f"{where}: docker-compose {verb} took more than {timeout:g}s") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace")
        message = compose_failure(said) or f"exit {done.returncode}"
        ssh = client.ssh_error(settings) if client is not None else None
        raise HostError(f"{where}: docker-compose {verb} failed: {ssh or message}")
    return done.stdout.decode("utf-8", "replace")


_SUMMARY = re.compile(r"^(ERROR: )?Encountered errors while bringing up the project\.?$")
_NOISE = re.compile(r"^ERROR: |\s*\([0-9a-f]{64}\)")
_LONGEST = 240


def compose_failure(stderr: str) -> str:
    """The line of docker-compose's ``stderr`` that says why it failed, on one line.

    Compose 1.29 ends a failed ``up`` with "Encountered errors while bringing up the project.",
    which says nothing; the cause is the ``ERROR: for <service>  …`` line before it. Its
    64-digit ids go, and a line still too long loses its middle: the cause is at its end.
    """
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    cause = [line for line in lines if not _SUMMARY.match(line)] or lines
    line = " ".join(_NOISE.sub("", cause[-1]).split()) if cause else ""
    if len(line) <= _LONGEST:
        return line
    half = (_LONGEST - 5) // 2
    return f"{line[:half]} ... {line[-half:]}"


def render_config(settings: Settings, compose_file: Path = STACK_FILE) -> str:
    """The stack as Compose resolves it with these settings (``docker-compose config``)."""
    return compose(settings, ["config"], compose_file=compose_file, timeout=60)
