"""A real master/slave pair of gitlab-rsync sidecars, run with testcontainers.

Each pair gets its own Docker network; the master's GitLab tree is a Docker volume that the
master mounts read-only at /source (as in the Compose stack) and a "writer" container mounts
read-write, standing in for GitLab writing its data. Trees are compared by manifest.

The slave equalling the master (:meth:`Pair.wait_in_sync`) does not make the master still: a
write's last events can start one more pass after that. A step that needs stillness waits for it
(:func:`wait_idle`) or stops the sender first (:meth:`Pair.stop_sending`).

Every container goes with its anonymous volumes (the image declares ``VOLUME /state``):
testcontainers' ``stop()`` removes with ``v=True``, and so does :func:`run_once`.

``fs="btrfs"`` gives each side its own btrfs filesystem in a loop file, laid out as the AMI lays
out an instance's data volume (subvolumes ``gitlab`` for GITLAB_HOME and ``gitlab-sync`` for
SYNC_HOME), so the sidecars take the snapshot path; ``fs="plain"`` (Docker volumes on the
machine's own filesystem) takes the fallback. Both are unmounted and detached afterwards.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import docker
import docker.errors
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from gitlab_sync.config import parse_iso
from gitlab_sync.waits import wait_until
from ops.rehearsal.loopfs import loop_btrfs

SYNC_IMAGE = os.environ.get("SYNC_IMAGE", "gitlab-dr/gitlab-rsync:local")
FAST = {"SYNC_INTERVAL": "30s", "SYNC_BATCH": "0.1s", "SYNC_MAX_DELAY": "0.5s"}
FILESYSTEMS = ("btrfs", "plain")
"""The two paths: snapshots from one instant (btrfs) and the fallback (no cheap snapshots)."""
SCRATCH = Path(os.environ.get("GITLAB_DR_TEST_SCRATCH", "/tmp"))


class CommandFailed(AssertionError):
    def __init__(self, argv: list[str], code: int, output: str):
        super().__init__(f"{' '.join(argv)} exited {code}: {output.strip()}")
        self.code, self.output = code, output


@dataclass
class SidecarNode:
    """One sidecar (or the writer) in a running container."""

    name: str
    tc: DockerContainer
    last_run_at: float = field(default=0.0, init=False)
    """When the last command run in it began (``time.time()``): the writer's last write."""

    @property
    def container(self) -> Container:
        container: Container = self.tc.get_wrapped_container()
        container.reload()
        return container

    def run(self, argv: list[str], check: bool = True) -> str:
        """Run ``argv`` in the container; its stdout (raises with stderr too if it fails)."""
        self.last_run_at = time.time()
        code, output = self.container.exec_run(argv, demux=True)
        out, err = cast("tuple[bytes | None, bytes | None]", output)
        stdout = (out or b"").decode(errors="replace")
        if check and code != 0:
            stderr = (err or b"").decode(errors="replace")
            code = code if code is not None else -1
            if code >= 128:  # killed by a signal: say what became of the container
                stderr += self.state()
            raise CommandFailed(argv, code, stdout + stderr)
        return stdout

    def state(self) -> str:
        """The container's state and the end of its log (for a command that was killed)."""
        try:
            container = self.container
        except docker.errors.NotFound:
            return f"\n(container {self.name} is gone)"
        state = container.attrs["State"]
        tail = container.logs(tail=8).decode(errors="replace").strip()
        return (
            f"\n(container {container.name} is {state['Status']}, exit code "
            f"{state['ExitCode']}, OOM-killed {state['OOMKilled']}; its log ends:\n{tail})"
        )

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
    """:func:`gitlab_sync.waits.wait_until` as the tests spell it: a timeout fails the test."""
    return wait_until(predicate, timeout=timeout, what=what, interval=every, error=AssertionError)


def wait_idle(
    master: SidecarNode, since: float = 0.0, quiet: float = 1.0, timeout: float = 60.0
) -> dict[str, Any]:
    """Wait until ``master`` is still: no pass in progress, no change pending, its last pass
    ended after ``since`` (a ``time.time()``: when the last write began), and all of that for
    ``quiet`` seconds (the daemon says what is pending twice a second). Its status then."""
    still: dict[str, Any] = {}  # the last pass while still, and since when

    def settled() -> dict[str, Any] | None:
        status = master.status()
        daemon = json.loads(master.run(["cat", "/state/daemon.json"]))
        last = status["last_pass"] or {}
        ended = parse_iso(last["ended_at"]).timestamp() if last.get("ended_at") else 0.0
        now = time.monotonic()
        if status["in_progress"] or daemon.get("changes_pending") or (since and ended < since):
            still.clear()
            return None
        if not still or still["pass"] != last.get("id"):
            still.update({"pass": last.get("id"), "at": now})
        return status if now - still["at"] >= quiet else None

    status: dict[str, Any] = wait_for(settled, timeout, f"the {master.name} to be still", 0.2)
    return status


@dataclass
class Pair:
    """A paired master and slave, plus the writer that changes the master's tree."""

    master: SidecarNode
    slave: SidecarNode
    writer: SidecarNode
    network: Network
    source_volume: str  # the master's GITLAB_HOME: a volume name, or a host folder on btrfs
    stack: ExitStack = field(default_factory=ExitStack)
    fs: str = "plain"
    slave_home: str = ""  # on btrfs: the host folders of the slave's GITLAB_HOME and SYNC_HOME
    slave_sync: str = ""

    def last_complete(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self.master.status()["last_complete"]
        return value

    def wait_idle(self, quiet: float = 1.0, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the master is still since the writer's last write (:func:`wait_idle`)."""
        return wait_idle(self.master, self.writer.last_run_at, quiet, timeout)

    def stop_sending(self) -> None:
        """``gitlab-sync stop`` on the master, then wait until the slave receives nothing: a
        pass the stop cut short may still be winding down there, holding the sync area."""
        self.master.sync("stop")
        wait_for(
            lambda: self.slave.succeeds(["flock", "--nonblock", "/sync/.lock", "true"]),
            30,
            "the slave to end the pass the stop cut short",
        )

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
) -> SidecarNode:
    tc = DockerContainer(SYNC_IMAGE)
    tc.with_network(network).with_network_aliases(alias).with_envs(**env)
    tc.with_name(f"gitlab-dr-test-{alias}-{uuid.uuid4().hex[:6]}")
    for volume in volumes:
        tc.with_volume_mapping(*volume)
    if tmpfs:
        for path, options in tmpfs.items():
            tc.with_tmpfs_mount(path, options)  # options as docker takes them: "size=6m"
    stack.enter_context(tc)
    side = SidecarNode(alias, tc)
    wait_for(lambda: side.sync("health", check=False).strip() == "healthy", 20, f"{alias} to start")
    return side


def keys_of(side: SidecarNode) -> dict[str, str]:
    data: dict[str, str] = json.loads(side.sync("key", "--json"))
    return data


def pair_up(
    master: SidecarNode, slave: SidecarNode, slave_alias: str = "slave", epoch: int = 1
) -> None:
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


def new_volume(client: docker.DockerClient, stack: ExitStack, name: str) -> str:
    """A new named volume, removed when ``stack`` closes."""
    made = client.volumes.create(name).name
    stack.callback(lambda: client.volumes.get(made).remove(force=True))
    return str(made)


def host_data(stack: ExitStack, tag: str, side: str, size: str = "2G") -> tuple[str, str]:
    """GITLAB_HOME and SYNC_HOME of one side on its own btrfs filesystem in a loop file."""
    folder = SCRATCH / f"gitlab-dr-test-{tag}-{side}"
    stack.callback(  # after the filesystem is gone (callbacks run last first)
        lambda: folder.rmdir() if folder.exists() and not any(folder.iterdir()) else None
    )
    fs = stack.enter_context(loop_btrfs(folder, size, ("gitlab", "gitlab-sync")))
    return str(fs.mountpoint / "gitlab"), str(fs.mountpoint / "gitlab-sync")


@contextmanager
def sync_pair(
    master_env: dict[str, str] | None = None,
    slave_env: dict[str, str] | None = None,
    slave_tmpfs: dict[str, str] | None = None,
    start: bool = True,
    fs: str = "plain",
    slave_size: str = "2G",
) -> Iterator[Pair]:
    """A running pair; on exit every container, the network, the volumes and (``fs="btrfs"``)
    the filesystems are removed. ``slave_size``: the slave's btrfs filesystem (a small one
    fills up); ``slave_tmpfs``: mounts on tmpfs instead (a tmpfs /sync is the fallback)."""
    if fs not in FILESYSTEMS:
        raise ValueError(f"fs must be one of {FILESYSTEMS}, not {fs!r}")
    client = docker.from_env()
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        master_volumes: list[tuple[str, str, str]]
        slave_volumes: list[tuple[str, str, str]]
        slave_home = slave_sync = ""
        if fs == "btrfs":
            source, master_sync = host_data(stack, tag, "master")
            slave_home, slave_sync = host_data(stack, tag, "slave", slave_size)
            master_volumes = [(source, "/source", "ro"), (master_sync, "/sync", "rw")]
            slave_volumes = [(slave_home, "/source", "ro")]
            if not slave_tmpfs:
                slave_volumes.append((slave_sync, "/sync", "rw"))
        else:
            source = new_volume(client, stack, f"gitlab-dr-test-source-{tag}")
            sync_volume = new_volume(client, stack, f"gitlab-dr-test-sync-{tag}")
            master_volumes = [(source, "/source", "ro")]
            slave_volumes = [] if slave_tmpfs else [(sync_volume, "/sync", "rw")]
        network = stack.enter_context(Network())
        slave = start_sidecar(
            stack, network, "slave", {**FAST, **(slave_env or {})}, slave_volumes, slave_tmpfs
        )
        master = start_sidecar(
            stack, network, "master", {**FAST, **(master_env or {})}, master_volumes
        )
        writer_tc = DockerContainer(SYNC_IMAGE).with_command("sleep infinity")
        writer_tc.with_kwargs(entrypoint=["/usr/bin/tini", "--"])
        writer_tc.with_volume_mapping(source, "/source", "rw")
        stack.enter_context(writer_tc)
        writer = SidecarNode("writer", writer_tc)
        pair_up(master, slave)
        if start:
            master.sync("start")
        yield Pair(master, slave, writer, network, source, stack, fs, slave_home, slave_sync)


def run_once(
    client: docker.DockerClient,
    image: str,
    argv: list[str],
    volumes: dict[str, dict[str, str]],
    timeout: float = 600.0,
) -> str:
    """Run ``argv`` in a one-off container of ``image``; its stdout. The container is removed
    with its anonymous volumes whatever happens (``containers.run(remove=True)`` leaves them,
    and leaves the container too when the client stops waiting)."""
    container = client.containers.create(image, argv, volumes=volumes)
    try:
        container.start()
        code = int(container.wait(timeout=timeout)["StatusCode"])
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        if code != 0:
            err = container.logs(stdout=False, stderr=True).decode(errors="replace")
            raise CommandFailed([image, *argv], code, out + err)
        return out
    finally:
        container.remove(force=True, v=True)
