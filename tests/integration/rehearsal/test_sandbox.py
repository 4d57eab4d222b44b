"""``inv sandbox.up`` / ``down`` for real, and the tasks run by hand against the sandbox.

Everything is run as commands, as a newcomer would: ``inv sandbox.up``, then ``inv pair`` and
``inv status`` with ``ENV_FILE`` naming the sandbox's settings. AWS is the sandbox's own moto
server, reached here with plain boto3 to do what a promotion does to AWS (move the Elastic IP,
swap security groups and Role tags), and the forwarder must follow. Each instance keeps its data
on its own btrfs in a loop file, and down, with or without its record, leaves no mount and no
loop device of it (test_sandbox_filesystems: up failing half-way, a filesystem in use, plain
folders).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import pytest

from gitlab_sync.waits import wait_until
from ops.aws.client import boto_session
from ops.hosts.engine import labelled
from ops.rehearsal.layout import NAMES, SandboxLayout
from ops.rehearsal.local import base_image, remove_container
from tests.integration.rehearsal.leftovers import (
    Footprint,
    VolumesMounted,
    assert_instances_on_btrfs,
    assert_no_mount_or_loop_device,
    engine_volumes,
    loop_devices_of,
    mounts_under,
    processes_mentioning,
)
from tests.integration.tasks_cli import inv

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

pytestmark = pytest.mark.integration

STANDIN = os.environ.get("STANDIN_IMAGE", "gitlab-dr/gitlab-standin:local")


def _wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    wait_until(check, timeout=timeout, what=what, interval=0.25, error=AssertionError)


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - 127.0.0.1
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def _first_bytes(port: int) -> bytes | None:
    """What the forwarder's peer sends first; None when the forwarder resets the client."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"hello\n")
            return conn.recv(64) or None
    except OSError:
        return None


def _ec2(moto_url: str) -> EC2Client:
    return boto_session("eu-west-1").client(
        "ec2",
        endpoint_url=moto_url,
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
    )


class Listener:
    """A TCP server on 127.0.0.1:``port`` answering every client with ``reply``."""

    def __init__(self, port: int, reply: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.reply = reply
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(self.reply)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_sandbox_up_pair_status_elastic_ip_and_down(sandbox_dir: Path) -> None:
    """One sandbox for all of it (each costs a minute): up, up again, pair, status, the forwarder
    following the Elastic IP and the groups, the tags swapped, then down leaving no container,
    network, volume, mount, loop device or process of it."""
    started = time.monotonic()
    watch = VolumesMounted(sandbox_dir)
    up = inv("sandbox.up", "--directory", str(sandbox_dir), "--gitlab-image", STANDIN, "--json")
    assert up.returncode == 0, up.stdout + up.stderr
    assert all(line.startswith("sandbox: ") for line in up.stderr.splitlines()), up.stderr
    state = json.loads(up.stdout)
    env_file = Path(state["env_file"])
    by_role = {i["launched_as"]: i for i in state["instances"]}
    master, slave = by_role["master"], by_role["slave"]
    print(f"sandbox up: {time.monotonic() - started:.1f} s")
    assert_instances_on_btrfs(sandbox_dir, env_file)

    again = inv("sandbox.up", "--directory", str(sandbox_dir), "--gitlab-image", STANDIN)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already up" in again.stdout

    # The tasks, by hand, with the sandbox's settings.
    paired = inv("pair", env_file=env_file)
    assert paired.returncode == 0, paired.stdout + paired.stderr
    assert "complete pass" in paired.stdout
    # The pair's stacks: containers, a network and a volume each (the sidecar's /state).
    seen = Footprint.of(sandbox_dir)
    assert seen.containers and seen.networks and seen.volumes, seen
    assert mounts_under(sandbox_dir) and loop_devices_of(sandbox_dir)
    report = inv("status", "--json", env_file=env_file)
    assert report.returncode == 0, report.stdout + report.stderr
    data = json.loads(report.stdout)
    assert data["ok"] is True, [c for c in data["checks"] if not c["ok"]]
    assert data["aws"]["eip_holder"] == "master"
    print(f"pair and status: {time.monotonic() - started:.1f} s")

    # The Elastic IP's address reaches the master's GitLab.
    url = state["gitlab_url"]
    _wait_until(
        "readiness through the forwarder", lambda: _http_status(f"{url}/-/readiness") == 200, 180
    )
    port = int(url.rsplit(":", 1)[1])

    # The Elastic IP moves to the slave, still in gitlab-slave: clients are refused.
    ec2 = _ec2(state["moto_url"])
    allocation = ec2.describe_addresses()["Addresses"][0]["AllocationId"]
    ec2.associate_address(
        AllocationId=allocation, InstanceId=slave["instance_id"], AllowReassociation=True
    )
    _wait_until("the forwarder refusing", lambda: _first_bytes(port) is None, 15)
    decision = json.loads((sandbox_dir / "forwarder.json").read_text())
    assert decision["reason"] == f"{slave['instance_id']} is closed to clients (in gitlab-slave)"

    # The slave is opened (its GitLab is only created: a listener stands in on its HTTP port):
    # the forwarder follows the Elastic IP there.
    groups = {
        g["GroupName"]: g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
    }
    listener = Listener(slave["ports"]["GITLAB_HTTP_PORT"], b"the slave answers\n")
    try:
        ec2.modify_instance_attribute(
            InstanceId=master["instance_id"], Groups=[groups["gitlab-slave"]]
        )
        ec2.modify_instance_attribute(
            InstanceId=slave["instance_id"], Groups=[groups["gitlab-open"]]
        )
        _wait_until(
            "the forwarder following the Elastic IP",
            lambda: _first_bytes(port) == b"the slave answers\n",
            15,
        )
    finally:
        listener.close()

    # The Role tags swap, as a promotion leaves them: each role now resolves to the other
    # instance, reached at its own address and with its own stack's settings.
    for who, role in ((master, "slave"), (slave, "master")):
        ec2.create_tags(
            Resources=[who["instance_id"]],
            Tags=[{"Key": "Role", "Value": role}, {"Key": "Epoch", "Value": "2"}],
        )
    swapped = inv("status", "--json", env_file=env_file)
    views = {h["role"]: h for h in json.loads(swapped.stdout)["hosts"]}
    assert f"@{slave['ssh']})" in views["master"]["target"], views["master"]
    assert {s["service"]: s["state"] for s in views["master"]["services"]}["gitlab"] == "created"
    assert f"@{master['ssh']})" in views["slave"]["target"], views["slave"]
    assert {s["service"]: s["state"] for s in views["slave"]["services"]}["gitlab"] == "running"

    # Down removes all of it, and again is a no-op.
    before_down = time.monotonic()
    down = inv("sandbox.down", "--directory", str(sandbox_dir), "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "removed host container" in " ".join(json.loads(down.stdout)["removed"])
    print(f"sandbox down: {time.monotonic() - before_down:.1f} s")
    assert not sandbox_dir.exists()
    client = docker.from_env()
    for inst in state["instances"]:
        label = f"com.docker.compose.project={inst['stack']}"
        assert not labelled(client, label)
        assert not client.volumes.list(filters={"label": label})
        assert not client.networks.list(filters={"label": label})
    assert not labelled(client, f"gitlab-dr.sandbox={sandbox_dir}")
    for pid in (state["moto_pid"], state["forwarder_pid"]):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not processes_mentioning(str(sandbox_dir))
    assert not processes_mentioning(state["moto_url"].rsplit(":", 1)[1] + " ")
    assert _http_status(f"{url}/-/readiness") == 0
    assert "unmounted and removed instance a's filesystem" in " ".join(
        json.loads(down.stdout)["removed"]
    )
    assert_no_mount_or_loop_device(sandbox_dir)
    assert Footprint.of(sandbox_dir) == Footprint()
    # Nor is any volume its containers mounted (a one-off container's, say).
    mounted = watch.close()
    assert seen.volumes <= mounted, (seen.volumes, mounted)
    assert not mounted & engine_volumes(), mounted & engine_volumes()

    twice = inv("sandbox.down", "--directory", str(sandbox_dir))
    assert twice.returncode == 0, twice.stdout + twice.stderr
    assert "nothing to remove" in twice.stdout


def test_sandbox_up_without_the_gitlab_image_is_one_line_and_leaves_nothing(
    sandbox_dir: Path,
) -> None:
    failed = inv(
        "sandbox.up", "--directory", str(sandbox_dir), "--gitlab-image", "gitlab-dr/absent:none"
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        "error: image gitlab-dr/absent:none is missing: run make images"
    ]
    assert not sandbox_dir.exists()
    assert not processes_mentioning(str(sandbox_dir))


def test_sandbox_down_without_its_record_still_removes_everything(sandbox_dir: Path) -> None:
    up = inv("sandbox.up", "--directory", str(sandbox_dir), "--gitlab-image", STANDIN, "--json")
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads(up.stdout)
    assert len(mounts_under(sandbox_dir)) == 2
    (sandbox_dir / "state.json").unlink()

    down = inv("sandbox.down", "--directory", str(sandbox_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"stopped the moto server, left running (pid {state['moto_pid']})" in down.stdout
    assert f"stopped the forwarder, left running (pid {state['forwarder_pid']})" in down.stdout
    for name in NAMES:
        assert f"unmounted and removed instance {name}'s filesystem" in down.stdout
    assert_no_mount_or_loop_device(sandbox_dir)
    assert not sandbox_dir.exists()
    assert not labelled(docker.from_env(), f"gitlab-dr.sandbox={sandbox_dir}")
    assert not processes_mentioning(str(sandbox_dir))


def test_sandbox_down_names_what_it_could_not_remove_and_fails_until_it_can(
    sandbox_dir: Path,
) -> None:
    client = docker.from_env()
    stack = SandboxLayout(sandbox_dir.resolve()).stack("a")
    volume = client.volumes.create(
        f"{stack}_sync-state", labels={"com.docker.compose.project": stack}
    )
    # A container outside the sandbox holds the stack's volume: the engine refuses to remove it.
    holder = client.containers.create(
        base_image(), ["true"], volumes={str(volume.name): {"bind": "/state", "mode": "rw"}}
    )
    try:
        held = inv("sandbox.down", "--directory", str(sandbox_dir))
        assert held.returncode == 1, held.stdout + held.stderr
        left = [line for line in held.stdout.splitlines() if "could not remove" in line]
        assert len(left) == 1 and left[0].startswith(
            f"sandbox: could not remove volume {volume.name}: "
        ), held.stdout
        assert held.stderr.strip().splitlines() == [
            f"error: sandbox.down left 1 thing(s) of the sandbox in {sandbox_dir.resolve()} "
            "(each named above); free them and run it again"
        ]
    finally:
        remove_container(holder)
    freed = inv("sandbox.down", "--directory", str(sandbox_dir))
    assert freed.returncode == 0, freed.stdout + freed.stderr
    assert f"removed volume {volume.name}" in freed.stdout
    assert not client.volumes.list(filters={"label": f"com.docker.compose.project={stack}"})
