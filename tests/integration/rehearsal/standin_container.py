"""A stand-in GitLab container for the tests (testcontainers), on empty anonymous volumes.

The image is built by ``make images`` (gitlab-dr/gitlab-standin:local, or $STANDIN_IMAGE).
Testcontainers removes the container with its volumes when the ``with`` block ends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer

from ops.rehearsal import standin as gl
from ops.rehearsal.standin import GitLabClientError

STANDIN_IMAGE = os.environ.get("STANDIN_IMAGE", "gitlab-dr/gitlab-standin:local")
READY_TIMEOUT = 60.0


@dataclass
class StandIn:
    """A running stand-in container and its published HTTP address."""

    tc: DockerContainer

    @property
    def container(self) -> Container:
        container: Container = self.tc.get_wrapped_container()
        container.reload()
        return container

    @property
    def url(self) -> str:
        # Asked each time: a restart may publish port 80 on another host port.
        return f"http://{self.tc.get_container_host_ip()}:{self.tc.get_exposed_port(80)}"

    @property
    def registry(self) -> str:
        """The container registry's published address, host:port (asked each time, too)."""
        return f"{self.tc.get_container_host_ip()}:{self.tc.get_exposed_port(5050)}"

    def run(self, *argv: str, user: str = "root") -> gl.CommandResult:
        return gl.run_in(self.container, argv, user=user)

    def check(self, *argv: str, user: str = "root") -> str:
        return gl.check_in(self.container, argv, user=user)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        return gl.wait_ready(self.url, timeout)

    def logs(self, service: str) -> str:
        """Everything svlogd kept for a service (finished files, then `current`)."""
        return self.check(
            "sh",
            "-c",
            f"cat /var/log/gitlab/{service}/@* /var/log/gitlab/{service}/current 2>/dev/null; true",
        )


@contextmanager
def standin(env: Mapping[str, str] | None = None) -> Iterator[StandIn]:
    """A ready stand-in for the ``with`` block (its logs printed when it never gets ready)."""
    try:
        docker.from_env().images.get(STANDIN_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {STANDIN_IMAGE} is missing: run `make images`")
    tc = DockerContainer(STANDIN_IMAGE).with_exposed_ports(80, 5050)
    tc.with_name(f"gitlab-dr-test-standin-{uuid.uuid4().hex[:6]}")
    if env:
        tc.with_envs(**env)
    with tc:
        side = StandIn(tc)
        try:
            side.wait_ready()
        except GitLabClientError:
            print(tc.get_wrapped_container().logs().decode(errors="replace"))
            raise
        yield side
