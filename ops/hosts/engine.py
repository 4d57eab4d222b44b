"""Hosts over SSH: each host's Docker engine through the OpenSSH client, and the stack on it.

How ssh is run, and how its options reach it
--------------------------------------------
The Docker SDK's own ``ssh://`` support cannot carry our options. With ``use_ssh_client=True``
(``docker/transport/sshconn.py``) it runs ``ssh -l USER -p PORT -- HOST docker system
dial-stdio``, found on ``$PATH`` with a copy of ``os.environ``: no ``-o``, no ``-F``, and
OpenSSH reads no options from the environment, so the only hooks are ``~/.ssh/config`` (the
operator's file) or a wrapper named ``ssh`` first on the *process's* PATH (global state). It
also needs paramiko importable even when it does not use it (Debian's ``docker-compose`` too),
lets ssh's stderr through to the terminal, never reaps its ssh processes, and hands the SDK a
fake socket that cannot half-close, so a command's stdin could never be ended.

So each connection is made here, with the same remote command: a :class:`Relay` listens on a
unix socket in a private temporary directory (mode 0700) and, for every connection to it,
starts ``ssh <options> -l USER -p PORT -- HOST docker system dial-stdio`` (:func:`ssh_argv`)
with that very connection as ssh's stdin and stdout: no byte is copied in Python, and
half-close, timeouts and HTTP keep-alive are the kernel's. :func:`connect` returns a plain
``docker.DockerClient`` on ``unix://<relay>`` (the SDK's best-trodden path), and docker-compose
gets the same relay as ``DOCKER_HOST``, so both share one transport and one set of options.
ssh's stderr goes to a temporary file per connection, read when ssh fails, so an error names
what failed.

The options (:func:`ssh_options`, the one place they are decided): host keys only from
SSH_KNOWN_HOSTS with ``StrictHostKeyChecking=yes``; ``BatchMode=yes`` (never a prompt); only
SSH_KEY_FILE (``IdentitiesOnly``, public key only); ``ConnectTimeout`` from
SSH_CONNECT_TIMEOUT; ``ServerAliveInterval``/``CountMax`` so a silent host is dropped; no
forwarding; and connection sharing (``ControlMaster=auto``, sockets in a private directory) so
each new connection to a host skips the SSH handshake.

The stack
---------
``compose/docker-compose.yml`` is the single source of truth for how containers are made: it is
deployed with ``docker-compose`` (Debian's 1.29, or a v2 binary of that name) with
``-p PROJECT_NAME`` and the settings as its environment, and no other environment. Containers
are then found with the SDK by their Compose labels (``com.docker.compose.project`` and
``com.docker.compose.service``), never by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import docker
import docker.errors
import requests.exceptions
from docker.constants import DEFAULT_DOCKER_API_VERSION, MINIMUM_DOCKER_API_VERSION
from docker.models.containers import Container
from docker.utils import version_lt

from ops.errors import HostError, OpsError, SettingError
from ops.settings import Settings

STACK_FILE = Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml"
"""The Compose stack deployed on every host."""

DIAL_STDIO = ("docker", "system", "dial-stdio")
"""What ssh runs on the host: the docker CLI relays one connection to the engine's socket."""

PREFLIGHT_GRACE = 10.0
"""Seconds a preflight allows, beyond SSH_CONNECT_TIMEOUT, for authentication and Docker."""

API_TIMEOUT = 60.0
"""Seconds the SDK waits for an answer to one API call."""

COMPOSE_TIMEOUT = 600.0
"""Seconds one docker-compose run may take (pulling or building images included)."""

EXEC_TIMEOUT = 120.0
"""Seconds a command run with :meth:`Engine.exec` may take, by default."""

CONTROL_PERSIST = 60
"""Seconds a shared SSH connection to a host stays open once its last user is gone."""

_PING = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
_PROJECT = re.compile(r"[^-_a-z0-9]")
_FRAME = struct.Struct(">BxxxL")
_SSH_FAILED = 255  # ssh's own exit status; any other is the remote command's
SSH_ERROR_GRACE = 2.0
"""Seconds a failed call waits for ssh to exit and say why (a loaded machine is slow to)."""
SSH_SILENT = "ssh exited with status 255 and no message"
"""What a shared (ControlMaster) connection's client leaves when the host vanishes under it."""


# --- hosts and the ssh command line ---------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """A machine whose Docker engine is reached over SSH; ``name`` (its role) is for messages."""

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


def _control_dir() -> Path:
    """A private directory for the shared connections' sockets (checked: ours, mode 0700)."""
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
    # Connections are shared only between ssh processes with these very options: a test's
    # wrong key or other known_hosts never rides on a connection made with the right ones.
    digest = hashlib.sha256("\0".join(options).encode()).hexdigest()[:10]
    control = _ssh_path(str(_control_dir()), f"/{digest}-%C")
    options += ["ControlMaster=auto", f"ControlPath={control}", f"ControlPersist={CONTROL_PERSIST}"]
    return [word for option in options for word in ("-o", option)]


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


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= 240 else line[:237] + "..."


def _ssh_failure(stderr: str, host: Host, settings: Settings) -> str:
    """What an ssh that exited 255 could not do, from its messages (the first match wins)."""
    known, key = settings.ssh_known_hosts, settings.ssh_key_file
    timeout = math.ceil(settings.ssh_connect_timeout)
    rules: tuple[tuple[tuple[str, ...], str], ...] = (
        (
            ("remote host identification has changed", "has changed and you have"),
            f"host key changed: the host's key is not the one SSH_KNOWN_HOSTS ({known}) holds "
            "for it (a rebuilt host, or another machine at this address)",
        ),
        (
            ("host key verification failed", "host key is known"),
            f"host key unknown: SSH_KNOWN_HOSTS ({known}) has no key for this host",
        ),
        (
            ("permission denied",),
            f"SSH key refused: the host does not accept SSH_KEY_FILE ({key}) for user {host.user}",
        ),
        (
            ("load key", "invalid format", "passphrase"),
            f"SSH key unusable: SSH_KEY_FILE ({key}): {_last_line(stderr)}",
        ),
        (("connection refused",), "unreachable: connection refused (no SSH server on that port)"),
        (("timed out",), f"unreachable: no answer within {timeout}s"),
        (("no route to host", "network is unreachable"), "unreachable: no route to host"),
        (("could not resolve hostname",), f"unreachable: cannot resolve {host.address}"),
        (
            ("connection closed", "connection reset", "kex_exchange"),
            "unreachable: the SSH server closed the connection",
        ),
        ((SSH_SILENT,), "unreachable: the SSH connection was lost (the host went away)"),
    )
    text = stderr.lower()
    for needles, message in rules:
        if any(needle in text for needle in needles):
            return message
    return f"ssh failed: {_last_line(stderr) or 'no message'}"


def _docker_failure(stderr: str, status: int, host: Host) -> str:
    """What ``docker system dial-stdio`` could not do on a host ssh reached."""
    text = stderr.lower()
    line = _last_line(stderr)
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


def _api_version(response: bytes, host: Host) -> str:
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
        version = _api_version(done.stdout, host)
        if version_lt(version, MINIMUM_DOCKER_API_VERSION):
            raise HostError(f"{host}: Docker engine too old (API {version})")
        return version
    if done.returncode == _SSH_FAILED:
        raise HostError(f"{host}: {_ssh_failure(stderr, host, settings)}")
    raise HostError(f"{host}: {_docker_failure(stderr, done.returncode, host)}")


# --- the transport: a unix socket relayed to the host's engine by ssh -------------------------


class Relay:
    """A local unix socket whose every connection is handed to a new ssh to the host's engine.

    Each accepted connection becomes the stdin and stdout of ``argv`` (an ssh running
    ``docker system dial-stdio``). ssh processes are reaped as they end; the stderr of one that
    failed (status 255) is kept in :attr:`last_ssh_error`. :meth:`close` stops the rest.
    """

    def __init__(self, argv: Sequence[str], *, poll: float = 0.2) -> None:
        self.argv = list(argv)
        self.last_ssh_error: str | None = None
        self._dir = tempfile.mkdtemp(prefix="gitlab-dr-relay-")  # mode 0700: ours alone
        self.path = os.path.join(self._dir, "docker.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._listener.settimeout(poll)
        self._children: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="gitlab-dr-relay", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The Docker URL of the relay: ``unix:///…/docker.sock``."""
        return f"unix://{self.path}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                self.reap()
                continue
            except OSError:
                break
            with conn:
                self._spawn(conn)
            self.reap()

    def _spawn(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (kept with the child, closed by reap)
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=conn.fileno(),
                stdout=conn.fileno(),
                stderr=stderr,
                start_new_session=True,  # the terminal's ^C reaches us, not each ssh
            )
        except OSError as exc:
            stderr.close()
            with self._lock:
                self.last_ssh_error = f"cannot start ssh: {exc}"
            return
        with self._lock:
            self._children.append((proc, stderr))

    def reap(self, grace: float = 0.0) -> None:
        """Collect the ssh processes that ended; wait up to ``grace`` seconds for a failed one
        (an API call that just broke may be a step ahead of its ssh's exit)."""
        deadline = time.monotonic() + grace
        while True:
            with self._lock:
                running = []
                for proc, stderr in self._children:
                    if proc.poll() is None:
                        running.append((proc, stderr))
                        continue
                    if proc.returncode == _SSH_FAILED:
                        stderr.seek(0)
                        text = stderr.read()[-4000:].decode("utf-8", "replace").strip()
                        self.last_ssh_error = text or SSH_SILENT
                    stderr.close()
                self._children = running
                failed = self.last_ssh_error is not None
            if failed or time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    def take_ssh_error(self, grace: float = 0.0) -> str | None:
        """The stderr of the last ssh that failed since the last call, if any (then forgotten)."""
        self.reap(grace)
        with self._lock:
            error, self.last_ssh_error = self.last_ssh_error, None
        return error

    def close(self) -> None:
        """Stop listening, stop every ssh still running and remove the socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            children, self._children = self._children, []
        for proc, stderr in children:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class SSHDockerClient(docker.DockerClient):
    """A ``docker.DockerClient`` on a host's engine through a :class:`Relay`; closing it stops
    the relay."""

    def __init__(self, host: Host, relay: Relay, version: str, timeout: float) -> None:
        super().__init__(base_url=relay.url, version=version, timeout=int(timeout))
        self.host = host
        self.relay = relay

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.relay.close()


def connect(host: Host, settings: Settings, *, timeout: float = API_TIMEOUT) -> SSHDockerClient:
    """A Docker client for ``host``'s engine over SSH, after a :func:`preflight`.

    See the module's docstring for how ssh is run. The API version is the engine's, capped at
    the newest this SDK knows. ``timeout`` bounds each API call. Close the client when done.
    """
    server = preflight(host, settings)
    version = (
        server if version_lt(server, DEFAULT_DOCKER_API_VERSION) else DEFAULT_DOCKER_API_VERSION
    )
    relay = Relay(ssh_argv(host, settings, DIAL_STDIO))
    try:
        return SSHDockerClient(host, relay, version, timeout)
    except BaseException:
        relay.close()
        raise


# --- the Compose stack ---------------------------------------------------------------------------


def compose_project(settings: Settings) -> str:
    """PROJECT_NAME as Compose labels containers with it (lower case, ``[-_a-z0-9]``)."""
    name = _PROJECT.sub("", settings.project_name.lower())
    if not name:
        raise SettingError(f"PROJECT_NAME {settings.project_name!r} has no usable character")
    return name


def _compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        raise OpsError("docker-compose is not installed: apt-get install docker-compose")
    return found


_PASSED_ENV = (
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "SSH_AUTH_SOCK",
    "DOCKER_CONFIG",
)


def compose(
    settings: Settings,
    args: Sequence[str],
    *,
    client: SSHDockerClient | None = None,
    compose_file: Path = STACK_FILE,
    timeout: float = COMPOSE_TIMEOUT,
) -> str:
    """Run ``docker-compose`` on the stack file with the settings; return its standard output.

    The one place docker-compose runs. With ``client`` it drives that host's engine through the
    client's relay (``DOCKER_HOST=unix://…``: the same ssh, options and checks as the SDK);
    without, it touches no engine (``config``). Its environment is the settings'
    ``compose_env()`` and a few basics, nothing else of ours (no stray ``DOCKER_*`` or
    ``COMPOSE_*``), and a ``.env`` beside the file is not read. A failure is a one-line
    :class:`HostError`.
    """
    where = str(client.host) if client else "local"
    verb = args[0] if args else "?"
    with tempfile.TemporaryDirectory(prefix="gitlab-dr-compose-") as tmp:
        empty_env = Path(tmp) / "empty.env"
        empty_env.write_text("")
        env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
        env["PATH"] = os.environ.get("PATH", os.defpath)
        env.update(settings.compose_env())
        if client is not None:
            env["DOCKER_HOST"] = client.relay.url
        argv = [
            _compose_binary(),
            "--ansi", "never",
            "--file", str(compose_file),
            "--project-name", compose_project(settings),
            "--env-file", str(empty_env),
            *args,
        ]  # fmt: skip
        try:
            done = subprocess.run(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                cwd=compose_file.parent,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HostError(f"{where}: docker-compose {verb} took more than {timeout:g}s") from None
    if done.returncode != 0:
        message = _last_line(done.stderr.decode("utf-8", "replace")) or f"exit {done.returncode}"
        ssh = client.relay.take_ssh_error(grace=SSH_ERROR_GRACE) if client is not None else None
        if client is not None and ssh:
            message = _ssh_failure(ssh, client.host, settings)
        raise HostError(f"{where}: docker-compose {verb} failed: {message}")
    return done.stdout.decode("utf-8", "replace")


def render_config(settings: Settings, compose_file: Path = STACK_FILE) -> str:
    """The stack as Compose resolves it with these settings (``docker-compose config``)."""
    return compose(settings, ["config"], compose_file=compose_file, timeout=60)


# --- a host's engine ---------------------------------------------------------------------------


class ExecResult(NamedTuple):
    """What a command run in a container did."""

    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class ServiceState:
    """One Compose service's container on a host, as the engine reports it."""

    service: str
    container: str
    id: str
    state: str
    health: str | None
    image: str


def _state_of(container: Container) -> ServiceState:
    attrs: dict[str, Any] = container.attrs
    state = attrs.get("State") or {}
    health = state.get("Health") or {}
    return ServiceState(
        service=container.labels.get("com.docker.compose.service", ""),
        container=container.name or "",
        id=container.id or "",
        state=str(state.get("Status", "unknown")),
        health=health.get("Status") if state.get("Status") == "running" else None,
        image=str((attrs.get("Config") or {}).get("Image", "")),
    )


def _start_exec(
    relay: Relay, api_version: str, exec_id: str, deadline: float
) -> tuple[socket.socket, bytes]:
    """Start an exec, hijacked as the docker CLI does: the stream's socket and what came with
    the answer's head."""
    if not re.fullmatch(r"[0-9a-f]{1,128}", exec_id):
        raise docker.errors.DockerException(f"unexpected exec id {exec_id!r}")
    body = json.dumps({"Detach": False, "Tty": False}).encode()
    request = (
        f"POST /v{api_version}/exec/{exec_id}/start HTTP/1.1\r\n"
        "Host: docker\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: Upgrade\r\n"
        "Upgrade: tcp\r\n\r\n"
    ).encode() + body
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        sock.connect(relay.path)
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the connection closed before the engine answered")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if not re.match(r"HTTP/1\.[01] (101|200)\b", status):
            with contextlib.suppress(ValueError, AttributeError):
                status = str(json.loads(rest)["message"])
            raise docker.errors.DockerException(f"the engine refused to start it: {status}")
    except BaseException:
        sock.close()
        raise
    return sock, rest


def _exchange(
    sock: socket.socket, received: bytes, stdin: bytes | None, deadline: float
) -> tuple[bytes, bytes]:
    """Feed ``stdin`` (then end it) while reading the command's multiplexed stdout and stderr."""

    def feed(data: bytes) -> None:
        with contextlib.suppress(OSError):  # a command may exit before reading it all
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

    writer = None
    if stdin is not None:
        writer = threading.Thread(target=feed, args=(stdin,), name="exec-stdin", daemon=True)
        writer.start()
    buffer = bytearray(received)
    out, err = io.BytesIO(), io.BytesIO()

    def fill(size: int) -> bool:
        while len(buffer) < size:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(1 << 16)
            if not chunk:
                return False
            buffer.extend(chunk)
        return True

    while fill(_FRAME.size):
        stream, size = _FRAME.unpack_from(buffer)
        if not fill(_FRAME.size + size):
            break
        (err if stream == 2 else out).write(buffer[_FRAME.size : _FRAME.size + size])
        del buffer[: _FRAME.size + size]
    if writer is not None:
        writer.join(timeout=1)
    return out.getvalue(), err.getvalue()


class Engine:
    """A host's Docker engine over SSH and the Compose stack on it.

    ``Engine.open(host, settings)`` connects (after a preflight); the stack's services are
    deployed with :meth:`up` and :meth:`create` and found by their Compose labels.
    """

    def __init__(
        self,
        host: Host,
        settings: Settings,
        client: SSHDockerClient,
        compose_file: Path = STACK_FILE,
    ) -> None:
        self.host = host
        self.settings = settings
        self.client = client
        self.compose_file = compose_file
        self.project = compose_project(settings)

    @classmethod
    def open(cls, host: Host, settings: Settings, compose_file: Path = STACK_FILE) -> Engine:
        """Connect to ``host`` (see :func:`connect`)."""
        compose_project(settings)  # a bad PROJECT_NAME stops us before anything is opened
        return cls(host, settings, connect(host, settings), compose_file)

    def close(self) -> None:
        """Close the client and stop its ssh processes."""
        self.client.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Turn what the SDK or the transport raise into a one-line :class:`HostError`."""
        try:
            yield
        except OpsError:
            raise
        except docker.errors.APIError as exc:
            cause = exc.explanation or str(exc)
            raise HostError(f"{self.host}: {what} failed: {_last_line(str(cause))}") from exc
        except (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            OSError,
        ) as exc:
            ssh = self.client.relay.take_ssh_error(grace=SSH_ERROR_GRACE)
            if ssh:
                cause = _ssh_failure(ssh, self.host, self.settings)
            else:
                cause = _last_line(str(exc)) or type(exc).__name__
            raise HostError(f"{self.host}: {what} failed: {cause}") from exc

    def _compose(self, args: Sequence[str], timeout: float) -> None:
        compose(
            self.settings, args, client=self.client, compose_file=self.compose_file, timeout=timeout
        )

    @staticmethod
    def _services(services: Sequence[str]) -> list[str]:
        if isinstance(services, str) or not services:
            raise ValueError("name the services: a slave's gitlab must never start by accident")
        return list(services)

    def up(self, services: Sequence[str], *, timeout: float = COMPOSE_TIMEOUT) -> None:
        """Create (or update) and start ``services`` (``docker-compose up -d``)."""
        self._compose(["up", "--detach", *self._services(services)], timeout)

    def create(self, services: Sequence[str], *, timeout: float = COMPOSE_TIMEOUT) -> None:
        """Create (or update) ``services`` without starting them (``up --no-start``)."""
        self._compose(["up", "--no-start", *self._services(services)], timeout)

    def _containers(self, service: str | None = None) -> list[Container]:
        labels = [f"com.docker.compose.project={self.project}", "com.docker.compose.oneoff=False"]
        if service is not None:
            labels.append(f"com.docker.compose.service={service}")
        with self._calls("listing containers"):
            return self.client.containers.list(all=True, filters={"label": labels})

    def ps(self) -> list[ServiceState]:
        """The stack's containers on this host, by service name."""
        return sorted((_state_of(c) for c in self._containers()), key=lambda s: s.service)

    def container(self, service: str) -> Container:
        """The container of ``service``, found by its Compose labels."""
        found = self._containers(service)
        if not found:
            raise HostError(f"{self.host}: no container for service {service} ({self.project})")
        if len(found) > 1:
            raise HostError(f"{self.host}: {len(found)} containers for service {service}")
        return found[0]

    def state(self, service: str) -> ServiceState:
        """The state and health of ``service``'s container."""
        return _state_of(self.container(service))

    def health(self, service: str) -> str | None:
        """``healthy``, ``unhealthy`` or ``starting``; None when not running or no healthcheck."""
        return self.state(service).health

    def wait_healthy(
        self,
        service: str,
        *,
        timeout: float,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> ServiceState:
        """Wait until ``service`` is healthy; a HostError says its last state after ``timeout``."""
        deadline = clock() + timeout
        while True:
            current = self.state(service)
            if current.health == "healthy":
                return current
            if current.state not in {"running", "created", "restarting"} or clock() >= deadline:
                shown = current.state + (f", {current.health}" if current.health else "")
                raise HostError(f"{self.host}: {service} not healthy after {timeout:g}s ({shown})")
            sleep(interval)

    def run_once(self, image: str, argv: Sequence[str], volumes: dict[str, str]) -> str:
        """Run a one-off container of ``image`` (removed after) and return its stdout.

        ``volumes`` maps host paths to container paths, mounted read-write. A non-zero exit is a
        one-line HostError with the last line the command wrote to stderr.
        """
        binds = {host: {"bind": path, "mode": "rw"} for host, path in volumes.items()}
        try:
            with self._calls(f"running {image} {argv[0]}"):
                out = self.client.containers.run(
                    image, list(argv), remove=True, volumes=binds, stdout=True, stderr=False
                )
        except HostError as exc:
            cause = exc.__cause__
            if isinstance(cause, docker.errors.ContainerError):
                raw: Any = cause.stderr
                said = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
                raise HostError(
                    f"{self.host}: {image} {argv[0]} exited {cause.exit_status}: "
                    f"{_last_line(said) or 'no message'}"
                ) from cause
            raise
        return bytes(out).decode("utf-8", "replace")

    def logs(self, service: str, lines: int = 100) -> str:
        """The last ``lines`` lines ``service``'s container wrote (stdout and stderr)."""
        container = self.container(service)
        with self._calls(f"reading {service}'s logs"):
            data: bytes = container.logs(stdout=True, stderr=True, tail=lines)
        return data.decode("utf-8", "replace")

    def exec(
        self,
        service: str,
        argv: Sequence[str],
        stdin: bytes | None = None,
        *,
        timeout: float = EXEC_TIMEOUT,
    ) -> ExecResult:
        """Run ``argv`` in ``service``'s container; return its exit status, stdout and stderr.

        ``argv`` is a list of words, never a shell string; secrets go in ``stdin`` (ended after
        it is sent), never in ``argv``. A command still running after ``timeout`` seconds is a
        HostError (it is left to finish in the container).
        """
        if isinstance(argv, str) or not argv:
            raise ValueError("argv is a non-empty list of words, not a shell string")
        container = self.container(service)
        deadline = time.monotonic() + timeout
        what = f"exec {argv[0]} in {service}"
        with self._calls(what):
            api = self.client.api
            exec_id = api.exec_create(
                container.id, list(argv), stdout=True, stderr=True, stdin=stdin is not None
            )["Id"]
            sock, received = _start_exec(self.client.relay, api.api_version, exec_id, deadline)
            try:
                stdout, stderr = _exchange(sock, received, stdin, deadline)
            except TimeoutError:
                raise HostError(f"{self.host}: {what} still running after {timeout:g}s") from None
            finally:
                sock.close()
            while True:
                info = api.exec_inspect(exec_id)
                if not info.get("Running") and info.get("ExitCode") is not None:
                    return ExecResult(int(info["ExitCode"]), stdout, stderr)
                if time.monotonic() >= deadline:
                    raise HostError(f"{self.host}: {what} still running after {timeout:g}s")
                time.sleep(0.05)
