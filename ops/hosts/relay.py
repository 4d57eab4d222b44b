"""The transport: a local unix socket relayed to a host's Docker engine by ssh.

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
starts ``ssh <options> -l USER -p PORT -- HOST docker system dial-stdio``
(:func:`ops.hosts.ssh.ssh_argv`) with that very connection as ssh's stdin and stdout: no byte is
copied in Python, and half-close, timeouts and HTTP keep-alive are the kernel's. :func:`connect`
returns a plain ``docker.DockerClient`` on ``unix://<relay>`` (the SDK's best-trodden path), and
docker-compose gets the same relay as ``DOCKER_HOST``, so both share one transport and one set of
options. ssh's stderr goes to a temporary file per connection, read when ssh fails, so an error
names what failed.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import IO

import docker
from docker.constants import DEFAULT_DOCKER_API_VERSION
from docker.transport.unixconn import UnixHTTPAdapter, UnixHTTPConnectionPool
from docker.utils import version_lt

from ops.hosts.ssh import DIAL_STDIO, SSH_FAILED, SSH_SILENT, Host, preflight, ssh_argv, ssh_failure
from ops.settings import Settings

API_TIMEOUT = 60.0
"""Seconds the SDK waits for an answer to one API call."""

SSH_ERROR_GRACE = 2.0
"""Seconds a failed call waits for ssh to exit and say why (a loaded machine is slow to)."""


class Relay:
    """A local unix socket whose every connection is handed to a new ssh to the host's engine.

    Each accepted connection becomes the stdin and stdout of ``argv`` (an ssh running
    ``docker system dial-stdio``). ssh processes are reaped as they end (every ``poll`` s at
    least); the stderr of one that failed (status 255) is kept in :attr:`last_ssh_error`.
    :meth:`close` stops the rest, waking the listening thread at once through a pipe rather than
    waiting out its poll (a promotion closes engines on its path).
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
        self._poll = poll
        self._wake_read, self._wake_write = os.pipe()
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
                waiting: list[int] = [self._listener.fileno(), self._wake_read]
                ready, _, _ = select.select(waiting, [], [], self._poll)
                if self._wake_read in ready:
                    break
                if not ready:
                    self.reap()
                    continue
                conn, _ = self._listener.accept()
            except TimeoutError:
                self.reap()
                continue
            except (OSError, ValueError):  # closed under us
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
                    if proc.returncode == SSH_FAILED:
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
        if self._stop.is_set():
            return  # closed already
        self._stop.set()
        os.write(self._wake_write, b"x")
        self._thread.join(timeout=5)
        self._listener.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        with self._lock:
            children, self._children = self._children, []
        for proc, _stderr in children:  # all told first, then waited for: one wait, not one each
            if proc.poll() is None:
                proc.terminate()
        for proc, stderr in children:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class OnePoolAdapter(UnixHTTPAdapter):
    """The SDK's unix socket adapter, with one pool of kept-alive connections for every call.

    The SDK's own keys its pools by the whole request URL, path and query included, so each
    endpoint (a container's start, its wait, its logs, its removal) opens a connection of its
    own. On a local socket that costs nothing; through a :class:`Relay` each connection is a new
    ssh running ``docker system dial-stdio`` on the host, 0.05-0.3 s, where a call on a kept-alive
    connection takes a few milliseconds. In the sandbox a one-off container (find, create, start,
    wait, logs, remove) went from 1.3-1.8 s to 0.4-0.6 s, most of it the container's own run.
    """

    def get_connection(self, url: bytes | str, proxies: object = None) -> UnixHTTPConnectionPool:
        return super().get_connection("/", proxies)


class SSHDockerClient(docker.DockerClient):
    """A ``docker.DockerClient`` on a host's engine through a :class:`Relay`, its calls sharing
    kept-alive connections (:class:`OnePoolAdapter`); closing it stops the relay."""

    def __init__(self, host: Host, relay: Relay, version: str, timeout: float) -> None:
        super().__init__(base_url=relay.url, version=version, timeout=int(timeout))
        self.api.adapters["http+docker://"].close()  # the SDK's, unused: no call was made yet
        self.api.mount("http+docker://", OnePoolAdapter(f"http+unix://{relay.path}", int(timeout)))
        self.host = host
        self.relay = relay
        self.socket_path = relay.path
        """The unix socket that reaches the engine (a hijacked exec connects to it)."""

    def ssh_error(self, settings: Settings) -> str | None:
        """Why the relay's last ssh failed, as a sentence (waiting SSH_ERROR_GRACE for it to
        say); None when no ssh failed since the last call."""
        said = self.relay.take_ssh_error(grace=SSH_ERROR_GRACE)
        return ssh_failure(said, self.host, settings) if said else None

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.relay.close()


class LocalDockerClient(docker.DockerClient):
    """A ``docker.DockerClient`` on the engine of the host we run on, through its socket: the
    stack's own scheduled verification (:mod:`ops.dr.verify_schedule`), in a container given the
    socket. There is no ssh, so no ssh failure to tell."""

    def __init__(self, host: Host, base_url: str, timeout: float = API_TIMEOUT) -> None:
        if not base_url.startswith("unix://"):
            raise ValueError(f"the local engine is reached through a unix socket: {base_url!r}")
        super().__init__(base_url=base_url, version="auto", timeout=int(timeout))
        self.host = host
        self.socket_path = base_url.removeprefix("unix://")

    def ssh_error(self, settings: Settings) -> str | None:
        return None


def connect(host: Host, settings: Settings, *, timeout: float = API_TIMEOUT) -> SSHDockerClient:
    """A Docker client for ``host``'s engine over SSH, after a :func:`ops.hosts.ssh.preflight`.

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
