"""The fallback's pass (no snapshots where the source is): a live copy made consistent by hand.

Where GITLAB_HOME is not a btrfs subvolume, the tree cannot be frozen, so a pass copies it
live: the repositories' refs first, then the rest of the tree, and, while GitLab's PostgreSQL
runs, the whole pass is a base backup through PostgreSQL's low-level API (``pg.py``).

1. ``pg_backup_start``; 2. refs (objects they name are copied later); 3. everything else but
   the refs, the registry's blobs and what a base backup leaves out; 4. ``pg_backup_stop``;
5. everything but the refs, the registry's blobs and PostgreSQL's data directory **again**:
   the database is recovered to the stop, so it may hold a row naming a file (an upload, an
   LFS object, an artifact, a registry tag, a commit's objects) written after step 3 had
   passed it; GitLab writes the file before the row, so such a file was written before the
   stop, and this step brings it;
6. the backup label and the WAL from the backup's first segment to its last;
7. the registry's blobs, last: every link copied in steps 3 and 5 was written after its blob,
   so the blob is there now (the registry deletes none while it runs). Without PostgreSQL (or
   with it stopped) a pass is steps 2, 3 and 7.

What step 5 still cannot cover: a file the database names that was deleted, renamed or
rewritten between the stop and step 5 (the snapshot then lacks it, or holds a newer one than
the rows describe: a cleanup that removes an upload after its row goes, a repack that moves
objects, a tag moved again); refs, copied in step 2, name no commit pushed after it, while
rows of the backup may (the commit's objects are there, from steps 3 and 5); and the files
are from several moments, the database from one. Snapshots from one instant have none of
these gaps.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gitlab_sync import pg, rsync
from gitlab_sync.config import SyncError
from gitlab_sync.filters import (
    after_stop_filters,
    files_filters,
    refs_filters,
    registry_blobs_filters,
    wal_filters,
)
from gitlab_sync.records import PassRecord

if TYPE_CHECKING:
    from gitlab_sync.sender import Sender


def postgresql_mode(cluster: pg.PgCluster) -> str:
    """How a pass copies PostgreSQL: ``backup`` while it answers, ``offline`` when it is
    down (a stopped server's directory is consistent as it lies), ``none`` without a cluster."""
    if not cluster.has_cluster():
        return "none"
    if cluster.listening():
        return "backup"
    why = cluster.elsewhere()
    if why:
        raise SyncError(f"{why}: gitlab-sync cannot take a base backup through it")
    return "offline"


def send(sender: Sender, record: PassRecord) -> tuple[rsync.Stats, dict[str, Any]]:
    """Steps 1 to 7 into the pass's ``.incoming``; what was sent, and the record's fields."""
    source = sender.paths.source
    cluster = pg.PgCluster(source)
    mode = postgresql_mode(cluster)
    if mode == "offline":
        sender.pg_seen = "offline"  # the server coming back is a change
    totals = rsync.Stats()
    fields: dict[str, Any] = {"postgresql": mode, "kind": "full"}
    session: pg.BackupSession | None = None
    pid_before = cluster.pid_state()
    overhead = 0.0  # what the backup adds to the pass: pg_backup_start, then stop to WAL
    try:
        if mode == "backup":
            sender.phase(record, "backup-start")
            begun = time.monotonic()
            session = pg.BackupSession(cluster, sender.log)
            session.start(f"gitlab-sync {record.id}")
            overhead += time.monotonic() - begun
        sender.phase(record, "refs")
        totals = add(totals, sender.copy(source, record.id, refs_filters(), retry_vanished=True))
        sender.phase(record, "files")
        rest = files_filters(backup=mode == "backup")
        totals = add(totals, sender.copy(source, record.id, rest, retry_vanished=True))
        if session is not None:
            sent, backup = _finish(sender, record, session, cluster)
            totals = add(totals, sent)
            overhead += backup.pop("finish_s")
            fields.update(backup, backup_overhead_s=round(overhead, 3))
        sender.phase(record, "registry-blobs")
        blobs = registry_blobs_filters()
        totals = add(totals, sender.copy(source, record.id, blobs, retry_vanished=True))
    finally:
        if session is not None:
            session.close()
    if mode == "offline" and (cluster.pid_state() != pid_before or cluster.listening()):
        raise SyncError("the master's PostgreSQL started during the pass; not committed")
    return totals, fields


def _finish(
    sender: Sender, record: PassRecord, session: pg.BackupSession, cluster: pg.PgCluster
) -> tuple[rsync.Stats, dict[str, Any]]:
    """Steps 4 to 6: pg_backup_stop, the files again, the label, pg_wal; sent and figures."""
    sender.phase(record, "backup-stop")
    finishing = time.monotonic()
    seen = session.transactions()
    stop = session.stop()
    window = time.monotonic() - session.started
    stopped = time.monotonic() - finishing
    sender.phase(record, "files-again")
    again_began = time.monotonic()
    again = sender.copy(sender.paths.source, record.id, after_stop_filters(), retry_vanished=True)
    finishing = time.monotonic()
    # What it sent counts; its entries are those of step 3 again.
    again_sent = rsync.Stats(
        files_transferred=again.stats.files_transferred,
        transferred_bytes=again.stats.transferred_bytes,
        bytes_sent=again.stats.bytes_sent,
    )
    sender.send_label(record.id, "backup_label", stop.label)
    if stop.tablespace_map:
        sender.send_label(record.id, "tablespace_map", stop.tablespace_map)
    # The WAL from the backup's first segment to its last: older segments (kept for
    # wal_keep_size) and recycled ones waiting ahead are of no use to this copy.
    first = pg.start_wal_file(stop.label)
    skip = pg.segments_outside(cluster.data / "pg_wal", first, stop.last_wal)
    sender.phase(record, "wal")
    # Compressed: a segment is 16 MB whatever was written in it, mostly zeros after the
    # switch pg_backup_stop makes.
    wal = sender.copy(sender.paths.source, record.id, [*wal_filters(skip), "--compress"])
    if not (cluster.data / "pg_wal" / first).exists():
        raise SyncError(
            f"WAL segment {first} was recycled during the pass: raise "
            "postgresql['wal_keep_size'] or max_replication_slots on the master"
        )
    sender.pg_seen = seen
    return add(again_sent, wal), {
        "finish_s": stopped + time.monotonic() - finishing,
        "files_again_s": round(finishing - again_began, 3),
        "backup_window_s": round(window, 3),
        "wal_bytes": pg.lsn_bytes(stop.lsn) - pg.lsn_bytes(session.start_lsn),
        "wal_bytes_transferred": wal.stats.transferred_bytes,
        "wal_bytes_sent": wal.stats.bytes_sent,
        "files_again": again.stats.files_transferred,
    }


def add(total: rsync.Stats, result: rsync.Result | rsync.Stats) -> rsync.Stats:
    """Two transfers' figures added up."""
    one = result.stats if isinstance(result, rsync.Result) else result
    return rsync.Stats(
        files=total.files + one.files,
        files_transferred=total.files_transferred + one.files_transferred,
        total_bytes=total.total_bytes + one.total_bytes,
        transferred_bytes=total.transferred_bytes + one.transferred_bytes,
        bytes_sent=total.bytes_sent + one.bytes_sent,
    )
