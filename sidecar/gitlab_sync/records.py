"""What the master records of a pass (``passes.json``, ``status --json``), and its log line."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PassRecord:
    """One pass as status reports it."""

    id: str
    trigger: str
    started_at: str
    ended_at: str = ""
    duration_s: float = 0.0
    files: int = 0  # entries the transfer looked at: the tree (full), the list (change)
    files_transferred: int = 0
    bytes: int = 0  # their size
    bytes_transferred: int = 0
    outcome: str = "running"  # running, ok, failed, stopped
    snapshot: str = ""
    instant: str = ""  # when the master's tree was frozen (one instant; "" on the fallback)
    error: str = ""
    kind: str = ""  # full (the whole tree), change (the paths that changed)
    full_reason: str = ""  # why a full pass (a sentence)
    changed: int = 0  # entries in a change pass's list
    phase_s: dict[str, float] = field(default_factory=dict)  # seconds spent in each phase
    # snapshot (frozen at one instant), backup (low-level API), offline (server down), none
    postgresql: str = ""
    backup_window_s: float = 0.0  # pg_backup_start to pg_backup_stop
    backup_overhead_s: float = 0.0  # what the backup adds: start (checkpoint), stop, label, WAL
    files_again_s: float = 0.0  # the files copied again after pg_backup_stop
    files_again: int = 0  # files that copy sent (written while the first copy ran)
    wal_bytes: int = 0  # WAL written during the backup window (stop LSN - start LSN)
    wal_bytes_transferred: int = 0  # size of the pg_wal files sent after the stop
    wal_bytes_sent: int = 0  # what that took on the wire (compressed)


def summary(record: PassRecord) -> str:
    """The pass in one log line."""
    line = (
        f"pass {record.id} ({record.trigger}) {record.outcome} in {record.duration_s:.2f} s"
        + (f", {record.kind}" if record.kind else "")
        + (f" ({record.full_reason})" if record.full_reason else "")
        + (f", {record.changed} paths listed" if record.kind == "change" else "")
        + f": {record.files} files, {record.files_transferred} sent, "
        f"{record.bytes_transferred} bytes"
    )
    if record.postgresql:
        line += f", PostgreSQL {record.postgresql}"
        if record.postgresql == "backup" and record.outcome == "ok":
            line += (
                f" (backup adds {record.backup_overhead_s:.2f} s, "
                f"{record.wal_bytes} bytes of WAL, {record.wal_bytes_transferred} in pg_wal "
                f"files, {record.wal_bytes_sent} sent; {record.files_again} files copied "
                f"again after the stop in {record.files_again_s:.2f} s)"
            )
    spent = ", ".join(f"{name} {seconds:.2f}" for name, seconds in record.phase_s.items())
    return line + (f" [{spent} s]" if spent else "") + (f": {record.error}" if record.error else "")
