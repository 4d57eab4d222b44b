"""A real master/slave pair of gitlab-rsync sidecars, run with testcontainers.

Each pair gets its own Docker network; the master's GitLab tree is a Docker volume that the
master mounts read-only at /source (as in the Compose stack) and a "writer" container mounts
read-write, standing in for GitLab writing its data. Trees are compared by manifest.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import docker
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

SYNC_IMAGE = os.environ.get("SYNC_IMAGE", "gitlab-dr/gitlab-rsync:local")
FAST = {"SYNC_INTERVAL": "30s", "SYNC_BATCH": "0.1s", "SYNC_MAX_DELAY": "0.5s"}


class CommandFailed(AssertionError):
    def __init__(self, argv: list[str], code: int, output: str):
        super().__init__(f"{' '.join(argv)} exited {code}: {output.strip()}")
        self.code, self.output = code, output


@dataclass
class Side:
    """One sidecar (or the writer) in a running container."""

    name: str
    tc: DockerContainer

    @property
    def container(self) -> Container:
        container: Container = self.tc.get_wrapped_container()
        container.reload()
        return container

    def run(self, argv: list[str], check: bool = True) -> str:
        """Run ``argv`` in the container; its stdout (raises with stderr too if it fails)."""
        code, output = self.container.exec_run(argv, demux=True)
        out, err = cast("tuple[bytes | None, bytes | None]", output)
        stdout = (out or b"").decode(errors="replace")
        if check and code != 0:
            stderr = (err or b"").decode(errors="replace")
            raise CommandFailed(argv, code if code is not None else -1, stdout + stderr)
        return stdout

    def succeeds(self, argv: list[str]) -> bool:
        code, _ = self.container.exec_run(argv)
        return code == 0

    def sync(self, *args: str, check: bool = True) -> str:
        return self.run(["gitlab-sync", *args], check=check)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.sync("status", "--json"))
        return data

    def manifest(self, path: str) -> list[dict[str, Any]]:
        out = self.sync("manifest", path)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def python(self, code: str) -> str:
        return self.run(["python3", "-c", code])

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something true; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@dataclass
class Pair:
    """A paired master and slave, plus the writer that changes the master's tree."""

    master: Side
    slave: Side
    writer: Side
    network: Network
    source_volume: str
    stack: ExitStack = field(default_factory=ExitStack)

    def last_complete(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self.master.status()["last_complete"]
        return value

    def wait_idle(self, quiet: float = 1.5, timeout: float = 30.0) -> None:
        """Wait until no pass has run on the master for ``quiet`` seconds (events from earlier
        writes can trigger one more pass after the slave already equals the master)."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() - since < quiet:
            status = self.master.status()
            now = (status["in_progress"] or {}).get("id"), (status["last_pass"] or {}).get("id")
            if now != last or now[0]:
                last, since = now, time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"the master kept running passes for {timeout} s")
            time.sleep(0.1)

    def wait_in_sync(self, timeout: float = 30.0) -> float:
        """Wait until the slave's current snapshot equals the master's tree; returns the wait."""
        start = time.monotonic()

        def same() -> bool:
            if not self.slave.succeeds(["test", "-e", "/sync/current"]):
                return False
            return self.slave.manifest("/sync/current") == self.master.manifest("/source")

        wait_for(
            same, timeout, "the slave's current snapshot to equal the master's tree", every=0.2
        )
        return time.monotonic() - start


def start_sidecar(
    stack: ExitStack,
    network: Network,
    alias: str,
    env: dict[str, str],
    volumes: list[tuple[str, str, str]],
    tmpfs: dict[str, str] | None = None,
) -> Side:
    tc = DockerContainer(SYNC_IMAGE)
    tc.with_network(network).with_network_aliases(alias).with_envs(**env)
    tc.with_name(f"gitlab-dr-test-{alias}-{uuid.uuid4().hex[:6]}")
    for volume in volumes:
        tc.with_volume_mapping(*volume)
    if tmpfs:
        for path, options in tmpfs.items():
            tc.with_tmpfs_mount(path, options)  # options as docker takes them: "size=6m"
    stack.enter_context(tc)
    side = Side(alias, tc)
    wait_for(lambda: side.sync("health", check=False).strip() == "healthy", 20, f"{alias} to start")
    return side


def keys_of(side: Side) -> dict[str, str]:
    data: dict[str, str] = json.loads(side.sync("key", "--json"))
    return data


def pair_up(master: Side, slave: Side, slave_alias: str = "slave", epoch: int = 1) -> None:
    """The pairing ``inv pair`` performs: keys exchanged, slave first, then the master."""
    slave.sync(
        "add",
        "master",
        "--role",
        "slave",
        "--peer-key",
        keys_of(master)["client"],
        "--epoch",
        str(epoch),
    )
    master.sync(
        "add",
        f"{slave_alias}:2222",
        "--role",
        "master",
        "--peer-key",
        keys_of(slave)["host"],
        "--epoch",
        str(epoch),
    )


@contextmanager
def sync_pair(
    master_env: dict[str, str] | None = None,
    slave_env: dict[str, str] | None = None,
    slave_tmpfs: dict[str, str] | None = None,
    start: bool = True,
) -> Iterator[Pair]:
    """A running pair; on exit every container, the network and the volumes are removed."""
    client = docker.from_env()
    tag = uuid.uuid4().hex[:8]
    source = client.volumes.create(f"gitlab-dr-test-source-{tag}").name
    sync_volume = client.volumes.create(f"gitlab-dr-test-sync-{tag}").name
    with ExitStack() as stack:
        stack.callback(lambda: client.volumes.get(sync_volume).remove(force=True))
        stack.callback(lambda: client.volumes.get(source).remove(force=True))
        network = stack.enter_context(Network())
        slave_volumes = [] if slave_tmpfs else [(sync_volume, "/sync", "rw")]
        slave = start_sidecar(
            stack, network, "slave", {**FAST, **(slave_env or {})}, slave_volumes, slave_tmpfs
        )
        master = start_sidecar(
            stack, network, "master", {**FAST, **(master_env or {})}, [(source, "/source", "ro")]
        )
        writer_tc = DockerContainer(SYNC_IMAGE).with_command("sleep infinity")
        writer_tc.with_kwargs(entrypoint=["/usr/bin/tini", "--"])
        writer_tc.with_volume_mapping(source, "/source", "rw")
        stack.enter_context(writer_tc)
        writer = Side("writer", writer_tc)
        pair_up(master, slave)
        if start:
            master.sync("start")
        yield Pair(master, slave, writer, network, source, stack)
