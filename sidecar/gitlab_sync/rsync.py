"""The one place rsync is run from: the command is built, secrets masked, exit codes mapped.

Both sides go through here: the master's client (:func:`client_argv`, :func:`run`) and the
slave's server, whose argument list from the master is checked by :func:`server_argv`.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gitlab_sync.config import quoted

# rsync(1), EXIT VALUES. 24 (source files vanished during the pass) is normal on a live tree.
EXIT_MEANINGS: dict[int, str] = {
    0: "success",
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files, dirs",
    4: "requested action not supported",
    5: "error starting client-server protocol",
    6: "daemon unable to append to log-file",
    10: "error in socket I/O",
    11: "error in file I/O (is the slave's disk full?)",
    12: "error in rsync protocol data stream",
    13: "errors with program diagnostics",
    14: "error in IPC code",
    20: "received SIGUSR1 or SIGINT",
    21: "some error returned by waitpid()",
    22: "error allocating core memory buffers",
    23: "partial transfer due to error",
    24: "partial transfer due to vanished source files",
    25: "the --max-delete limit stopped deletions",
    30: "timeout in data send/receive",
    35: "timeout waiting for daemon connection",
    255: "the SSH connection failed",
}
OK_CODES = frozenset({0, 24})

# What the master's client asks for: archive (-rlptgoD), hard links, sparse files, numeric ids,
# deletions. Symlinks are copied as links, never followed (no -L/-k/--copy-unsafe-links).
# --modify-window=-1 compares mtimes to the nanosecond: with the default (whole seconds) rsync
# skips a file rewritten within the same second at the same size (every git ref is 41 bytes)
# and leaves times unset on entries made in the same second as the pass.
CLIENT_OPTIONS: tuple[str, ...] = (
    "-aHS",
    "--numeric-ids",
    "--delete",
    "--modify-window=-1",
    "--stats",
)

# The options a change pass adds (a list of paths instead of the whole tree, NUL-separated): the
# client reads the list itself and sends the server only -d (directories named in it), -R
# (paths relative to the destination) and --no-r (no recursion: -a implies none with a list).
CHANGE_OPTIONS: tuple[str, ...] = ("--from0",)

# The short options a server command line may carry, and the long ones. Anything else (e.g.
# --sender, which would let the master read the slave, or -s, which hides arguments from us) is
# refused by server_argv.
_SERVER_SHORT = frozenset("lHogDtprSzcxvWndR")
_SERVER_LONG = re.compile(
    r"^--(delete|delete-during|delete-delay|delete-after|no-r|"
    r"numeric-ids|stats|partial|"
    r"bwlimit=\d+[kKmM]?|timeout=\d+|compress-level=\d|checksum-choice=[a-z0-9,]+|"
    r"compress-choice=[a-z0-9]+|info=[A-Za-z0-9,]+|debug=[A-Za-z0-9,]+)$"
)


class ServerArgsRefused(ValueError):
    """The master's rsync asked for something a receiver never does."""


def client_argv(
    source: str,
    dest: str,
    rsh: Sequence[str],
    rsync_path: str,
    bwlimit: int = 0,
    extra: Iterable[str] = (),
    files_from: str = "",
) -> list[str]:
    """The master's rsync command: ``source`` (a directory, trailing slash added) to ``dest``;
    with ``files_from``, only the paths that file names (NUL-separated, relative to ``source``)."""
    argv = ["rsync", *CLIENT_OPTIONS]
    if bwlimit:
        argv.append(f"--bwlimit={bwlimit}")
    argv += ["--timeout=120", "-e", " ".join(rsh), f"--rsync-path={rsync_path}", *extra]
    if files_from:
        argv += [f"--files-from={files_from}", *CHANGE_OPTIONS]
    argv += [source.rstrip("/") + "/", dest]
    return argv


def server_argv(client_args: Sequence[str], dest: str, link_dest: str | None) -> list[str]:
    """Check the server arguments the master sent and aim them at ``dest``.

    ``client_args`` is what follows the rsync path on the master's side, e.g.
    ``--server -lHogDtprSe.iLsfxCIvu --delete --numeric-ids . incoming/``. The paths the master
    named are dropped: the receiver always writes into ``dest``.
    """
    args = list(client_args)
    if len(args) < 3 or args[0] != "--server":
        raise ServerArgsRefused("not an rsync server command")
    if args[-2] != ".":
        raise ServerArgsRefused("expected one destination")
    options = args[1:-2]
    for option in options:
        if option == "--sender" or not option.startswith("-"):
            raise ServerArgsRefused(
                f"option {quoted(option)} is not allowed (the master only sends)"
            )
        if option == "-@-1":  # --modify-window=-1, as the client sends it
            continue
        if option.startswith("--"):
            if not _SERVER_LONG.match(option):
                raise ServerArgsRefused(f"option {quoted(option)} is not allowed")
            continue
        flags, _, capabilities = option[1:].partition("e.")
        if set(flags) - _SERVER_SHORT or not re.fullmatch(r"[A-Za-z]*", capabilities):
            raise ServerArgsRefused(f"option {quoted(option)} is not allowed")
    argv = ["rsync", "--server", *options]
    if link_dest:
        argv.append(f"--link-dest={link_dest}")
    return [*argv, ".", dest.rstrip("/") + "/"]


def mask(argv: Sequence[str], secrets: Iterable[str] = ()) -> str:
    """``argv`` as one loggable line, with every secret (and any ``password=``) masked."""
    line = " ".join(argv)
    for secret in secrets:
        if secret:
            line = line.replace(secret, "***")
    return re.sub(r"(?i)(password=)\S+", r"\1***", line)


@dataclass(frozen=True)
class Stats:
    """What ``--stats`` reported."""

    files: int = 0  # entries in the transfer (files, dirs, links...)
    files_transferred: int = 0  # regular files whose data was sent
    total_bytes: int = 0  # size of every file in the tree
    transferred_bytes: int = 0  # size of the files that were sent
    bytes_sent: int = 0  # on the wire


def _number(text: str, label: str) -> int:
    match = re.search(rf"^{re.escape(label)}:\s*([\d,]+)", text, re.MULTILINE)
    return int(match.group(1).replace(",", "")) if match else 0


def parse_stats(output: str) -> Stats:
    return Stats(
        files=_number(output, "Number of files"),
        files_transferred=_number(output, "Number of regular files transferred"),
        total_bytes=_number(output, "Total file size"),
        transferred_bytes=_number(output, "Total transferred file size"),
        bytes_sent=_number(output, "Total bytes sent"),
    )


@dataclass(frozen=True)
class Result:
    """The outcome of one rsync run."""

    code: int
    ok: bool
    meaning: str
    stats: Stats
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """The exit code's meaning and the most telling line: the slave's receiver's own words
        when it said something (rsync's last line then only repeats the exit code)."""
        ours = [line for line in self.stderr_tail if line.startswith("gitlab-sync receiver:")]
        tail = ours or self.stderr_tail
        detail = f": {tail[-1]}" if tail else ""
        return f"rsync exited {self.code} ({self.meaning}){detail}"


def result_for(code: int, stdout: str, stderr: str) -> Result:
    """Map an exit code and output to a :class:`Result` (24 is not a failure)."""
    meaning = EXIT_MEANINGS.get(code, "killed by a signal" if code < 0 else "unknown error")
    tail = [line for line in stderr.splitlines() if line.strip()][-5:]
    return Result(code, code in OK_CODES, meaning, parse_stats(stdout), tail)


class Run:
    """A running rsync that can be stopped from another thread."""

    def __init__(
        self, argv: Sequence[str], log: Callable[[str], None], secrets: Iterable[str] = ()
    ):
        self.argv = list(argv)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._stopped = False
        log(f"run: {mask(self.argv, secrets)}")

    def wait(self) -> Result:
        with self._lock:
            if self._stopped:
                return result_for(20, "", "stopped before it started")
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
        stdout, stderr = self._proc.communicate()
        return result_for(self._proc.returncode, stdout, stderr)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._proc and self._proc.poll() is None:
                self._proc.terminate()
