"""An sshd "instance": a stand-in for an EC2 host, for the sandbox and the ssh:// tests.

:class:`SshdInstance` is one container from ``images/sandbox-host`` (OpenSSH's sshd in front of
the local Docker engine, whose socket is bind-mounted) with its host key and the one client key
it accepts, published on a 127.0.0.1 port. It is built as testcontainers builds containers::

    host = SshdInstance(client).with_keys(host_key, client_key).with_name("h").start()
    host.port, host.known_hosts_line()

The keys are made beforehand (:func:`keygen`) and copied in before sshd starts.
"""

from __future__ import annotations

import io
import socket
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Literal, Self

import docker
from docker.models.containers import Container

from gitlab_sync.waits import wait_until
from ops.errors import SandboxError
from ops.rehearsal.local import docker_errors, remove_container

ROOT = Path(__file__).resolve().parents[2]
HOST_DIR = ROOT / "images" / "sandbox-host"
HOST_IMAGE = "gitlab-dr/sandbox-host:local"
USER = "admin"
START_TIMEOUT = 30.0

DockerOnHost = Literal["socket", "absent", "no-engine"]
"""What the host offers behind sshd: a working engine, no docker CLI, or a CLI with no engine."""


def build_host_image(client: docker.DockerClient, base: str) -> str:
    """Build the host image on ``base`` (layers cached by the engine) and return its tag."""
    with docker_errors(f"building {HOST_IMAGE}"):
        client.images.build(
            path=str(HOST_DIR),
            tag=HOST_IMAGE,
            buildargs={"BASE_IMAGE": base},
            rm=True,
            forcerm=True,
        )
    return HOST_IMAGE


def keygen(path: Path, comment: str) -> Path:
    """A new ed25519 key pair at ``path`` and ``path.pub``, no passphrase; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SandboxError(f"ssh-keygen failed for {path}: {exc}") from exc
    return path


def public_key(private: Path) -> str:
    """``type base64`` of the key pair's public half (``private`` + ``.pub``)."""
    kind, data, *_ = Path(f"{private}.pub").read_text().split()
    return f"{kind} {data}"


def known_hosts_line(port: int, host_key: Path, address: str = "127.0.0.1") -> str:
    """A known_hosts line vouching for ``host_key`` at ``[address]:port``."""
    return f"[{address}]:{port} {public_key(host_key)}\n"


def tar_files(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar archive of ``name: (data, mode)`` files owned by root (for ``put_archive``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, 0, 0
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ssh_banner(port: int) -> bool:
    """Whether an SSH server greets on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            return conn.recv(64).startswith(b"SSH-")
    except OSError:
        return False


class SshdInstance:
    """One sshd host container: its keys, its port, and how to remove it."""

    def __init__(
        self, client: docker.DockerClient, image: str = HOST_IMAGE, user: str = USER
    ) -> None:
        self.client, self.image, self.user = client, image, user
        self.name: str | None = None
        self.labels: dict[str, str] = {}
        self.docker: DockerOnHost = "socket"
        self.bastion = False
        self.host_key: Path | None = None
        self.client_key: Path | None = None
        self._container: Container | None = None
        self._port = 0

    def with_name(self, name: str) -> Self:
        self.name = name
        return self

    def with_label(self, key: str, value: str) -> Self:
        self.labels[key] = value
        return self

    def with_keys(self, host_key: Path, client_key: Path) -> Self:
        """The host key sshd presents and the client key it accepts (private halves)."""
        self.host_key, self.client_key = host_key, client_key
        return self

    def with_docker(self, docker_on_host: DockerOnHost) -> Self:
        self.docker = docker_on_host
        return self

    def as_bastion(self) -> Self:
        """A jump host: sshd forwards connections (``ssh -W``) to the hosts behind it, and no
        engine is offered."""
        self.bastion, self.docker = True, "no-engine"
        return self

    @property
    def container(self) -> Container:
        if self._container is None:
            raise SandboxError("the sshd instance is not started")
        return self._container

    @property
    def port(self) -> int:
        """Its sshd's port on 127.0.0.1."""
        if not self._port:
            raise SandboxError("the sshd instance is not started")
        return self._port

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Create the container, copy the keys in, start it and wait for sshd's greeting.

        On any failure the container is removed before the error goes on.
        """
        if self.host_key is None or self.client_key is None:
            raise SandboxError("an sshd instance needs its keys: with_keys(host_key, client_key)")
        keys = tar_files(
            {
                "host_ed25519": (self.host_key.read_bytes(), 0o600),
                f"authorized_keys_{self.user}": (
                    f"{public_key(self.client_key)}\n".encode(),
                    0o644,
                ),
            }
        )
        what = self.name or f"an sshd instance of {self.image}"
        volumes = {}
        if self.docker != "no-engine":
            volumes["/var/run/docker.sock"] = {"bind": "/var/run/docker.sock", "mode": "rw"}
        with docker_errors(f"starting {what}"):
            self._container = self.client.containers.create(
                self.image,
                name=self.name,
                detach=True,
                environment={
                    "SSHD_DOCKER": self.docker,
                    "SSHD_BASTION": "yes" if self.bastion else "no",
                },
                labels=self.labels,
                ports={"22/tcp": ("127.0.0.1", 0)},  # 0: a free port
                volumes=volumes,
            )
        try:
            with docker_errors(f"starting {what}"):
                self._container.put_archive("/etc/ssh/keys", keys)
                self._container.start()
                self._container.reload()
                ports = self._container.attrs["NetworkSettings"]["Ports"]
                self._port = int(ports["22/tcp"][0]["HostPort"])
            wait_until(
                lambda: ssh_banner(self._port),
                timeout=timeout,
                what=f"sshd of {what} on 127.0.0.1:{self._port}",
                interval=0.1,
                error=SandboxError,
            )
        except BaseException:
            self.remove()
            raise
        return self

    def known_hosts_line(self, address: str = "127.0.0.1") -> str:
        """The known_hosts line vouching for this instance's host key at its port."""
        if self.host_key is None:
            raise SandboxError("the sshd instance has no host key")
        return known_hosts_line(self.port, self.host_key, address)

    def logs(self) -> str:
        """What sshd logged (connections, accepted and refused keys)."""
        with docker_errors(f"reading the logs of {self.container.name}"):
            return bytes(self.container.logs()).decode("utf-8", "replace")

    def remove(self) -> None:
        """Remove the container and its anonymous volumes (gone already: nothing to do)."""
        if self._container is not None:
            with docker_errors(f"removing {self._container.name}"):
                remove_container(self._container)
