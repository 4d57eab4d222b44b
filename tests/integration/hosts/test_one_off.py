"""One-off containers (a promotion's restore) on a host over ssh://: named, labelled, removed.

A one-off is removed with its anonymous volumes however its run ends, and one left behind by a
process killed mid-run (nothing client-side could remove it) is removed by the next run.
"""

from __future__ import annotations

import io
import multiprocessing
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from gitlab_sync.waits import wait_until
from ops.errors import HostError
from ops.hosts.compose import PROJECT_LABEL
from ops.hosts.engine import ONE_OFF_LABEL, Engine
from ops.hosts.ssh import Host
from ops.settings import Settings

if TYPE_CHECKING:  # the module is loaded as a plugin, so pytest can rewrite its asserts
    from tests.integration.sshd_host import SshdHosts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def opened(module_sshd_hosts: SshdHosts) -> Iterator[Engine]:
    """An engine on a good host, shared by the module (one-offs need no stack deployed)."""
    host = module_sshd_hosts.start("master")
    with Engine.open(host.host, host.settings) as engine:
        yield engine


VOLUME_IMAGE = "gitlab-dr/one-off-volume:hosts"


@pytest.fixture(scope="module")
def volume_image(module_sshd_hosts: SshdHosts) -> Iterator[str]:
    """The base image with a declared VOLUME (as the sidecar's image has /state)."""
    dockerfile = f"FROM {module_sshd_hosts.base}\nVOLUME /scratch\n".encode()
    module_sshd_hosts.client.images.build(
        fileobj=io.BytesIO(dockerfile), tag=VOLUME_IMAGE, rm=True, forcerm=True
    )
    yield VOLUME_IMAGE
    module_sshd_hosts.client.images.remove(VOLUME_IMAGE, force=True)  # even if a test left a user


def running(client: docker.DockerClient, name: str, timeout: float = 60) -> Container:
    """The container called ``name`` once it runs."""
    seen: list[Container] = []

    def found() -> bool:
        try:
            seen[:] = [client.containers.get(name)]
        except docker.errors.NotFound:
            return False
        return seen[-1].status == "running"

    wait_until(found, timeout=timeout, what=f"container {name} running", interval=0.1)
    return seen[-1]


def anonymous_volumes(container: Container) -> list[str]:
    return [m["Name"] for m in container.attrs["Mounts"] if m["Type"] == "volume"]


def assert_gone(client: docker.DockerClient, container: str, volumes: list[str]) -> None:
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(container)
    for volume in volumes:
        with pytest.raises(docker.errors.NotFound):
            client.volumes.get(volume)


def test_a_one_off_returns_its_output_and_leaves_no_container_or_volume(
    opened: Engine, volume_image: str, local_engine: docker.DockerClient
) -> None:
    name = opened.one_off_name("probe")
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            opened.run_once,
            "probe",
            volume_image,
            ["sh", "-c", "sleep 2; echo out; echo e >&2"],
            {},
        )
        seen = running(local_engine, name)
        assert seen.labels[PROJECT_LABEL] == opened.project  # what removes the stack finds it
        assert seen.labels[ONE_OFF_LABEL] == "probe"
        assert seen.attrs["HostConfig"]["NetworkMode"] == "none"  # no network to set up
        volumes = anonymous_volumes(seen)
        assert volumes
        assert run.result(timeout=60) == "out\n"
    assert_gone(local_engine, seen.id or name, volumes)


def test_a_one_off_that_fails_says_why_and_leaves_nothing(
    opened: Engine, local_engine: docker.DockerClient
) -> None:
    argv = ["sh", "-c", "echo reading >&2; echo no snapshot here >&2; exit 3"]
    with pytest.raises(HostError, match=r"^master \(.*\): .* sh exited 3: no snapshot here$"):
        opened.run_once("probe", opened.settings.base_image, argv, {})
    assert_gone(local_engine, opened.one_off_name("probe"), [])


def run_until_killed(host: Host, settings: Settings, image: str, tmp: str) -> None:
    """A promotion's process in miniature: a one-off restore, killed while it runs."""
    tempfile.tempdir = tmp  # where the relay's socket is, left behind by the kill
    with Engine.open(host, settings) as engine:
        engine.run_once("restore", image, ["sleep", "300"], {})


def test_a_one_off_left_by_a_killed_process_is_removed_by_the_next_run(
    opened: Engine, volume_image: str, local_engine: docker.DockerClient
) -> None:
    name = opened.one_off_name("restore")
    tmp = tempfile.mkdtemp(prefix="gdr-")  # short: ssh's ControlPath must fit a socket's name
    killed = multiprocessing.get_context("spawn").Process(
        target=run_until_killed, args=(opened.host, opened.settings, volume_image, tmp)
    )
    killed.start()
    try:
        left = running(local_engine, name)
    finally:
        killed.kill()
        killed.join(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    left.reload()
    assert left.status == "running"  # the kill removed nothing: a leftover
    assert left.labels[PROJECT_LABEL] == opened.project
    volumes = anonymous_volumes(left)
    assert volumes
    assert opened.run_once("restore", volume_image, ["echo", "restored"], {}) == "restored\n"
    assert_gone(local_engine, left.id or name, volumes)
    assert_gone(local_engine, name, [])
