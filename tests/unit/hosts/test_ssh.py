"""ops.hosts.ssh without a network: the ssh command line, hosts from settings, how failures read."""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

import pytest

from ops.errors import HostError, OpsError, SettingError
from ops.hosts.ssh import (
    DIAL_STDIO,
    SSH_SILENT,
    Host,
    control_dir,
    docker_failure,
    host_for,
    ping_api_version,
    ssh_argv,
    ssh_failure,
    ssh_options,
)
from ops.settings import Settings


def options_of(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_ssh_checks_host_keys_in_batch_mode_with_only_the_given_key(settings: Settings) -> None:
    options = options_of(ssh_options(settings))
    assert options["BatchMode"] == "yes"
    assert options["StrictHostKeyChecking"] == "yes"
    assert options["UserKnownHostsFile"] == "/keys/known_hosts"
    assert options["GlobalKnownHostsFile"] == "/dev/null"
    assert options["IdentityFile"] == '"/keys/operator key"'  # quoted: it has a space
    assert options["IdentitiesOnly"] == "yes"
    assert options["PasswordAuthentication"] == "no"
    assert options["ConnectTimeout"] == "8"  # 7.5s, rounded up
    assert options["ServerAliveInterval"] == "8"
    assert options["ServerAliveCountMax"] == "3"
    assert options["ControlMaster"] == "auto"


def test_connections_are_shared_only_between_identical_options(settings: Settings) -> None:
    path = options_of(ssh_options(settings))["ControlPath"]
    other = dataclasses.replace(settings, ssh_known_hosts="/keys/other_known_hosts")
    assert path.startswith(f"{os.environ['XDG_RUNTIME_DIR']}/gitlab-dr-ssh-{os.getuid()}/")
    assert path.endswith("-%C")
    assert options_of(ssh_options(other))["ControlPath"] != path


def test_percent_in_a_path_is_not_an_ssh_token(settings: Settings) -> None:
    odd = dataclasses.replace(settings, ssh_key_file="/keys/100%C")
    assert options_of(ssh_options(odd))["IdentityFile"] == "/keys/100%%C"


def test_a_shared_connection_directory_open_to_others_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    shared = tmp_path / "run" / f"gitlab-dr-ssh-{os.getuid()}"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(OpsError, match="mode 0700"):
        control_dir()


def test_ssh_argv_ends_with_the_fixed_remote_command(settings: Settings, host: Host) -> None:
    argv = ssh_argv(host, settings, DIAL_STDIO)
    assert argv[0].endswith("/ssh")
    assert argv[-10:] == [
        "-T", "-l", "admin", "-p", "2201", "--", "10.0.0.5", "docker", "system", "dial-stdio",
    ]  # fmt: skip


def test_host_for_reads_the_address_and_port_of_a_role(settings: Settings) -> None:
    both = dataclasses.replace(settings, master_host="10.0.0.5:2201", slave_host="[fd00::2]:22")
    assert host_for("master", both) == Host("master", "10.0.0.5", 2201, "admin")
    assert host_for("slave", both) == Host("slave", "fd00::2", 22, "admin")
    assert str(host_for("slave", both)) == "slave (admin@[fd00::2]:22)"
    assert host_for("master", dataclasses.replace(settings, master_host="gitlab-a")).port == 22


def test_host_for_an_unset_role_is_a_setting_error(settings: Settings) -> None:
    with pytest.raises(SettingError, match=r"^MASTER_HOST is not set"):
        host_for("master", settings)


@pytest.mark.parametrize("address", ["-oProxyCommand=sh", "a b", "user@host", ""])
def test_an_address_ssh_would_misread_is_refused(address: str) -> None:
    with pytest.raises(SettingError, match="not usable with ssh"):
        Host("master", address)


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        (
            "@@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
            "Host key verification failed.\r\n",
            "host key changed: the host's key is not the one SSH_KNOWN_HOSTS (/keys/known_hosts)",
        ),
        (
            "No ED25519 host key is known for [10.0.0.5]:2201 and you have requested strict "
            "checking.\r\nHost key verification failed.\r\n",
            "host key unknown: SSH_KNOWN_HOSTS (/keys/known_hosts) has no key for this host",
        ),
        (
            "admin@10.0.0.5: Permission denied (publickey).\r\n",
            "SSH key refused: the host does not accept SSH_KEY_FILE (/keys/operator key) for "
            "user admin",
        ),
        (
            'Load key "/keys/operator key": invalid format\r\n',
            'SSH key unusable: SSH_KEY_FILE (/keys/operator key): Load key "/keys/operator key"',
        ),
        (
            "ssh: connect to host 10.0.0.5 port 2201: Connection refused\r\n",
            "unreachable: connection refused",
        ),
        (
            "ssh: connect to host 10.0.0.5 port 2201: Connection timed out\r\n",
            "unreachable: no answer within 8s",
        ),
        ("Connection timed out during banner exchange\r\n", "unreachable: no answer within 8s"),
        ("ssh: connect to host 10.0.0.5 port 22: No route to host", "no route to host"),
        (
            "ssh: Could not resolve hostname gitlab-a: Name or service not known",
            "unreachable: cannot resolve 10.0.0.5",
        ),
        (
            "kex_exchange_identification: Connection closed by remote host",
            "the SSH server closed the connection",
        ),
        (SSH_SILENT, "unreachable: the SSH connection was lost"),
        ("something new\r\n", "ssh failed: something new"),
    ],
)
def test_each_ssh_failure_reads_as_one_sentence(
    settings: Settings, host: Host, stderr: str, expected: str
) -> None:
    message = ssh_failure(stderr, host, settings)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("stderr", "status", "expected"),
    [
        ("bash: line 1: docker: command not found\n", 127, "no Docker: ssh works but"),
        ("sh: 1: docker: not found\n", 127, "no Docker: ssh works but"),
        (
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker "
            "daemon running?\n",
            1,
            "Docker engine not running: Cannot connect",
        ),
        (
            "failed to open the raw stream connection: dial unix /var/run/docker.sock: connect: "
            "connection refused\n",
            1,
            "Docker engine not running: failed to open",
        ),
        (
            "permission denied while trying to connect to the Docker daemon socket at "
            "unix:///var/run/docker.sock\n",
            1,
            "Docker refused user admin (not in the docker group?)",
        ),
        ("docker: 'system dial-stdio' is not a docker command.\n", 1, "(Docker 18.09+)"),
    ],
)
def test_each_docker_failure_reads_as_one_sentence(
    host: Host, stderr: str, status: int, expected: str
) -> None:
    message = docker_failure(stderr, status, host)
    assert expected in message
    assert "\n" not in message


def test_the_api_version_comes_from_the_ping_answer(host: Host) -> None:
    answer = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK"
    assert ping_api_version(answer, host) == "1.41"
    with pytest.raises(HostError, match=r"^master \(admin@10.0.0.5:2201\): .*500"):
        ping_api_version(b"HTTP/1.1 500 Internal Server Error\r\n\r\n", host)


def test_a_bastion_carries_the_hop_with_the_same_key_and_known_hosts(settings: Settings) -> None:
    plain = ssh_options(settings)
    assert not any(word.startswith("ProxyCommand=") for word in plain)
    through = ssh_options(dataclasses.replace(settings, ssh_bastion="ops@bastion.example:2200"))
    (proxy,) = [word for word in through if word.startswith("ProxyCommand=")]
    jump = shlex.split(proxy.removeprefix("ProxyCommand="))
    assert jump[-8:] == ["-W", "%h:%p", "-l", "ops", "-p", "2200", "--", "bastion.example"]
    # The hop to the bastion is as strict as the hop it carries: same key, same known hosts.
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "IdentitiesOnly=yes"):
        assert option in jump
    assert any(word.startswith("IdentityFile=") for word in jump)
    # A connection made through the bastion is never shared with a direct one.
    control = [w for w in through if w.startswith("ControlPath=")]
    assert control != [w for w in plain if w.startswith("ControlPath=")]


def test_a_bastion_without_a_port_is_reached_on_22(settings: Settings) -> None:
    through = ssh_options(dataclasses.replace(settings, ssh_bastion="admin@10.0.0.5"))
    (proxy,) = [word for word in through if word.startswith("ProxyCommand=")]
    jump = shlex.split(proxy.removeprefix("ProxyCommand="))
    assert jump[-6:] == ["-l", "admin", "-p", "22", "--", "10.0.0.5"]
