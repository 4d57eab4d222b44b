"""GitLab's PostgreSQL on the master, seen from the sidecar: a base backup held open for a pass.

The master's sidecar mounts GITLAB_HOME read-only at ``/source``; GitLab (Omnibus, and the
stand-in) keeps PostgreSQL's data in ``data/postgresql/data`` and its unix socket in
``data/postgresql``. Connecting to a socket on a read-only mount works, so the sidecar drives
PostgreSQL's low-level backup API itself, with no Docker socket and no password: ``psql`` runs
as the data directory's owner (gitlab-psql, uid 996 in Omnibus), and PostgreSQL's ``peer``
authentication maps that uid through the server's own passwd to its superuser.

A pass with PostgreSQL running is a non-exclusive base backup (PostgreSQL's "Making a
Base Backup Using the Low Level API"): ``pg_backup_start`` in a session held open while the
data directory is copied, ``pg_backup_stop``, its ``backup_label`` written into the copy, and
``pg_wal`` copied after the stop. A temporary physical replication slot, made in the same
session before the backup starts, keeps the WAL from being recycled until the session ends.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitlab_sync.config import SyncError

# Where Omnibus (and the stand-in) keep PostgreSQL, relative to GITLAB_HOME.
SOCKET_DIR = "data/postgresql"
DATA_DIR = "data/postgresql/data"
PORT = int(os.environ.get("GITLAB_SYNC_PG_PORT", "5432"))
PSQL_UID = 996  # gitlab-psql in Omnibus's image, when the data directory does not say
SUPERUSER = "gitlab-psql"

# What PostgreSQL's documentation says to leave out of a base backup ("Backing Up the Data
# Directory"), relative to the data directory: the server rebuilds or never needs them. pg_wal's
# contents come in their own rsync after pg_backup_stop.
BACKUP_EXCLUDES: tuple[str, ...] = (
    "pg_wal/*",
    "postmaster.pid",
    "postmaster.opts",
    "pg_replslot/*",
    "pg_dynshmem/*",
    "pg_notify/*",
    "pg_serial/*",
    "pg_snapshots/*",
    "pg_stat_tmp/*",
    "pg_subtrans/*",
    "backup_label",  # ours is written from pg_backup_stop's answer
    "tablespace_map",
    "backup_manifest",
    "**/pgsql_tmp*",
    "**/pg_internal.init",
)

_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_START_FILE = re.compile(r"^START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)$", re.MULTILINE)


def lsn_bytes(lsn: str) -> int:
    """``16/B374D848`` as a byte position in the WAL."""
    if not _LSN.match(lsn):
        raise ValueError(f"not an LSN: {lsn!r}")
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def start_wal_file(label: str) -> str:
    """The WAL segment a backup starts in, from its ``backup_label``."""
    match = _START_FILE.search(label)
    if not match:
        raise SyncError("the backup label names no START WAL LOCATION")
    return match.group(1)


def segments_outside(pg_wal: Path, first: str, last: str) -> list[str]:
    """The WAL segments in ``pg_wal`` a backup from ``first`` to ``last`` does not need.

    Names sort by timeline, then position: older ones are kept only for ``wal_keep_size``,
    newer ones are recycled segments waiting to be written (16 MB of old bytes each).
    """
    try:
        names = os.listdir(pg_wal)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _SEGMENT.match(n) and not first <= n <= last)


@dataclass(frozen=True)
class PgCluster:
    """GitLab's PostgreSQL cluster in a GitLab tree (``/source`` on the master): where its data
    directory and socket are, and whether a server runs on it."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / DATA_DIR

    @property
    def socket(self) -> Path:
        return self.root / SOCKET_DIR / f".s.PGSQL.{PORT}"

    @property
    def pid_file(self) -> Path:
        return self.data / "postmaster.pid"

    def psql(self, *options: str) -> list[str]:
        """psql to this server over its socket, as the superuser: quiet, tuples only."""
        return [
            "psql", "-X", "-q", "-tA", *options, "-h", str(self.root / SOCKET_DIR),
            "-p", str(PORT), "-U", SUPERUSER, "-d", "postgres",
        ]  # fmt: skip

    def owner(self) -> tuple[int, int]:
        """The uid and gid PostgreSQL runs as: the data directory's (Omnibus lets them change)."""
        try:
            st = self.data.stat()
        except OSError:
            return PSQL_UID, PSQL_UID
        return (st.st_uid, st.st_gid) if st.st_uid else (PSQL_UID, PSQL_UID)

    def has_cluster(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def listening(self) -> bool:
        """Whether a server accepts connections on the socket (a stale socket file does not)."""
        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def elsewhere(self) -> str:
        """Why a server that ``postmaster.pid`` names may be out of our reach ("" if not).

        A server listening on another port or socket directory than GitLab's own would look
        stopped from here, and its live files would be copied as they lie: refused.
        """
        try:
            lines = self.pid_file.read_text(errors="replace").splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return ""
        port = lines[3].strip() if len(lines) > 3 else ""
        sockets = lines[4].strip() if len(lines) > 4 else ""
        if port and port != str(PORT):
            return f"PostgreSQL's postmaster.pid names port {port}, not {PORT}"
        expected = "/var/opt/gitlab/postgresql"
        if sockets and sockets.split(",")[0].strip() != expected:
            return f"PostgreSQL's socket is in {sockets}, not in {expected}"
        return ""

    def pid_state(self) -> tuple[int, int] | None:
        """(inode, mtime) of ``postmaster.pid``: a server starting changes it."""
        try:
            st = self.pid_file.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)


def _as_owner(owner: tuple[int, int]) -> dict[str, Any]:
    """How psql is run: as PostgreSQL's own uid and gid, no other groups, a bare environment."""
    return {
        "cwd": "/",
        "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
        "user": owner[0],
        "group": owner[1],
        "extra_groups": [],
    }


def _popen(argv: list[str], owner: tuple[int, int]) -> subprocess.Popen[str]:
    """psql as gitlab-psql's uid, talking over pipes."""
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            **_as_owner(owner),
        )
    except OSError as exc:
        raise SyncError(f"cannot run psql for the base backup: {exc}") from exc


# Changes when a transaction that writes starts or ends, and for nothing else: read-only
# queries (ours included), checkpoints and WAL switches take no transaction id.
SNAPSHOT_SQL = "SELECT txid_current_snapshot()"


def transactions(cluster: PgCluster, timeout: float = 5.0) -> str | None:
    """The server's transaction snapshot, or None when it cannot be asked."""
    if not cluster.listening():
        return None
    try:
        done = subprocess.run(
            [*cluster.psql(), "-c", SNAPSHOT_SQL],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **_as_owner(cluster.owner()),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@dataclass(frozen=True)
class BackupStop:
    """What ``pg_backup_stop`` answered."""

    lsn: str
    last_wal: str  # the segment holding the stop LSN: the last one the backup needs
    label: str
    tablespace_map: str


class BackupSession:
    """One psql session holding a non-exclusive base backup open; :meth:`close` ends it.

    If the session dies (the master killed, PostgreSQL restarted) the backup is aborted by the
    server and :meth:`stop` fails: the pass is not committed.
    """

    def __init__(
        self, cluster: PgCluster, log: Callable[[str], None], timeout: float = 600.0
    ) -> None:
        self.cluster, self.log, self.timeout = cluster, log, timeout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self.version = 0
        self.start_lsn = ""
        self.slot = ""
        self.started = 0.0
        self._proc = _popen(cluster.psql("-v", "ON_ERROR_STOP=1"), cluster.owner())
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout or ():
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        for line in self._proc.stderr or ():
            if line.strip():
                self._stderr.append(line.strip())

    def query(self, sql: str, timeout: float | None = None) -> str:
        """Run one statement that returns one row; its unaligned text (``a|b|c``)."""
        proc = self._proc
        try:
            if proc.stdin is None:
                raise OSError("no stdin")
            proc.stdin.write(sql.rstrip().rstrip(";") + ";\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise SyncError(f"PostgreSQL session ended: {self._why()}") from None
        try:
            line = self._lines.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise SyncError(
                f"PostgreSQL did not answer within {timeout or self.timeout:.0f} s"
            ) from None
        if line is None:
            raise SyncError(f"PostgreSQL session ended: {self._why()}")
        return line

    def _why(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(2)
        return (self._stderr[-1] if self._stderr else "") or f"psql exited {self._proc.poll()}"

    def start(self, label: str) -> str:
        """Reserve WAL, then ``pg_backup_start(label, fast)``; returns the start LSN."""
        self.version = int(self.query("SELECT current_setting('server_version_num')"))
        self.query("SELECT set_config('statement_timeout', '0', false)")
        free = self.query(
            "SELECT current_setting('max_replication_slots')::int"
            " > (SELECT count(*) FROM pg_replication_slots)"
        )
        if free == "t":
            # Temporary: dropped by the server when this session ends, however it ends.
            self.slot = f"gitlab_sync_{os.getpid()}_{int(time.time())}"
            self.query(
                # a name made here, not data
                f"SELECT 1 FROM pg_create_physical_replication_slot('{self.slot}', true, true)"  # noqa: S608
            )
        else:
            self.log(
                "no free replication slot on the master's PostgreSQL: WAL is kept by "
                "wal_keep_size alone (set postgresql['max_replication_slots'])"
            )
        safe = re.sub(r"[^A-Za-z0-9 ._-]", "_", label)[:60]
        if self.version >= 150000:
            sql = f"SELECT pg_backup_start('{safe}', true)"
        else:
            sql = f"SELECT pg_start_backup('{safe}', true, false)"
        self.started = time.monotonic()
        self.start_lsn = self.query(sql)
        return self.start_lsn

    def transactions(self) -> str:
        """The server's transaction snapshot (``xmin:xmax:xip``); see :func:`transactions`."""
        return self.query(SNAPSHOT_SQL)

    def stop(self) -> BackupStop:
        """``pg_backup_stop``: the stop LSN, the backup label and the tablespace map."""
        hexed = "encode(convert_to(coalesce({}, ''), 'UTF8'), 'hex')"
        columns = (
            f"lsn, pg_walfile_name(lsn), {hexed.format('labelfile')}, {hexed.format('spcmapfile')}"
        )
        if self.version >= 150000:
            sql = f"SELECT {columns} FROM pg_backup_stop(false)"  # noqa: S608 (constants)
        else:
            sql = f"SELECT {columns} FROM pg_stop_backup(false, false)"  # noqa: S608
        lsn, last, label, spcmap = self.query(sql).split("|")
        return BackupStop(lsn, last, bytes.fromhex(label).decode(), bytes.fromhex(spcmap).decode())

    def close(self) -> None:
        proc = self._proc
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
