"""SSH to a host: the endpoint, the ssh command line, its local files, and what its failures mean.

The options (:func:`ssh_options`, the one place they are decided): host keys only from
SSH_KNOWN_HOSTS with ``StrictHostKeyChecking=yes``; ``BatchMode=yes`` (never a prompt); only
SSH_KEY_FILE (``IdentitiesOnly``, public key only); ``ConnectTimeout`` from
SSH_CONNECT_TIMEOUT; ``ServerAliveInterval``/``CountMax`` so a silent host is dropped; no
forwarding; and connection sharing (``ControlMaster=auto``, sockets in a private directory) so
each new connection to a host skips the SSH handshake.

Every ssh runs the same remote command, ``docker system dial-stdio`` (:data:`DIAL_STDIO`): the
:func:`preflight` sends it one ``/_ping``, and :mod:`ops.hosts.relay` hands it each connection
the Docker SDK makes. What ssh writes when it fails is read with the sidecar's one table of
OpenSSH's messages (:mod:`gitlab_sync.ssh_errors`) and said as one sentence (:func:`ssh_failure`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.utils import version_lt

from gitlab_sync.ssh_errors import SshFailure, classify
from ops.errors import HostError, OpsError, SettingError
from ops.settings import Settings

DIAL_STDIO = ("docker", "system", "dial-stdio")
"""What ssh runs on the host: the docker CLI relays one connection to the engine's socket."""

PREFLIGHT_GRACE = 10.0
"""Seconds a preflight allows, beyond SSH_CONNECT_TIMEOUT, for authentication and Docker."""

CONTROL_PERSIST = 60
"""Seconds a shared SSH connection to a host stays open once its last user is gone."""

SSH_FAILED = 255
"""ssh's own exit status; any other is the remote command's."""

SSH_SILENT = "ssh exited with status 255 and no message"
"""What a shared (ControlMaster) connection's client leaves when the host vanishes under it."""

_PING = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"


# --- hosts and the ssh command line ---------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """An SSH endpoint whose Docker engine we reach; ``name`` (its role) is for messages."""

    name: str
    address: str
    port: int = 22
    user: str = "admin"

    def __post_init__(self) -> None:
        for field, value in (("address", self.address), ("user", self.user)):
            if not value or value.startswith("-") or any(c.isspace() or c in "@/" for c in value):
                raise SettingError(f"host {self.name}: {field} {value!r} is not usable with ssh")
        if not 1 <= self.port <= 65535:
            raise SettingError(f"host {self.name}: port {self.port} is not a port number")

    @property
    def target(self) -> str:
        """``user@address:port``, as messages and URLs show it."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{address}:{self.port}"

    def __str__(self) -> str:
        return f"{self.name} ({self.target})"


@dataclass(frozen=True)
class LocalHost(Host):
    """The host we run on, reached through its engine's socket (no ssh): messages name the
    socket, not an ssh target that is not used."""

    socket: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.socket})"


def host_for(role: str, settings: Settings) -> Host:
    """The host for ``role`` (master or slave) from MASTER_HOST / SLAVE_HOST: ``address[:port]``."""
    name = f"{role.upper()}_HOST"
    return parse_host(role, str(settings.require(name)), settings.ssh_user, name)


def parse_host(role: str, text: str, user: str, where: str) -> Host:
    """The host at ``address[:port]`` (port 22 when none); ``where`` names the setting."""
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+)(?::(\d+))?|([0-9a-fA-F:]+)", text)
    if not match:
        raise SettingError(f"{where}: expected an address or address:port, got {text!r}")
    address = match.group(1) or match.group(3) or match.group(5)
    port = match.group(2) or match.group(4) or "22"
    return Host(role, address, int(port), user)


def _ssh_path(path: str, suffix: str = "") -> str:
    """A local path as an ssh option value: absolute, ``%`` escaped, quoted if it has spaces."""
    if '"' in path or "\n" in path:
        raise SettingError(f"path {path!r} cannot be given to ssh")
    value = os.path.abspath(os.path.expanduser(path)).replace("%", "%%") + suffix
    return f'"{value}"' if any(c.isspace() for c in value) else value


def control_dir() -> Path:
    """The private directory of the shared connections' sockets (checked: ours, mode 0700)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"gitlab-dr-ssh-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise OpsError(f"{path} must be a directory of this user's with mode 0700 (remove it)")
    return path


def ssh_options(settings: Settings) -> list[str]:
    """The ``-o`` options every ssh to a host gets: the one place they are decided."""
    timeout = max(1, math.ceil(settings.ssh_connect_timeout))
    options = [
        "BatchMode=yes",  # never a prompt: a missing key or host key fails at once
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={_ssh_path(settings.ssh_known_hosts)}",
        "GlobalKnownHostsFile=/dev/null",  # SSH_KNOWN_HOSTS alone says which keys are right
        "UpdateHostKeys=no",
        "CheckHostIP=no",
        f"IdentityFile={_ssh_path(settings.ssh_key_file)}",
        "IdentitiesOnly=yes",
        "PreferredAuthentications=publickey",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        f"ConnectTimeout={timeout}",
        "ConnectionAttempts=1",
        f"ServerAliveInterval={timeout}",  # a host gone silent is dropped after 3 intervals
        "ServerAliveCountMax=3",
        "ForwardAgent=no",
        "ForwardX11=no",
        "ClearAllForwardings=yes",
        "PermitLocalCommand=no",
        "RequestTTY=no",
        "LogLevel=ERROR",
    ]
    if settings.ssh_bastion:
        options.append(f"ProxyCommand={shlex.join(jump_command(settings.ssh_bastion, options))}")
    # Connections are shared only between ssh processes with these very options: a test's
    # wrong key or other known_hosts never rides on a connection made with the right ones.
    digest = hashlib.sha256("\0".join(options).encode()).hexdigest()[:10]
    control = _ssh_path(str(control_dir()), f"/{digest}-%C")
    options += ["ControlMaster=auto", f"ControlPath={control}", f"ControlPersist={CONTROL_PERSIST}"]
    return [word for option in options for word in ("-o", option)]


def jump_command(bastion: str, options: Sequence[str]) -> list[str]:
    """The ssh that carries a connection through ``bastion`` (``user@host[:port]``, hosts in
    private subnets): the same key, known hosts and never-a-prompt options as the hop it
    carries (a ProxyCommand rather than ``-J``, which would drop them)."""
    user, _, rest = bastion.rpartition("@")
    address, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    ssh = shutil.which("ssh") or "ssh"
    return [
        ssh,
        *(word for option in options for word in ("-o", option)),
        "-W",
        "%h:%p",
        "-l",
        user,
        "-p",
        port or "22",
        "--",
        address,
    ]


def ssh_argv(host: Host, settings: Settings, command: Sequence[str]) -> list[str]:
    """The full ssh command line that runs ``command`` (fixed words, no user data) on ``host``."""
    ssh = shutil.which("ssh")
    if ssh is None:
        raise OpsError("the OpenSSH client (ssh) is not installed: apt-get install openssh-client")
    return [
        ssh,
        *ssh_options(settings),
        "-T",
        "-l",
        host.user,
        "-p",
        str(host.port),
        "--",
        host.address,
        *command,
    ]


# --- what failed, in one sentence ----------------------------------------------------------------


def last_line(text: str) -> str:
    """The last non-empty line of ``text``, stripped and cut to 240 characters."""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= 240 else line[:237] + "..."


def ssh_failure(stderr: str, host: Host, settings: Settings) -> str:
    """What an ssh to ``host`` that exited 255 could not do, from what it wrote on stderr."""
    known, key = settings.ssh_known_hosts, settings.ssh_key_file
    sentences = {
        SshFailure.HOST_KEY_CHANGED: (
            f"host key changed: the host's key is not the one SSH_KNOWN_HOSTS ({known}) holds "
            "for it (a rebuilt host, or another machine at this address)"
        ),
        SshFailure.HOST_KEY_UNKNOWN: (
            f"host key unknown: SSH_KNOWN_HOSTS ({known}) has no key for this host"
        ),
        SshFailure.KEY_REFUSED: (
            f"SSH key refused: the host does not accept SSH_KEY_FILE ({key}) for user {host.user}"
        ),
        SshFailure.KEY_UNUSABLE: f"SSH key unusable: SSH_KEY_FILE ({key}): {last_line(stderr)}",
        SshFailure.CONNECTION_REFUSED: (
            "unreachable: connection refused (no SSH server on that port)"
        ),
        SshFailure.TIMED_OUT: (
            f"unreachable: no answer within {math.ceil(settings.ssh_connect_timeout)}s"
        ),
        SshFailure.NO_ROUTE: "unreachable: no route to host",
        SshFailure.UNRESOLVED: f"unreachable: cannot resolve {host.address}",
        SshFailure.CLOSED: "unreachable: the SSH server closed the connection",
    }
    kind = classify(stderr)
    if kind is not None:
        return sentences[kind]
    if SSH_SILENT in stderr:
        return "unreachable: the SSH connection was lost (the host went away)"
    return f"ssh failed: {last_line(stderr) or 'no message'}"


def docker_failure(stderr: str, status: int, host: Host) -> str:
    """What ``docker system dial-stdio`` could not do on a host ssh reached."""
    text = stderr.lower()
    line = last_line(stderr)
    if status == 127 or "command not found" in text or "docker: not found" in text:
        return f"no Docker: ssh works but `docker system dial-stdio` failed: {line or 'no docker'}"
    if "is not a docker command" in text or "unknown command" in text:
        return f"no Docker: this docker CLI has no `system dial-stdio` (Docker 18.09+): {line}"
    if "permission denied" in text:
        return f"Docker refused user {host.user} (not in the docker group?): {line}"
    engine_down = ("cannot connect to the docker daemon", "daemon running", "raw stream", "dial ")
    if any(needle in text for needle in engine_down):
        return f"Docker engine not running: {line}"
    return f"`docker system dial-stdio` failed (exit {status}): {line or 'no message'}"


# --- preflight ---------------------------------------------------------------------------------


def _check_local_files(settings: Settings) -> None:
    key = Path(settings.ssh_key_file).expanduser()
    known = Path(settings.ssh_known_hosts).expanduser()
    if not settings.ssh_key_file or not key.is_file():
        raise SettingError(f"SSH_KEY_FILE names {key}, which is not a file")
    if not os.access(key, os.R_OK):
        raise SettingError(f"SSH_KEY_FILE {key} is not readable by this user")
    if key.stat().st_mode & 0o077:
        raise SettingError(f"SSH_KEY_FILE {key} is open to other users; ssh refuses it (chmod 600)")
    if not settings.ssh_known_hosts or not known.is_file():
        raise SettingError(
            f"SSH_KNOWN_HOSTS names {known}, which is not a file: put the hosts' keys in it"
        )


def ping_api_version(response: bytes, host: Host) -> str:
    """The engine's API version from its answer to ``GET /_ping``; a HostError if it is not one."""
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status, *headers = head.split("\r\n")
    if not re.match(r"HTTP/1\.[01] 200\b", status):
        raise HostError(f"{host}: Docker engine answered {status.strip() or 'nothing'} to a ping")
    for header in headers:
        name, _, value = header.partition(":")
        if name.strip().lower() == "api-version" and value.strip():
            return value.strip()
    raise HostError(f"{host}: Docker engine gave no API version")


def preflight(host: Host, settings: Settings, *, timeout: float | None = None) -> str:
    """Check that ``host``'s Docker engine answers over SSH and return its API version.

    One ssh runs ``docker system dial-stdio`` (what every later connection runs) and sends the
    engine a ``/_ping``. Every failure is a one-line :class:`HostError` naming the host and what
    failed (unreachable, key refused, host key changed or unknown, no Docker, engine not
    running), within ``timeout`` seconds (default SSH_CONNECT_TIMEOUT + PREFLIGHT_GRACE).
    """
    _check_local_files(settings)
    deadline = timeout if timeout is not None else settings.ssh_connect_timeout + PREFLIGHT_GRACE
    argv = ssh_argv(host, settings, DIAL_STDIO)
    try:
        done = subprocess.run(
            argv,
            input=_PING,
            capture_output=True,
            timeout=deadline,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HostError(f"{host}: unreachable: no answer within {deadline:g}s") from None
    stderr = done.stderr.decode("utf-8", "replace")
    if done.stdout.startswith(b"HTTP/"):
        version = ping_api_version(done.stdout, host)
        if version_lt(version, MINIMUM_DOCKER_API_VERSION):
            raise HostError(f"{host}: Docker engine too old (API {version})")
        return version
    if done.returncode == SSH_FAILED:
        raise HostError(f"{host}: {ssh_failure(stderr, host, settings)}")
    raise HostError(f"{host}: {docker_failure(stderr, done.returncode, host)}")
