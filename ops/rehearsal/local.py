"""The local Docker engine, as the sandbox and the tests use it: errors, the base image, removal.

Every removal here takes a container's anonymous volumes with it (``v=True``) and names the
volumes the container had, so that they can be removed too; :class:`Cleanup` tries every
removal, treats "already gone" as done, and keeps one line for each thing it could not remove.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from ops.errors import SandboxError
from ops.hosts.engine import labelled
from ops.progress import Progress

ROOT = Path(__file__).resolve().parents[2]

DockerFailure = (docker.errors.DockerException, requests.exceptions.RequestException)
"""What the Docker SDK raises when a call fails (the engine's answer, or no answer)."""


def explain(exc: BaseException) -> str:
    """The engine's reason for a failed call, in one line."""
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc)


@contextlib.contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Turn a failed Docker call into a :class:`SandboxError` naming ``what`` was done."""
    try:
        yield
    except DockerFailure as exc:
        raise SandboxError(f"{what} failed: {explain(exc)}") from exc


def local_engine() -> docker.DockerClient:
    """The local Docker engine (``DOCKER_HOST`` or its socket)."""
    with docker_errors("connecting to the local Docker engine"):
        return docker.from_env()


def base_image() -> str:
    """The local Debian base image (``scripts/base-image.sh`` builds one when none is present)."""
    try:
        done = subprocess.run(
            [str(ROOT / "scripts" / "base-image.sh")],
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr.strip().splitlines() or ["no message"])[-1]
        raise SandboxError(f"no base image: scripts/base-image.sh failed: {last}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"no base image: scripts/base-image.sh failed: {exc}") from exc
    return done.stdout.strip()


def volumes_of(container: Container) -> list[str]:
    """The names of the volumes ``container`` mounts, named and anonymous (not bind mounts)."""
    mounts = container.attrs.get("Mounts") or []
    return [m["Name"] for m in mounts if m.get("Type") == "volume" and m.get("Name")]


def remove_container(container: Container) -> None:
    """Remove ``container``, running or not, and its anonymous volumes (gone already: done)."""
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True, v=True)


@dataclass
class Cleanup:
    """Tries every removal; ``removed`` and ``left`` say what it did, one line each."""

    progress: Progress = lambda _line: None
    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def done(self, line: str) -> None:
        self.removed.append(line)
        self.progress(line)

    def failed(self, what: str, why: str) -> None:
        line = f"could not remove {what}: {why}"
        self.left.append(line)
        self.progress(line)

    def attempt(self, what: str, remove: Callable[[], None]) -> bool:
        """Run ``remove``; "already gone" counts as removed. False if ``what`` is left."""
        try:
            remove()
        except docker.errors.NotFound:
            pass  # already gone
        except DockerFailure as exc:
            self.failed(what, explain(exc))
            return False
        self.done(f"removed {what}")
        return True

    def containers(self, found: list[Container], kind: str = "container") -> list[str]:
        """Remove each container with its anonymous volumes; the names of the volumes it had."""
        volumes: list[str] = []
        for container in found:
            volumes += volumes_of(container)
            remove = functools.partial(container.remove, force=True, v=True)
            self.attempt(f"{kind} {container.name}", remove)
        return volumes

    def volumes(self, client: docker.DockerClient, names: list[str]) -> None:
        """Remove the volumes named (those of removed containers are mostly gone already)."""
        for name in dict.fromkeys(names):
            try:
                volume = client.volumes.get(name)
            except docker.errors.NotFound:
                continue  # an anonymous volume its container took along
            except DockerFailure as exc:
                self.failed(f"volume {name}", explain(exc))
                continue
            self.attempt(f"volume {name}", functools.partial(volume.remove, force=True))

    def project(self, client: docker.DockerClient, project: str) -> None:
        """Remove what Compose made for ``project``: containers, their volumes, networks."""
        label = f"com.docker.compose.project={project}"
        try:
            volumes = self.containers(labelled(client, label))
            for network in client.networks.list(filters={"label": label}):
                self.attempt(f"network {network.name}", network.remove)
            volumes += [v.name for v in client.volumes.list(filters={"label": label})]
        except DockerFailure as exc:
            self.failed(f"the stack {project}", f"listing it failed: {explain(exc)}")
            return
        self.volumes(client, volumes)
