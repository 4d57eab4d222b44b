"""A host's Docker engine and the Compose stack on it: services, their state, exec, one-offs.

:meth:`Engine.open` connects over SSH (:mod:`ops.hosts.relay`, after a preflight); services are
deployed with :meth:`Engine.up` and :meth:`Engine.create` (:mod:`ops.hosts.compose`) and found by
their Compose labels. :meth:`Engine.exec` runs a command in a service's container, hijacking the
exec's stream as the docker CLI does, so stdin can be ended and both streams come back apart.

:meth:`Engine.start` starts a container :meth:`Engine.create` made, with one API call on the
relay that is already open, where ``docker-compose up`` starts a Python program (half a second
before its first call) that makes its own connections through the relay and a dozen calls:
seconds, on promotion's path. It starts the container only when its
``com.docker.compose.config-hash`` label is what ``docker-compose config --hash`` gives now (the
same settings, stack file and image id); when they differ it runs ``up``, which makes the
container again from the stack, as promotion always did. Refusing instead would stop a disaster
recovery for something ``up`` repairs; starting anyway would start GitLab on a configuration the
stack no longer says. The hash costs a Compose run too, so :meth:`Engine.expect` reads it in the
background while other work goes on.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from gitlab_sync.waits import wait_until
from ops.errors import HostError, OpsError
from ops.hosts.compose import COMPOSE_TIMEOUT, PROJECT_LABEL, STACK_FILE, compose, compose_project
from ops.hosts.exec_stream import exchange, start_exec
from ops.hosts.relay import LocalDockerClient, SSHDockerClient, connect
from ops.hosts.ssh import Host, LocalHost, last_line
from ops.settings import Settings

EXEC_TIMEOUT = 120.0
"""Seconds a command run with :meth:`Engine.exec` may take, by default."""

LOCAL_SOCKET = "unix:///var/run/docker.sock"
"""The engine's socket where :meth:`Engine.local` finds it (the stack mounts it there)."""

ONE_OFF_LABEL = "gitlab-dr.one-off"
"""The label of a container :meth:`Engine.run_once` made; its value is the run's name."""

CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
"""The label Compose puts on a service's container: the hash of the configuration it was made
from (``docker-compose config --hash SERVICE`` says what it would be now)."""


class ContainerNotRunning(HostError):
    """A command could not be run in a service's container because it is not running (yet)."""


class ExecResult(NamedTuple):
    """What a command run in a container did."""

    exit_code: int
    stdout: bytes
    stderr: bytes


def labelled(client: docker.DockerClient, *labels: str, stopped: bool = True) -> list[Container]:
    """The containers carrying every one of ``labels`` (``key=value``), stopped ones too unless
    ``stopped`` is False. The SDK inspects each container it lists: one removed in between
    (a one-off ending, a teardown) is left out, not an error."""
    found = client.containers.list(
        all=stopped, filters={"label": list(labels)}, ignore_removed=True
    )
    return list(found)


@dataclass(frozen=True)
class ServiceState:
    """One Compose service's container on a host, as the engine reports it."""

    service: str
    container: str
    id: str
    state: str
    health: str | None
    image: str


def _state_of(container: Container) -> ServiceState:
    attrs: dict[str, Any] = container.attrs
    state = attrs.get("State") or {}
    health = state.get("Health") or {}
    return ServiceState(
        service=container.labels.get("com.docker.compose.service", ""),
        container=container.name or "",
        id=container.id or "",
        state=str(state.get("Status", "unknown")),
        health=health.get("Status") if state.get("Status") == "running" else None,
        image=str((attrs.get("Config") or {}).get("Image", "")),
    )


class Engine:
    """A host's Docker engine over SSH and the Compose stack on it.

    ``Engine.open(host, settings)`` connects (after a preflight); the stack's services are
    deployed with :meth:`up` and :meth:`create` and found by their Compose labels.
    """

    def __init__(
        self,
        host: Host,
        settings: Settings,
        client: SSHDockerClient | LocalDockerClient,
        compose_file: Path = STACK_FILE,
    ) -> None:
        self.host = host
        self.settings = settings
        self.client = client
        self.compose_file = compose_file
        self.project = compose_project(settings)
        self._hashes: dict[str, Future[str]] = {}
        self._background: ThreadPoolExecutor | None = None

    @classmethod
    def open(cls, host: Host, settings: Settings, compose_file: Path = STACK_FILE) -> Engine:
        """Connect to ``host`` (see :func:`connect`)."""
        compose_project(settings)  # a bad PROJECT_NAME stops us before anything is opened
        return cls(host, settings, connect(host, settings), compose_file)

    @classmethod
    def local(cls, settings: Settings, socket: str = LOCAL_SOCKET) -> Engine:
        """The engine of the host we run on, through its ``socket`` (no ssh): for a service of
        the stack given the socket."""
        compose_project(settings)
        host = LocalHost("this host", "localhost", socket=socket)
        try:
            client = LocalDockerClient(host, socket)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise HostError(
                f"{host}: the Docker engine at {socket} does not answer: {exc}"
            ) from exc
        return cls(host, settings, client)

    def close(self) -> None:
        """Close the client and stop its ssh processes (a hash still being read fails)."""
        if self._background is not None:
            self._background.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Turn what the SDK or the transport raise into a one-line :class:`HostError`."""
        try:
            yield
        except OpsError:
            raise
        except docker.errors.APIError as exc:
            cause = exc.explanation or str(exc)
            raise HostError(f"{self.host}: {what} failed: {last_line(str(cause))}") from exc
        except (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            OSError,
        ) as exc:
            cause = self.client.ssh_error(self.settings) or last_line(str(exc))
            raise HostError(f"{self.host}: {what} failed: {cause or type(exc).__name__}") from exc

    def _compose(self, args: Sequence[str], timeout: float) -> str:
        return compose(
            self.settings, args, client=self.client, compose_file=self.compose_file, timeout=timeout
        )

    @staticmethod
    def _services(services: Sequence[str]) -> list[str]:
        if isinstance(services, str) or not services:
            raise ValueError("name the services: a slave's gitlab must never start by accident")
        return list(services)

    def up(self, services: Sequence[str], *, timeout: float = COMPOSE_TIMEOUT) -> None:
        """Create (or update) and start ``services`` (``docker-compose up -d``)."""
        self._compose(["up", "--detach", *self._services(services)], timeout)

    def create(self, services: Sequence[str], *, timeout: float = COMPOSE_TIMEOUT) -> None:
        """Create (or update) ``services`` without starting them (``up --no-start``)."""
        self._compose(["up", "--no-start", *self._services(services)], timeout)

    def config_hash(self, service: str) -> str:
        """The configuration hash Compose would label ``service``'s container with now
        (``docker-compose config --hash``: the settings, the stack file and the image's id)."""
        out = self._compose(["config", "--hash", service], 60)
        for line in out.splitlines():
            name, _, value = line.strip().partition(" ")
            if name == service and value.strip():
                return value.strip()
        raise HostError(f"{self.host}: docker-compose config --hash gave no hash for {service}")

    def expect(self, service: str) -> None:
        """Begin reading ``service``'s :meth:`config_hash` in the background, for a
        :meth:`start` to come (Compose's own start-up is then not on the caller's path)."""
        if service not in self._hashes:
            if self._background is None:
                self._background = ThreadPoolExecutor(1, thread_name_prefix="gitlab-dr-hash")
            self._hashes[service] = self._background.submit(self.config_hash, service)

    def _wanted_hash(self, service: str) -> str:
        """The hash :meth:`expect` read (read now when it was not asked, or failed)."""
        future = self._hashes.pop(service, None)
        if future is not None:
            with contextlib.suppress(OpsError):
                return future.result()
        return self.config_hash(service)

    def start(self, service: str, *, timeout: float = COMPOSE_TIMEOUT) -> str:
        """Start ``service``'s container, made by :meth:`create`; say how, in a sentence.

        Started through the SDK when its config-hash label is what the stack gives now (and left
        alone when it already runs); made again and started by :meth:`up` when it differs. A
        service with no container is a one-line HostError: it was never created (``inv pair``).
        """
        container = self.container(service)
        wanted = self._wanted_hash(service)
        if container.labels.get(CONFIG_HASH_LABEL) != wanted:
            self.up([service], timeout=timeout)
            return f"{service}: made again by docker-compose up (its configuration had changed)"
        if container.status == "running":
            return f"{service}: already running"
        with self._calls(f"starting {service}"):
            container.start()
        return f"{service}: started"

    def _containers(self, service: str | None = None) -> list[Container]:
        labels = [f"{PROJECT_LABEL}={self.project}", "com.docker.compose.oneoff=False"]
        if service is not None:
            labels.append(f"com.docker.compose.service={service}")
        with self._calls("listing containers"):
            return labelled(self.client, *labels)

    def restart(self, service: str, *, timeout: float = 30.0) -> None:
        """Restart ``service``'s container: its bind mounts are made again from the host's
        paths (a folder replaced since it started is then the one it sees)."""
        container = self.container(service)
        with self._calls(f"restarting {service}"):
            container.restart(timeout=int(timeout))

    def stop(self, service: str, *, timeout: float = 120.0) -> bool:
        """Stop ``service``'s container if it runs (``timeout`` s before it is killed); whether
        it was running."""
        container = self.container(service)
        if container.status != "running":
            return False
        with self._calls(f"stopping {service}"):
            container.stop(timeout=int(timeout))
        return True

    def ps(self) -> list[ServiceState]:
        """The stack's containers on this host, by service name."""
        return sorted((_state_of(c) for c in self._containers()), key=lambda s: s.service)

    def container(self, service: str) -> Container:
        """The container of ``service``, found by its Compose labels."""
        found = self._containers(service)
        if not found:
            raise HostError(f"{self.host}: no container for service {service} ({self.project})")
        if len(found) > 1:
            raise HostError(f"{self.host}: {len(found)} containers for service {service}")
        return found[0]

    def state(self, service: str) -> ServiceState:
        """The state and health of ``service``'s container."""
        return _state_of(self.container(service))

    def health(self, service: str) -> str | None:
        """``healthy``, ``unhealthy`` or ``starting``; None when not running or no healthcheck."""
        return self.state(service).health

    def wait_healthy(
        self,
        service: str,
        *,
        timeout: float,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> ServiceState:
        """Wait until ``service`` is healthy; a HostError says its last state after ``timeout``,
        or at once when it is neither running nor on its way to."""
        seen: list[ServiceState] = []

        def not_healthy(state: ServiceState) -> HostError:
            shown = state.state + (f", {state.health}" if state.health else "")
            return HostError(f"{self.host}: {service} not healthy after {timeout:g}s ({shown})")

        def healthy() -> bool:
            current = self.state(service)
            seen[:] = [current]
            if current.state not in {"running", "created", "restarting"}:
                raise not_healthy(current)
            return current.health == "healthy"

        wait_until(
            healthy,
            timeout=timeout,
            what=f"{service} to be healthy",
            interval=interval,
            error=lambda _: not_healthy(seen[-1]),
            clock=clock,
            sleep=sleep,
        )
        return seen[-1]

    def run_once(self, name: str, image: str, argv: Sequence[str], volumes: dict[str, str]) -> str:
        """Run a one-off container of ``image`` called ``PROJECT-NAME``; return its stdout.

        ``volumes`` maps host paths to container paths, mounted read-write; it has no network
        (none to set up makes its start shorter). The container has the stack's project label
        (what removes the stack removes it) and the label ``gitlab-dr.one-off=NAME``. A leftover
        of an earlier run that was cut short is removed first, and this run's container is
        removed, with its anonymous volumes, however the run ends. A non-zero exit is a one-line
        HostError with the last line it wrote to stderr.
        """
        if not re.fullmatch(r"[a-z0-9][-a-z0-9]*", name):
            raise ValueError(f"a one-off's name is lower-case letters, digits and '-': {name!r}")
        with self._calls(f"running {image} {argv[0]}"):
            self._remove_one_off(name)
            container = self._create_one_off(name, image, argv, volumes)
            try:
                container.start()
                status = int(container.wait()["StatusCode"])
                if status != 0:
                    said = bytes(container.logs(stdout=False, stderr=True))
                    raise HostError(
                        f"{self.host}: {image} {argv[0]} exited {status}: "
                        f"{last_line(said.decode('utf-8', 'replace')) or 'no message'}"
                    )
                out = bytes(container.logs(stdout=True, stderr=False))
            finally:
                container.remove(force=True, v=True)
        return out.decode("utf-8", "replace")

    def one_off_name(self, name: str) -> str:
        """The container name of :meth:`run_once`'s one-off ``name`` on this stack."""
        return f"{self.project}-{name}"

    def _remove_one_off(self, name: str) -> None:
        """Remove the one-off ``name`` an earlier run left behind (killed before it could)."""
        try:
            left = self.client.containers.get(self.one_off_name(name))
        except docker.errors.NotFound:
            return
        if left.labels.get(PROJECT_LABEL) != self.project or left.labels.get(ONE_OFF_LABEL) != name:
            raise HostError(
                f"{self.host}: a container named {self.one_off_name(name)} is in the way and is "
                f"not this stack's one-off {name}: remove it"
            )
        left.remove(force=True, v=True)

    def _create_one_off(
        self, name: str, image: str, argv: Sequence[str], volumes: dict[str, str]
    ) -> Container:
        """Create (not start) the one-off ``name``, pulling ``image`` if the host lacks it."""
        options: dict[str, Any] = {
            "name": self.one_off_name(name),
            "labels": {PROJECT_LABEL: self.project, ONE_OFF_LABEL: name},
            "volumes": {host: {"bind": path, "mode": "rw"} for host, path in volumes.items()},
            "network_mode": "none",  # it works on the host's folders: no network to set up
        }
        try:
            return self.client.containers.create(image, list(argv), **options)
        except docker.errors.ImageNotFound:
            self.client.images.pull(image)
            return self.client.containers.create(image, list(argv), **options)

    def logs(self, service: str, lines: int = 100) -> str:
        """The last ``lines`` lines ``service``'s container wrote (stdout and stderr)."""
        container = self.container(service)
        with self._calls(f"reading {service}'s logs"):
            data: bytes = container.logs(stdout=True, stderr=True, tail=lines)
        return data.decode("utf-8", "replace")

    def exec(
        self,
        service: str,
        argv: Sequence[str],
        stdin: bytes | None = None,
        *,
        timeout: float = EXEC_TIMEOUT,
    ) -> ExecResult:
        """Run ``argv`` in ``service``'s container; return its exit status, stdout and stderr.

        ``argv`` is a list of words, never a shell string; secrets go in ``stdin`` (ended after
        it is sent), never in ``argv``. A container that is not running (created, restarting)
        is a :class:`ContainerNotRunning`. A command still running after ``timeout`` seconds is
        a HostError (it is left to finish in the container).
        """
        if isinstance(argv, str) or not argv:
            raise ValueError("argv is a non-empty list of words, not a shell string")
        container = self.container(service)
        deadline = time.monotonic() + timeout
        what = f"exec {argv[0]} in {service}"
        with self._calls(what):
            api = self.client.api
            try:
                exec_id = api.exec_create(
                    container.id, list(argv), stdout=True, stderr=True, stdin=stdin is not None
                )["Id"]
            except docker.errors.APIError as exc:
                said = str(exc.explanation or exc)
                if exc.status_code == 409 and ("not running" in said or "restarting" in said):
                    raise ContainerNotRunning(
                        f"{self.host}: {what} failed: {last_line(said)}"
                    ) from exc
                raise
            sock, received = start_exec(self.client.socket_path, api.api_version, exec_id, deadline)
            try:
                stdout, stderr = exchange(sock, received, stdin, deadline)
            except TimeoutError:
                raise HostError(f"{self.host}: {what} still running after {timeout:g}s") from None
            finally:
                sock.close()
            while True:
                info = api.exec_inspect(exec_id)
                if not info.get("Running") and info.get("ExitCode") is not None:
                    return ExecResult(int(info["ExitCode"]), stdout, stderr)
                if time.monotonic() >= deadline:
                    raise HostError(f"{self.host}: {what} still running after {timeout:g}s")
                time.sleep(0.05)
