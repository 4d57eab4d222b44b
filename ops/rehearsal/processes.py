"""The sandbox's background processes (moto, the forwarder, Prometheus): start, find, stop.

Each is started in a session of its own so that it outlives ``inv sandbox.up``; it is known by
its pid and, so that a reused pid is never mistaken for it, by a word of its command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from gitlab_sync.waits import wait_until
from ops.rehearsal.layout import SandboxLayout

MOTO = "moto.server"
FORWARDER = "ops.rehearsal.forwarder"
PROMETHEUS = "prometheus --config.file"
"""The words of their command lines that say a process is the sandbox's."""


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""Where the kernel keeps the ports it hands out for connections and ``bind(0)``; Docker takes a
container's unnamed published ports from the same range."""

PORTS_GIVEN = Path(tempfile.gettempdir()) / "gitlab-dr-ports-given"
"""The ports named lately by any process on this machine (``PORT SECONDS`` a line), so that two
sandboxes made at the same time (a drill beside a test run, two test workers) never share one."""

PORT_HELD = 6 * 3600.0
"""How long a named port stays out of the draw: far longer than a test run or a drill takes from
naming a port to binding it (once bound, the probe skips it anyway)."""

_LOWEST = 10000
_given: set[int] = set()


def free_port() -> int:
    """A port free on every address now, and one that nothing hands out by itself later.

    The sandbox names its ports long before they are bound (a stack's ports at ``sandbox.up``,
    bound at ``pair`` or at promotion), so a port from the ephemeral range could meanwhile become
    the local end of some connection, or another container's published port, and the bind then
    fails. The port is drawn below that range, never twice in one process nor twice in
    ``PORT_HELD`` on this machine (:data:`PORTS_GIVEN`, read and written under a lock); with no
    room there (a range starting under 10000) it is the kernel's choice.
    """
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    with _ports_given() as given:
        taken = _given | set(given)
        candidates = [port for port in range(_LOWEST, low) if port not in taken]
        for port in random.sample(candidates, min(len(candidates), 200)):
            with socket.socket() as sock:
                try:
                    sock.bind(("0.0.0.0", port))  # noqa: S104 - a probe, closed at once
                except OSError:
                    continue
            _given.add(port)
            given[port] = time.time()
            return port
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))  # noqa: S104 - a probe, closed at once
        chosen: int = sock.getsockname()[1]
        return chosen


@contextlib.contextmanager
def _ports_given() -> Iterator[dict[int, float]]:
    """The ports named in the last ``PORT_HELD`` seconds, held under an exclusive lock; what the
    caller adds is written back. An unreadable line is dropped, an unwritable file ignored (the
    process's own set still holds)."""
    try:
        handle = open(PORTS_GIVEN, "a+")  # noqa: SIM115 - closed below, after the lock
    except OSError:
        yield {}
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        now, given = time.time(), {}
        for line in handle.read().splitlines():
            port, _, when = line.partition(" ")
            with contextlib.suppress(ValueError):
                if now - float(when) < PORT_HELD:
                    given[int(port)] = float(when)
        yield given
        handle.seek(0)
        handle.truncate()
        handle.write("".join(f"{port} {when:.0f}\n" for port, when in sorted(given.items())))


def http_answers(url: str, ok_only: bool = False) -> bool:
    """Whether anything answers HTTP at ``url``: any status, or with ``ok_only`` a 2xx one (a
    readiness endpoint answers 503 while it is not ready)."""
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - http://127.0.0.1 only
            return True
    except urllib.error.HTTPError:
        return not ok_only
    except (OSError, ValueError):
        return False


def alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs and its command line holds ``marker`` (so it is ours, not reused)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return status != "Z" and marker in cmdline


def stop(pid: int, marker: str, timeout: float = 10.0) -> bool:
    """Stop process ``pid`` (TERM, then KILL) if it is ours; True if it was running."""
    if not alive(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.kill(pid, signal.SIGTERM)
    try:
        wait_until(
            lambda: not alive(pid, marker), timeout=timeout, what=f"pid {pid}", interval=0.05
        )
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid, marker), timeout=5, what=f"pid {pid}", interval=0.05)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it when it was our own child (else: not our child)
    return True


def spawn(argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> int:
    """Start a process that outlives us (own session, no terminal), its output in ``log``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def base_env() -> dict[str, str]:
    """The few variables a background process keeps from ours (no AWS_*, no ENV_FILE)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    return {name: os.environ[name] for name in keep if name in os.environ}


def strays(layout: SandboxLayout) -> list[tuple[int, str]]:
    """The sandbox's processes that its record does not name (a lost or partial state.json):
    its forwarder by ``--sandbox <folder>``, its moto server and Prometheus by their working
    folders."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            words = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        argv = [w.decode(errors="replace") for w in words]
        if FORWARDER in argv and str(layout.root) in argv:
            found.append((int(proc.name), FORWARDER))
        elif MOTO in argv and cwd in (str(layout.root), f"{layout.root} (deleted)"):
            found.append((int(proc.name), MOTO))
        elif PROMETHEUS in " ".join(argv) and cwd.startswith(str(layout.root)):
            found.append((int(proc.name), PROMETHEUS))
    return found
