"""Fixtures for real sshd hosts in front of the local Docker engine: the ssh:// path's stand-ins.

Each host is an :class:`ops.rehearsal.instance.SshdInstance` (the sandbox's "instances" are
too) with keys made for the test in its temporary directory. Its settings are the defaults with
the SSH ones pointing at it and a project name of its own, so several hosts (a master and a
slave) can share the one engine.

Use it as a pytest plugin (``pytest_plugins = ["tests.integration.sshd_host"]``): the fixtures
``sshd_hosts`` (a factory: ``sshd_hosts.start("slave")``), ``sshd_host`` (one good host) and
``module_sshd_hosts`` (a factory shared by a module's tests).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container

from ops import settings as settings_mod
from ops.hosts.compose import compose_project
from ops.hosts.ssh import Host
from ops.rehearsal.instance import (
    HOST_IMAGE,
    USER,
    DockerOnHost,
    SshdInstance,
    build_host_image,
    keygen,
    known_hosts_line,
)
from ops.rehearsal.local import Cleanup, base_image
from ops.settings import Settings

LABEL = "gitlab-dr.test"


@dataclasses.dataclass(frozen=True)
class SshdHost:
    """A running sshd host: the :class:`Host` to reach it and the settings pointing at it."""

    host: Host
    settings: Settings
    instance: SshdInstance
    workdir: Path
    host_key: Path

    @property
    def port(self) -> int:
        return self.host.port

    @property
    def container(self) -> Container:
        return self.instance.container

    def sshd_log(self) -> str:
        """What sshd logged (connections, accepted and refused keys)."""
        return self.instance.logs()

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
        self, client: docker.DockerClient, workdir: Path, base: str, image: str = HOST_IMAGE
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
        instance = (
            SshdInstance(self.client, self.image)
            .with_label(LABEL, "sshd-host")
            .with_keys(host_key, client_key)
            .with_docker(docker_on_host)
            .start()
        )
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(instance.known_hosts_line())
        settings = dataclasses.replace(
            self.settings,
            project_name=f"gdrtest-{name}-{secrets.token_hex(3)}",
            ssh_key_file=str(client_key),
            ssh_known_hosts=str(known_hosts),
        )
        if name == "master":
            settings = dataclasses.replace(settings, master_host=f"127.0.0.1:{instance.port}")
        elif name == "slave":
            settings = dataclasses.replace(settings, slave_host=f"127.0.0.1:{instance.port}")
        host = Host(name, "127.0.0.1", instance.port, USER)
        started = SshdHost(host, settings, instance, workdir, host_key)
        self.started.append(started)
        return started

    def close(self) -> None:
        """Remove every host started here and every stack deployed through them, with their
        volumes; fails naming what could not be removed."""
        cleanup = Cleanup()
        for started in self.started:
            cleanup.project(self.client, compose_project(started.settings))
            cleanup.attempt(f"sshd host {started.host}", started.instance.remove)
        self.started.clear()
        if cleanup.left:
            raise RuntimeError("; ".join(cleanup.left))

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
    return base, build_host_image(local_engine, base)


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
