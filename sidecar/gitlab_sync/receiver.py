"""The slave's receiver: the only command the master's key may run (``gitlab-sync serve``).

sshd runs it as the forced command of the master's key; what the master asked for arrives in
``SSH_ORIGINAL_COMMAND`` as ``gitlab-sync-recv VERB EPOCH [PASS] [rsync server args]``:

- ``hello EPOCH``: the slave's state as JSON (``gitlab-sync start`` checks the pairing with it);
- ``rsync EPOCH PASS [base=NAME] --server ...``: receive a pass into the sync area's
  ``.incoming``. ``base=NAME`` says the pass carries only what changed since snapshot NAME: it
  is refused (one line naming "base", and the master sends a full pass instead) unless
  ``.incoming`` starts as a copy of NAME, i.e. the area keeps btrfs snapshots and NAME is its
  ``current``;
- ``label EPOCH PASS NAME``: write PostgreSQL's ``backup_label`` (or ``tablespace_map``), read
  from stdin, into that pass's copy of the data directory;
- ``commit EPOCH PASS``: publish that pass as the newest snapshot.

A sender whose epoch is not the slave's is fenced: an old master that comes back after a
promotion writes nothing. A receiver that is not (or no longer) a slave refuses everything.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping

from gitlab_sync import layout, metrics, rsync
from gitlab_sync.config import (
    Paths,
    SyncError,
    Tunables,
    iso,
    load_pairing,
    parse_iso,
    quoted,
    read_json,
    write_json,
)
from gitlab_sync.snapshots import LABEL_MAX, NAME_PATTERN, Area

_PASS_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_EPOCH = re.compile(r"^[0-9]{1,18}$")  # ASCII digits: str.isdigit() also takes "²"


def _record(paths: Paths, **fields: object) -> None:
    # The status file is best effort; the pass outcome itself is in the sync area.
    with contextlib.suppress(OSError):
        write_json(paths.receiver, {"at": iso(dt.datetime.now(dt.UTC)), **fields})
    if fields.get("error"):
        with contextlib.suppress(OSError):
            metrics.count(paths, "receiver_failures_total")


def serve(environ: Mapping[str, str], paths: Paths, tunables: Tunables) -> int:
    """Handle one command from the master; returns the exit code.

    Whatever the command, a refusal is one short line on stderr (and in the receiver's record):
    of the peer's own words, at most a few dozen characters are echoed.
    """
    command = environ.get("SSH_ORIGINAL_COMMAND", "")
    try:
        return _serve(_words(command), paths, tunables)
    except SyncError as exc:
        why = str(exc)
    except OSError as exc:
        # Out of space, or of inodes (every snapshot's directories take some), while writing
        # the pass's own records: said in the receiver's words, which the master reports.
        why = (
            f"the slave's sync area is full (no space or no inodes left): {exc.strerror}; free "
            "some, or keep fewer snapshots (SNAPSHOT_KEEP_* spans, SNAPSHOT_KEEP_MAX)"
            if exc.errno in {errno.ENOSPC, errno.EDQUOT}
            else f"{exc.strerror or exc}"
        )
    _record(paths, error=why, command=quoted(" ".join(command.split()[:4])))
    print(f"gitlab-sync receiver: {why}", file=sys.stderr)
    return 1


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError as exc:  # an unbalanced quote, a lone trailing backslash
        raise SyncError(f"refused: not a gitlab-sync command ({str(exc).lower()})") from None


def _serve(words: list[str], paths: Paths, tunables: Tunables) -> int:
    if len(words) < 3 or words[0] != "gitlab-sync-recv" or not _EPOCH.match(words[2]):
        raise SyncError("refused: not a gitlab-sync command")
    verb, epoch = words[1], int(words[2])
    pairing = load_pairing(paths)
    if pairing is None or pairing.role != "slave":
        raise SyncError("refused: this sidecar is not a slave (fenced or not paired)")
    if epoch != pairing.epoch:
        raise SyncError(
            f"refused: sender epoch {epoch} is not this slave's epoch {pairing.epoch} (fenced)"
        )
    area = Area(paths.sync)
    if verb == "hello":
        usage = shutil.disk_usage(paths.sync)
        summary = area.summary()
        print(
            json.dumps(
                {
                    "role": "slave",
                    "epoch": pairing.epoch,
                    "current": summary["current"],
                    "snapshots": summary["snapshots"],
                    "free_bytes": usage.free,
                    "layout": layout.detect(paths.source, paths.sync).to_json(),
                }
            )
        )
        return 0
    if len(words) < 4 or not _PASS_ID.match(words[3]):
        raise SyncError("refused: a pass id is required")
    pass_id = words[3]
    if verb == "rsync":
        rest, base = words[4:], None
        if rest and rest[0].startswith("base="):
            base = rest.pop(0).removeprefix("base=")
        return _receive(area, paths, pass_id, epoch, rest, base)
    if verb == "label":
        if len(words) != 5:
            raise SyncError("refused: label takes a file name")
        data = sys.stdin.buffer.read(LABEL_MAX + 1)
        with area.locked(wait=True):
            area.write_label(pass_id, words[4], data)
        return 0
    if verb == "commit":
        extra, instant = commit_words(epoch, words[4:])
        with area.locked(wait=True):
            done = area.commit(pass_id, tunables.tiers, extra, instant)
        _record(paths, error="", committed=done["snapshot"])
        print(json.dumps(done))
        return 0
    raise SyncError(f"refused: unknown verb {quoted(verb)}")


def commit_words(epoch: int, words: list[str]) -> tuple[dict[str, object], dt.datetime | None]:
    """What ``commit`` carries after the pass id: the stats the master saw (``files=12``,
    ``bytes=3400``...) and, for a pass from one instant, ``instant=`` (see Area.commit)."""
    extra: dict[str, object] = {"epoch": epoch}
    instant: dt.datetime | None = None
    for word in words:
        key, _, value = word.partition("=")
        if (
            key in {"files", "bytes", "files_transferred", "bytes_transferred", "wal_bytes"}
            and value.isdigit()
        ):
            extra[key] = int(value)
        elif key == "instant":
            instant = _instant(value)
    return extra, instant


def _instant(text: str) -> dt.datetime:
    """The master's ``instant=`` word: when its frozen snapshot was taken."""
    try:
        return parse_iso(text)
    except ValueError:
        raise SyncError(
            f"refused: instant={quoted(text, 40)} is not an ISO 8601 UTC time "
            "(2026-12-02T02:00:00.000000Z)"
        ) from None


def server_command(area: Area, args: list[str]) -> list[str]:
    """The rsync server that receives into ``area``'s ``.incoming``, from the master's
    arguments (checked). Hard links from ``current`` on the fallback only: on btrfs,
    ``.incoming`` already shares every unchanged block with it (and a hard link cannot cross
    subvolumes)."""
    fallback = area.method == "fallback" and area.current.exists()
    link_dest = str(area.current.resolve()) if fallback else None
    try:
        return rsync.server_argv(args, str(area.incoming), link_dest)
    except rsync.ServerArgsRefused as exc:
        raise SyncError(f"refused: {exc}") from None


def _receive(
    area: Area, paths: Paths, pass_id: str, epoch: int, args: list[str], base: str | None
) -> int:
    if base is not None and not NAME_PATTERN.match(base):
        raise SyncError(f"refused: base={quoted(base)} is not a snapshot name")
    argv = server_command(area, args)
    # The next rsync of the same pass may arrive while the last one's receiver still marks it.
    ongoing = (read_json(area.incoming_meta) or {}).get("id") == pass_id
    with area.locked(wait=ongoing):
        why = area.continues_from(base) if base is not None else ""
        if why:
            raise SyncError(f"refused: base={base}: {why}; send a full pass")
        area.begin(pass_id, epoch, dt.datetime.now(dt.UTC), changes_from=base)
        # stdin/stdout are the SSH channel: rsync's protocol runs over them untouched.
        code = subprocess.run(argv, check=False).returncode
        result = rsync.result_for(code, "", "")
        if result.ok:
            area.mark(pass_id, "received")
            _record(paths, error="", received=pass_id)
        else:
            area.mark(pass_id, "failed", result.message)
            _record(paths, error=f"pass {pass_id} failed on the slave: {result.message}")
        return code


def main() -> int:
    paths = Paths.from_env()
    return serve(os.environ, paths, Tunables.saved(paths))
