"""The benchmark's containers on the local Docker engine: volumes, one network, and boxes.

Our pair is made exactly as the integration tests make it (``tests/integration/sidecar/sync_pair``:
the real sidecar image, paired by its own CLI). The contenders run in an image built from the
sidecar's (``images/bench-contenders``): the same rsync, OpenSSH and Python, plus Debian's lsyncd.
Every contender's master reaches its slave through the same SSH options as our sidecar:
ed25519 key, host key checked, one multiplexed connection kept for 60 s.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from ops.rehearsal.sandbox import tar_files
from tests.integration.sidecar.sync_pair import SidecarNode, pair_up, start_sidecar, wait_for

CONTENDERS_IMAGE = "gitlab-dr/bench-contenders:local"
PROBE = Path(__file__).with_name("probe.py")
PROBE_PATH = "/opt/bench/probe.py"

# The transport every contender shares with our sidecar (gitlab_sync.keys.ssh_argv).
SSH_OPTIONS = (
    "-p 2222 -l root -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes "
    "-o UserKnownHostsFile=/root/.ssh/known_hosts -o GlobalKnownHostsFile=/dev/null "
    "-o ConnectTimeout=10 -o ServerAliveInterval=10 -o ServerAliveCountMax=3 "
    "-o ControlMaster=auto -o ControlPath=/run/bench-ssh-%C -o ControlPersist=60 "
    "-o LogLevel=ERROR"
)
SSH = f"ssh -i /root/.ssh/id_ed25519 {SSH_OPTIONS}"


class Box(SidecarNode):
    """A container the benchmark drives: commands, the probe, files, background jobs."""

    def probe(self, *args: str) -> Any:
        return json.loads(self.run(["python3", PROBE_PATH, *args]))

    def install_probe(self) -> None:
        self.container.put_archive(
            "/", tar_files({PROBE_PATH.lstrip("/"): (PROBE.read_bytes(), 0o644)})
        )

    def sh(self, script: str, check: bool = True) -> str:
        return self.run(["sh", "-c", script], check=check)

    def background(self, script: str) -> None:
        self.container.exec_run(["sh", "-c", script], detach=True)

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        self.container.put_archive("/", tar_files({path.lstrip("/"): (text.encode(), mode)}))

    def timed(self, argv: list[str]) -> float:
        """Seconds ``argv`` took, timed inside the container (no exec round trip counted)."""
        code = (
            "import subprocess,sys,time;s=time.monotonic();"
            "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL);"
            "print(time.monotonic()-s) if r.returncode in (0,24) else sys.exit(r.returncode)"
        )
        return float(self.run(["python3", "-c", code, *argv]).strip())


@dataclass
class Rss:
    """The RSS sampler running in a box (``probe rss``)."""

    box: Box
    tag: str

    def stop(self) -> dict[str, Any]:
        self.box.sh(f"touch /tmp/rss-{self.tag}.stop")
        wait_for(
            lambda: self.box.succeeds(["test", "-s", f"/tmp/rss-{self.tag}.json"]),
            10,
            "the RSS sampler to report",
        )
        data: dict[str, Any] = json.loads(self.box.sh(f"cat /tmp/rss-{self.tag}.json"))
        return data


def start_rss(box: Box) -> Rss:
    tag = uuid.uuid4().hex[:8]
    box.background(f"python3 {PROBE_PATH} rss /tmp/rss-{tag}.json /tmp/rss-{tag}.stop")
    time.sleep(0.2)
    return Rss(box, tag)


class Cluster:
    """Everything the benchmark starts; removed on exit, whatever happened."""

    def __init__(self, stack: ExitStack, storage: str = "tmpfs"):
        self.stack, self.storage = stack, storage
        self.client = docker.from_env()
        self.network = stack.enter_context(Network())
        self.tag = uuid.uuid4().hex[:6]

    def volume(self, name: str, gib: int = 8) -> str:
        """A volume for a tree: in memory (``tmpfs``, at most ``gib``) or on the engine's disk.

        In memory by default: on a cloud VM's disk the same copy took 25 s, then 61 s, as its
        I/O credits ran out, which would drown the ratios between contenders. ``nr_inodes=0``:
        tmpfs counts every hard link as an inode, and 24 hard-linked snapshots of a 150,000-
        entry tree would exhaust its default (half the RAM's pages), failing passes with ENOSPC.
        """
        full = f"gitlab-dr-bench-{name}-{self.tag}"
        if self.storage == "tmpfs":
            options = {"type": "tmpfs", "device": "tmpfs", "o": f"size={gib}g,nr_inodes=0"}
            self.client.volumes.create(full, driver="local", driver_opts=options)
        else:
            self.client.volumes.create(full)
        self.stack.callback(lambda: self.client.volumes.get(full).remove(force=True))
        return full

    def box(self, alias: str, volumes: list[tuple[str, str, str]]) -> Box:
        """A contenders-image container on the network, idle until told what to do."""
        tc = DockerContainer(CONTENDERS_IMAGE)
        tc.with_network(self.network).with_network_aliases(alias)
        tc.with_name(f"gitlab-dr-bench-{alias}-{self.tag}")
        for volume in volumes:
            tc.with_volume_mapping(*volume)
        self.stack.enter_context(tc)
        box = Box(alias, tc)
        box.install_probe()
        return box

    def sidecar(self, alias: str, env: dict[str, str], volumes: list[tuple[str, str, str]]) -> Box:
        side = start_sidecar(self.stack, self.network, alias, env, volumes)
        box = Box(alias, side.tc)
        box.install_probe()
        return box

    def our_pair(
        self, source: str, sync: str, env: dict[str, str], prefix: str = "ours"
    ) -> tuple[Box, Box]:
        """Our slave (sync area on ``sync``) and master (``source`` read-only), paired."""
        slave = self.sidecar(f"{prefix}-slave", env, [(sync, "/sync", "rw")])
        master = self.sidecar(f"{prefix}-master", env, [(source, "/source", "ro")])
        pair_up(master, slave, slave_alias=f"{prefix}-slave")
        return master, slave

    def plain_pair(self, source: str, replica: str) -> tuple[Box, Box]:
        """A contender's master (``source`` read-only) and a plain sshd slave (``replica``)."""
        slave = self.box("plain-slave", [(replica, "/replica", "rw")])
        master = self.box("plain-master", [(source, "/source", "ro")])
        master.sh("mkdir -p /root/.ssh && ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519")
        slave.sh(
            "mkdir -p /etc/bench/ssh /run/sshd && "
            "ssh-keygen -q -t ed25519 -N '' -f /etc/bench/ssh/host_ed25519_key"
        )
        slave.write("/etc/bench/ssh/authorized_keys", master.sh("cat /root/.ssh/id_ed25519.pub"))
        slave.background("/usr/sbin/sshd -D -e -f /etc/bench/sshd_config")
        host_key = slave.sh("cat /etc/bench/ssh/host_ed25519_key.pub").split()
        master.write("/root/.ssh/known_hosts", f"[plain-slave]:2222 {host_key[0]} {host_key[1]}\n")
        wait_for(
            lambda: master.succeeds(["sh", "-c", f"{SSH} plain-slave true"]),
            20,
            "the plain slave's sshd",
        )
        return master, slave


@contextmanager
def cluster(storage: str = "tmpfs") -> Iterator[Cluster]:
    with ExitStack() as stack:
        yield Cluster(stack, storage)
