"""A real OpenSSH sshd in front of the local Docker engine: a stand-in host for the ssh:// path.

Each :class:`SshdHost` is a container from ``images/sandbox-host`` (Debian's openssh-server and
docker CLI on the local base image; the sandbox's "instances" run it too) with the engine's socket
bind-mounted, published on a 127.0.0.1 port. Its host key and the client key are made by the
test (``ssh-keygen`` in a temporary directory) and copied in before sshd starts; the test writes
the known_hosts file. Its settings are the defaults with the SSH ones pointing at it and a
project name of its own, so several hosts (a master and a slave) can share the one engine.

Use it as a pytest plugin (``pytest_plugins = ["tests.integration.sshd_host"]``): the fixtures
``sshd_hosts`` (a factory: ``sshd_hosts.start("slave")``) and ``sshd_host`` (one good host).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from ops import settings as settings_mod
from ops.hosts.engine import Host, compose_project
from ops.rehearsal.sandbox import tar_files
from ops.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SSHD_DIR = ROOT / "images" / "sandbox-host"
IMAGE = "gitlab-dr/sandbox-host:local"
LABEL = "gitlab-dr.test"
USER = "admin"

DockerOnHost = Literal["socket", "absent", "no-engine"]
"""What the host offers behind sshd: a working engine, no docker CLI, or a CLI with no engine."""


def base_image() -> str:
    """The local Debian base image (``scripts/base-image.sh`` builds one when none is present)."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "base-image.sh")], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def build_image(client: docker.DockerClient, base: str) -> str:
    """Build the sshd host image on ``base`` (layers cached by the engine) and return its tag."""
    client.images.build(
        path=str(SSHD_DIR), tag=IMAGE, buildargs={"BASE_IMAGE": base}, rm=True, forcerm=True
    )
    return IMAGE


def keygen(path: Path, comment: str) -> Path:
    """A new ed25519 key pair at ``path`` and ``path.pub``, no passphrase; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def public_key(private: Path) -> str:
    """``type base64`` of the key pair's public half."""
    kind, data, *_ = Path(f"{private}.pub").read_text().split()
    return f"{kind} {data}"


def known_hosts_line(port: int, host_key: Path, address: str = "127.0.0.1") -> str:
    """A known_hosts line vouching for ``host_key`` at ``[address]:port``."""
    return f"[{address}]:{port} {public_key(host_key)}\n"


def wait_for_banner(port: int, timeout: float = 30.0) -> None:
    """Wait until an SSH server answers on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                if conn.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no SSH server on 127.0.0.1:{port} after {timeout:g}s")
        time.sleep(0.1)


def remove_project(client: docker.DockerClient, project: str) -> None:
    """Remove what Compose made for ``project`` on the engine (containers, networks, volumes)."""
    label: dict[str, str | list[str] | bool] = {"label": f"com.docker.compose.project={project}"}
    for container in client.containers.list(all=True, filters=label):
        container.remove(force=True, v=True)
    for network in client.networks.list(filters=label):
        network.remove()
    for volume in client.volumes.list(filters=label):
        volume.remove(force=True)


@dataclasses.dataclass(frozen=True)
class SshdHost:
    """A running sshd host: the :class:`Host` to reach it and the settings pointing at it."""

    host: Host
    settings: Settings
    container: Container
    workdir: Path
    host_key: Path

    @property
    def port(self) -> int:
        return self.host.port

    def sshd_log(self) -> str:
        """What sshd logged (connections, accepted and refused keys)."""
        return bytes(self.container.logs()).decode("utf-8", "replace")

    def new_key(self, name: str) -> Path:
        """Another ed25519 key pair in this host's directory (one the host knows nothing of)."""
        return keygen(self.workdir / name, name)

    def known_hosts_with(self, host_key: Path, name: str) -> Path:
        """A known_hosts file vouching for ``host_key`` (not this host's) at this host's port."""
        path = self.workdir / name
        path.write_text(known_hosts_line(self.port, host_key))
        return path


class SshdHosts:
    """Starts sshd hosts on the local engine and removes them, and their stacks, at the end."""

    def __init__(
        self, client: docker.DockerClient, workdir: Path, base: str, image: str = IMAGE
    ) -> None:
        self.client = client
        self.workdir = workdir
        self.base = base
        self.image = image
        self.started: list[SshdHost] = []
        self.settings = dataclasses.replace(
            settings_mod.load(environ={}, env_file=Path(os.devnull)),
            ssh_user=USER,
            ssh_connect_timeout=5.0,
            base_image=base,
        )

    def start(self, name: str = "master", *, docker_on_host: DockerOnHost = "socket") -> SshdHost:
        """Start a host called ``name`` (its role in messages) and wait for its sshd."""
        workdir = self.workdir / f"{name}-{secrets.token_hex(3)}"
        host_key = keygen(workdir / "host_ed25519", f"host-{name}")
        client_key = keygen(workdir / "id_ed25519", f"operator-{name}")
        volumes = {}
        if docker_on_host != "no-engine":
            volumes["/var/run/docker.sock"] = {"bind": "/var/run/docker.sock", "mode": "rw"}
        container = self.client.containers.create(
            self.image,
            detach=True,
            environment={"SSHD_DOCKER": docker_on_host},
            labels={LABEL: "sshd-host"},
            ports={"22/tcp": ("127.0.0.1", 0)},  # 0: a free port
            volumes=volumes,
        )
        try:
            container.put_archive(
                "/etc/ssh/keys",
                tar_files(
                    {
                        "host_ed25519": (host_key.read_bytes(), 0o600),
                        f"authorized_keys_{USER}": (f"{public_key(client_key)}\n".encode(), 0o644),
                    }
                ),
            )
            container.start()
            container.reload()
            port = int(container.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
            wait_for_banner(port)
        except BaseException:
            container.remove(force=True)
            raise
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(known_hosts_line(port, host_key))
        settings = dataclasses.replace(
            self.settings,
            project_name=f"gdrtest-{name}-{secrets.token_hex(3)}",
            ssh_key_file=str(client_key),
            ssh_known_hosts=str(known_hosts),
        )
        if name == "master":
            settings = dataclasses.replace(settings, master_host=f"127.0.0.1:{port}")
        elif name == "slave":
            settings = dataclasses.replace(settings, slave_host=f"127.0.0.1:{port}")
        started = SshdHost(
            Host(name, "127.0.0.1", port, USER), settings, container, workdir, host_key
        )
        self.started.append(started)
        return started

    def close(self) -> None:
        """Remove every host started here and every stack deployed through them."""
        for started in self.started:
            remove_project(self.client, compose_project(started.settings))
            with contextlib.suppress(docker.errors.NotFound):
                started.container.remove(force=True)
        self.started.clear()

    def __enter__(self) -> SshdHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def local_engine() -> Iterator[docker.DockerClient]:
    """The local engine (the one the sshd hosts front)."""
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sshd_image(local_engine: docker.DockerClient) -> tuple[str, str]:
    """The base image and the sshd host image built on it."""
    base = base_image()
    return base, build_image(local_engine, base)


@pytest.fixture
def sshd_hosts(
    local_engine: docker.DockerClient, sshd_image: tuple[str, str], tmp_path: Path
) -> Iterator[SshdHosts]:
    """A factory of sshd hosts; all of them, and their stacks, are removed after the test."""
    base, image = sshd_image
    with SshdHosts(local_engine, tmp_path, base, image) as hosts:
        yield hosts


@pytest.fixture
def sshd_host(sshd_hosts: SshdHosts) -> SshdHost:
    """One good host called master: ``.host`` and ``.settings`` point at it."""
    return sshd_hosts.start("master")


@pytest.fixture(scope="module")
def module_sshd_hosts(
    local_engine: docker.DockerClient,
    sshd_image: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SshdHosts]:
    """Like ``sshd_hosts``, shared by a module's tests (for hosts they only read from)."""
    base, image = sshd_image
    with SshdHosts(local_engine, tmp_path_factory.mktemp("sshd-hosts"), base, image) as hosts:
        yield hosts
