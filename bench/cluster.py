"""The benchmark's containers on the local Docker engine: one network, and boxes.

Our pair is made exactly as the integration tests make it (``tests/integration/sidecar/sync_pair``:
the real sidecar image, paired by its own CLI). The contenders run in an image built from the
sidecar's (``images/bench-contenders``): the same rsync, OpenSSH and Python, plus Debian's lsyncd.
Every contender's master reaches its slave through the same SSH options as our sidecar:
ed25519 key, host key checked, one multiplexed connection kept for 60 s.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import docker
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from bench.storage import Site
from ops.rehearsal.sandbox import tar_files
from tests.integration.sidecar.sync_pair import SidecarNode, pair_up, start_sidecar, wait_for

CONTENDERS_IMAGE = os.environ.get("BENCH_IMAGE", "gitlab-dr/bench-contenders:local")
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
        return self.timed_output(argv)[0]

    def timed_output(self, argv: list[str]) -> tuple[float, str]:
        """Seconds ``argv`` took, timed inside the container, and what it printed."""
        code = (
            "import subprocess,sys,time;s=time.monotonic();"
            "r=subprocess.run(sys.argv[1:],stdout=subprocess.PIPE);t=time.monotonic()-s;"
            "sys.stdout.buffer.write(r.stdout);print();"
            "print(t) if r.returncode in (0,24) else sys.exit(r.returncode)"
        )
        out, _, seconds = self.run(["python3", "-c", code, *argv]).rstrip().rpartition("\n")
        return float(seconds), out

    def layout(self) -> dict[str, Any]:
        """The sidecar's own word on its method for this container's mounts (``gitlab-sync
        layout --json``: snapshots or the fallback, and why). A sidecar image older than the
        snapshot path has no such command, and only the fallback."""
        code, output = self.container.exec_run(["gitlab-sync", "layout", "--json"], demux=True)
        out = (cast("tuple[bytes | None, bytes | None]", output)[0] or b"").decode(errors="replace")
        if code in (0, 1) and out.strip().startswith("{"):
            data: dict[str, Any] = json.loads(out)
            return data
        return {
            "method": "fallback",
            "why": "this sidecar image predates the snapshot path (no gitlab-sync layout)",
            "problems": [],
        }


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
    """Everything the benchmark starts; removed on exit, whatever happened.

    The trees are folders of the hosts' filesystems (:mod:`bench.storage`), bind-mounted into
    the containers where Compose mounts GITLAB_HOME and SYNC_HOME.
    """

    def __init__(self, stack: ExitStack):
        self.stack = stack
        self.client = docker.from_env()
        self.network = stack.enter_context(Network())
        self.tag = uuid.uuid4().hex[:6]

    def box(self, alias: str, volumes: list[tuple[str, str, str]], image: str = "") -> Box:
        """A container on the network (the contenders' image unless told), idle until told what
        to do."""
        tc = DockerContainer(image or CONTENDERS_IMAGE).with_command("sleep infinity")
        tc.with_kwargs(entrypoint=["/usr/bin/tini", "--"])
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

    def our_pair(self, site: Site, env: dict[str, str], prefix: str = "ours") -> tuple[Box, Box]:
        """Our slave and master, paired, mounted as Compose mounts them on each host: the
        master's GITLAB_HOME read-only at /source and its SYNC_HOME at /sync (where a pass
        freezes the tree, on btrfs), the slave's SYNC_HOME at /sync."""
        slave = self.sidecar(
            f"{prefix}-slave",
            env,
            [(str(site.slave.home), "/source", "ro"), (str(site.slave.sync), "/sync", "rw")],
        )
        master = self.sidecar(
            f"{prefix}-master",
            env,
            [(str(site.master.home), "/source", "ro"), (str(site.master.sync), "/sync", "rw")],
        )
        pair_up(master, slave, slave_alias=f"{prefix}-slave")
        return master, slave

    def plain_pair(self, site: Site) -> tuple[Box, Box]:
        """A contender's master (the same GITLAB_HOME, read-only) and a plain sshd slave whose
        replica is on a filesystem of the same kind as our slave's."""
        slave = self.box("plain-slave", [(str(site.replica.home), "/replica", "rw")])
        master = self.box("plain-master", [(str(site.master.home), "/source", "ro")])
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
def cluster() -> Iterator[Cluster]:
    with ExitStack() as stack:
        yield Cluster(stack)
