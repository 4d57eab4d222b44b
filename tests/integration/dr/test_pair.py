"""``inv pair`` and ``inv status`` for real: two sshd hosts in front of the local engine.

The tasks run as commands, with their settings in a file named by ENV_FILE, as an operator
would run them. Both stacks share the local engine, so each host gets its own project name,
folders and ports through MASTER_OVERRIDES / SLAVE_OVERRIDES; the master's sidecar reaches the
slave's receiver through its published port on the engine's bridge address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container

from ops.hosts.engine import labelled
from ops.rehearsal.loopfs import LoopBtrfs
from ops.rehearsal.processes import free_port
from tests.integration.sshd_host import SshdHost, SshdHosts
from tests.integration.tasks_cli import inv

pytestmark = pytest.mark.integration

STANDIN = os.environ.get("STANDIN_IMAGE", "gitlab-dr/gitlab-standin:local")


def _overrides(host: SshdHost, home: Path) -> str:
    words = {
        "PROJECT_NAME": host.settings.project_name,
        "SSH_KEY_FILE": host.settings.ssh_key_file,
        "SSH_KNOWN_HOSTS": host.settings.ssh_known_hosts,
        "GITLAB_HOME": str(home / "gitlab"),
        "SYNC_HOME": str(home / "gitlab-sync"),
        "SYNC_PORT": str(free_port()),
        "GITLAB_HTTP_PORT": str(free_port()),
        "GITLAB_HTTPS_PORT": str(free_port()),
        "GITLAB_SSH_PORT": str(free_port()),
        "GITLAB_REGISTRY_PORT": str(free_port()),
        "METRICS_PORT": str(free_port()),
    }
    return " ".join(f"{k}={v}" for k, v in words.items())


def _env_file(
    tmp_path: Path, master: SshdHost, slave: SshdHost, slave_home: Path | None = None
) -> Path:
    """The settings of a pair of these hosts; the slave keeps GITLAB_HOME and SYNC_HOME in
    ``slave_home`` (``tmp_path/slave`` by default)."""
    # The engine's bridge address (its gateway, or the subnet's first address when unnamed).
    ipam = docker.from_env().networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(ipaddress.ip_network(ipam["Subnet"])[1])
    slave_words = _overrides(slave, slave_home or tmp_path / "slave")
    slave_port = dict(w.split("=", 1) for w in slave_words.split())["SYNC_PORT"]
    lines = {
        "USE_AWS": "false",
        "MASTER_HOST": f"127.0.0.1:{master.port}",
        "SLAVE_HOST": f"127.0.0.1:{slave.port}",
        "SLAVE_SYNC_ADDRESS": f"{gateway}:{slave_port}",
        "GITLAB_IMAGE": STANDIN,
        "BASE_IMAGE": master.settings.base_image,
        "SSH_USER": master.settings.ssh_user,
        "SSH_CONNECT_TIMEOUT": "5s",
        "SYNC_INTERVAL": "20s",
        "MASTER_OVERRIDES": _overrides(master, tmp_path / "master"),
        "SLAVE_OVERRIDES": slave_words,
    }
    path = tmp_path / "pair.env"
    path.write_text("".join(f"{k}='{v}'\n" for k, v in lines.items()))
    return path


def _stack_containers(project: str) -> list[Container]:
    return labelled(docker.from_env(), f"com.docker.compose.project={project}")


def _pairing(project: str) -> object:
    """What ``gitlab-sync ls`` says in the sidecar of the stack ``project`` (None: not paired)."""
    (sidecar,) = [
        c
        for c in _stack_containers(project)
        if c.labels.get("com.docker.compose.service") == "gitlab-rsync"
    ]
    done = sidecar.exec_run(["gitlab-sync", "ls", "--json"])
    assert done.exit_code == 0 and isinstance(done.output, bytes), done.output
    return json.loads(done.output)


def test_pair_refuses_a_slave_whose_btrfs_is_mounted_without_user_subvol_rm_allowed(
    sshd_hosts: SshdHosts, tmp_path: Path
) -> None:
    """The AMI's layout (one btrfs, subvolumes for GITLAB_HOME and SYNC_HOME) but mounted
    without the option the sidecar needs to delete snapshots: refused, naming the host and the
    problem, before anything is paired or started."""
    master, slave = sshd_hosts.start("master"), sshd_hosts.start("slave")
    disk = LoopBtrfs(tmp_path / "slave-disk")
    disk.make("256M", ("gitlab", "gitlab-sync"))
    try:
        subprocess.run(["umount", str(disk.mountpoint)], check=True)
        subprocess.run(
            ["mount", "-o", "loop,noatime", str(disk.image), str(disk.mountpoint)], check=True
        )
        env_file = _env_file(tmp_path, master, slave, slave_home=disk.mountpoint)

        refused = inv("pair", env_file=env_file)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"refused: slave ({slave.host.user}@127.0.0.1:{slave.port}): ")
        assert "SYNC_HOME is mounted without user_subvol_rm_allowed" in line, line
        assert "master" not in line.removeprefix("refused: ")
        # asked again after a restart (its mounts made afresh), and still wrong
        assert "its sidecar sees btrfs set up wrongly; restarting it" in refused.stdout
        for host in (master, slave):
            project = host.settings.project_name
            assert _pairing(project) is None
            services = {c.labels["com.docker.compose.service"] for c in _stack_containers(project)}
            assert services == {"gitlab-rsync", "gitlab-verify"}  # no GitLab created or started
    finally:
        sshd_hosts.close()  # the sidecars hold the mount: gone before it is unmounted
        assert disk.remove() == []


def test_pair_then_status_over_ssh(sshd_hosts: SshdHosts, tmp_path: Path) -> None:
    master, slave = sshd_hosts.start("master"), sshd_hosts.start("slave")
    env_file = _env_file(tmp_path, master, slave)

    first = inv("pair", env_file=env_file)
    assert first.returncode == 0, first.stdout + first.stderr
    for step in (
        "slave: accepts the master's key",
        "master: sync started",
        "master: GitLab started",
        "complete pass",
        # the temporary folders are not on btrfs: both hosts say why they run the fallback
        "master: the fallback: the data is on ",
        "slave: the fallback: the data is on ",
        "both hosts run the fallback",
    ):
        assert step in first.stdout, first.stdout

    client = docker.from_env()

    def state(project: str, service: str) -> str:
        found = labelled(
            client, f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"
        )
        assert len(found) == 1
        return str(found[0].status)

    assert state(master.settings.project_name, "gitlab") == "running"
    assert state(slave.settings.project_name, "gitlab") == "created"
    snapshot = tmp_path / "slave" / "gitlab-sync" / "current"
    assert (snapshot / "config" / "gitlab-secrets.json").is_file()

    again = inv("pair", env_file=env_file)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to change: already paired" in again.stdout

    # A slave whose GitLab runs (an old master back from a reboot, made the slave again): the
    # pair stops it, since it would serve old data and stay on it after a restore.
    (slave_gitlab,) = labelled(
        client,
        f"com.docker.compose.project={slave.settings.project_name}",
        "com.docker.compose.service=gitlab",
    )
    slave_gitlab.start()
    repaired = inv("pair", env_file=env_file)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "GitLab was running on this slave's old data; stopped" in repaired.stdout
    assert state(slave.settings.project_name, "gitlab") == "exited"

    report = inv("status", "--json", env_file=env_file)
    assert report.returncode == 0, report.stdout + report.stderr
    data = json.loads(report.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    for name in (
        "master host",
        "slave host",
        "master serving",
        "master sending",
        "slave receiving",
        "last complete pass",
        "epoch",
        "slave gitlab not started",
        "master sync method",
        "slave sync method",
    ):
        assert checks[name]["ok"], checks[name]
    assert checks["slave sync method"]["detail"].startswith("fallback: the data is on ")
    assert data["hosts"][1]["sync"]["layout"]["method"] == "fallback"
    assert data["ok"] is True

    slave.container.stop(timeout=1)
    down = inv("status", env_file=env_file)
    assert down.returncode == 1
    assert "FAIL slave host" in down.stdout
    assert "critical check(s) failed: slave host" in down.stderr
    assert "Traceback" not in down.stdout + down.stderr


def test_pair_with_a_bad_setting_is_one_line_and_touches_nothing(
    sshd_hosts: SshdHosts, tmp_path: Path
) -> None:
    master, slave = sshd_hosts.start("master"), sshd_hosts.start("slave")
    env_file = _env_file(tmp_path, master, slave)
    env_file.write_text(env_file.read_text() + "SLAVE_OVERRIDES='SYNC_PORT=99999'\n")
    failed = inv("pair", env_file=env_file)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines() == [
        "error: SLAVE_OVERRIDES: SYNC_PORT: expected a port number from 1 to 65535, got '99999'"
    ]
    assert not labelled(
        docker.from_env(), f"com.docker.compose.project={master.settings.project_name}"
    )
