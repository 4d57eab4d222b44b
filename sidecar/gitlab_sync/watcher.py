"""The master's change watcher: which paths changed, cut exactly at each pass's snapshot.

inotify (``inotify.py``) watches every directory of the source tree. Each event names a path
(bytes, relative to the tree); a directory made or moved in is watched in turn, walked at
once, and noted as a subtree that arrived whole (files made in it before its watch existed
had no event); a directory moved out or deleted loses its watches. The watcher says when a
batch of changes is due (``batch`` seconds of quiet, or ``max_delay`` at most).

**Cuts.** Where the source is frozen by a btrfs snapshot (snapshots from one instant), the
sender makes a marker directory in the folder the watcher also watches (``marks``) and
:meth:`Watcher.cut` returns what was read before the marker's ``IN_CREATE``: one descriptor
has one queue, so every event the kernel queued before the marker comes out before it. The
sender cuts twice, just before its snapshot and just after; ``frozen_pass.py`` says how
the two stretches make the change list exact.

**Doubt.** A stretch whose events may be incomplete says why (:attr:`Changes.doubt`): the
kernel's queue overflowed (the tree is then walked again, so that directories made in the gap
get their watches), more than ``limit`` paths changed (keeping them would cost more than a
full pass), a directory could not be watched. The pass that takes it is a full one. When
inotify cannot watch the tree at all (watches exhausted: ENOSPC), the watcher says so and
stops: the sender carries on with timed passes alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gitlab_sync import inotify as ino
from gitlab_sync.config import Log

WATCH_MASK = (
    ino.IN_MODIFY | ino.IN_ATTRIB | ino.IN_CLOSE_WRITE | ino.IN_MOVED_FROM | ino.IN_MOVED_TO
    | ino.IN_CREATE | ino.IN_DELETE | ino.IN_DELETE_SELF | ino.IN_MOVE_SELF
    | ino.IN_ONLYDIR | ino.IN_DONT_FOLLOW | ino.IN_EXCL_UNLINK
)  # fmt: skip
MARK_MASK = ino.IN_CREATE | ino.IN_ONLYDIR | ino.IN_DONT_FOLLOW

# PostgreSQL's data and logs, left out on the fallback path: a backup pass changes them
# (checkpoint, WAL switch, log lines), and watching them would start pass after pass on an idle
# GitLab. The sender asks PostgreSQL instead (PG_POLL). A frozen snapshot changes nothing in
# them, so on the snapshots path they are watched like the rest.
POSTGRESQL_OWN = (b"data/postgresql", b"logs/postgresql")
CHANGE_LIMIT = 100_000
"""Paths kept between two passes at most; beyond, the next pass is a full one."""
EXHAUSTED = (
    "inotify watches exhausted (raise fs.inotify.max_user_watches); falling back to timed passes"
)


@dataclass(frozen=True)
class Changes:
    """The paths changed in one stretch of events, relative to the source tree."""

    paths: frozenset[bytes] = frozenset()  # b"" is the tree's top directory
    subtrees: frozenset[bytes] = frozenset()  # directories that arrived whole
    doubt: str = ""  # why events may be missing from it ("": none are)

    def __or__(self, other: Changes) -> Changes:
        return Changes(
            self.paths | other.paths, self.subtrees | other.subtrees, self.doubt or other.doubt
        )

    @property
    def empty(self) -> bool:
        """Nothing changed, and nothing may have been missed."""
        return not (self.paths or self.subtrees or self.doubt)


class _Exhausted(Exception):
    pass


def _join(base: bytes, name: bytes) -> bytes:
    return base + b"/" + name if base and name else base or name


class Watcher:
    """inotify on the source tree: batches, and (with ``marks``) the changed paths."""

    def __init__(
        self,
        root: Path,
        log: Log,
        exclude: Sequence[bytes] = (),
        marks: Path | None = None,
        limit: int = CHANGE_LIMIT,
    ):
        self.root, self.log, self.exclude, self.marks, self.limit = (
            root, log, tuple(exclude), marks, limit
        )  # fmt: skip
        self.mode = "starting"  # then inotify, or timer when inotify cannot watch the tree
        self.note = ""
        self._lock = threading.Condition()
        self._first = self._last = 0.0
        self._paths: set[bytes] = set()
        self._subtrees: set[bytes] = set()
        self._doubt = "the watches were being set up"
        self._lasting = ""  # a doubt no cut clears (a directory that cannot be watched)
        self._dirs: dict[int, bytes] = {}  # watch descriptor -> directory
        self._wds: dict[bytes, int] = {}
        self._mark_wd = -1
        self._cuts: dict[bytes, bool] = {}  # markers awaited -> reset the batch when seen
        self._cut: dict[bytes, Changes] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()

    # -- the reader ---------------------------------------------------------------------------

    def start(self, ready_within: float = 120.0) -> None:
        """Start watching; returns once the watches are set up (or failed, or time ran out)."""
        threading.Thread(target=self._run, name="inotify", daemon=True).start()
        self._ready.wait(ready_within)

    def _run(self) -> None:
        began = time.monotonic()
        try:
            fd = ino.Inotify()
        except OSError as exc:
            self._give_up(f"inotify cannot watch {self.root}: {exc.strerror}; timed passes only")
            return
        try:
            if self.marks is not None:
                self.marks.mkdir(parents=True, exist_ok=True)
                self._mark_wd = fd.add_watch(bytes(self.marks), MARK_MASK)
            self._watch_tree(fd, b"")  # no lock: only this thread knows the watches yet
            with self._lock:
                self.mode = "inotify"
        except _Exhausted:
            fd.close()
            self._give_up(EXHAUSTED)
            return
        except OSError as exc:
            fd.close()
            self._give_up(f"inotify cannot watch {self.root}: {exc.strerror}; timed passes only")
            return
        self.log(
            f"watching {len(self._dirs)} directories of {self.root} "
            f"(set up in {time.monotonic() - began:.2f} s)"
        )
        self._ready.set()
        try:
            while not self._stop.is_set():
                events = fd.read(0.5)
                with self._lock:
                    for event in events:
                        self._handle(fd, event)
                    if self._cut:
                        self._lock.notify_all()
        except _Exhausted:
            self._give_up(EXHAUSTED)
        except OSError as exc:
            self._give_up(f"inotify stopped: {exc.strerror or exc}; timed passes only")
        finally:
            fd.close()

    def _give_up(self, note: str) -> None:
        with self._lock:
            self.mode, self.note = "timer", note
            self._lock.notify_all()
        self.log(note)
        self._ready.set()

    def _handle(self, fd: ino.Inotify, event: ino.Event) -> None:
        if event.mask & ino.IN_Q_OVERFLOW:
            self._distrust("the inotify event queue overflowed (fs.inotify.max_queued_events)")
            self._watch_tree(fd, b"")  # directories made in the gap get their watches
            return
        if event.wd == self._mark_wd:
            if event.mask & ino.IN_CREATE and event.name in self._cuts:
                self._cut[event.name] = self._split(self._cuts.pop(event.name))
            return
        base = self._dirs.get(event.wd)
        if base is None:
            return  # a watch already dropped: its last events, or its IN_IGNORED
        if event.mask & ino.IN_IGNORED:
            if self._wds.get(base) == event.wd:
                del self._wds[base]
            del self._dirs[event.wd]
            return
        path = _join(base, event.name)
        self._note(path)
        if event.mask & ino.IN_ISDIR and event.name:
            if event.mask & ino.IN_MOVED_FROM:
                self._drop_tree(fd, path)
            elif event.mask & (ino.IN_CREATE | ino.IN_MOVED_TO):
                if not self._doubt:
                    self._subtrees.add(path)
                self._watch_tree(fd, path)

    def _note(self, path: bytes) -> None:
        now = time.monotonic()
        if not self._first:
            self._first = now
        self._last = now
        if self.marks is None or self._doubt:
            return  # nobody asks for the paths, or they are of no use (a full pass comes)
        if len(self._paths) >= self.limit:
            self._distrust(f"more than {self.limit} paths changed between two passes")
            return
        self._paths.add(path)

    def _distrust(self, why: str) -> None:
        if not self._doubt:
            self.log(f"change list incomplete: {why}; the next pass is a full one")
        self._doubt = self._doubt or why
        self._paths, self._subtrees = set(), set()

    def _split(self, reset: bool) -> Changes:
        """What was read since the last cut; the next stretch starts empty."""
        got = Changes(frozenset(self._paths), frozenset(self._subtrees), self._doubt)
        self._paths, self._subtrees, self._doubt = set(), set(), self._lasting
        if reset:  # the pass after the snapshot took the batch; what it leaves starts the next
            self._first = self._last = 0.0 if got.empty else time.monotonic()
        return got

    def _excluded(self, rel: bytes) -> bool:
        return any(rel == e or rel.startswith(e + b"/") for e in self.exclude)

    def _watch_tree(self, fd: ino.Inotify, top: bytes) -> None:
        """Watch ``top`` and every directory under it; each is listed after its watch exists,
        so a directory made meanwhile is either listed or reported."""
        root = bytes(self.root)
        stack = [top]
        while stack:
            rel = stack.pop()
            if self._excluded(rel):
                continue
            full = root + b"/" + rel if rel else root
            try:
                wd = fd.add_watch(full, WATCH_MASK)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise _Exhausted from None
                if exc.errno not in {errno.ENOENT, errno.ENOTDIR}:  # gone: its event says so
                    self._lasting = f"cannot watch {os.fsdecode(rel)!r}: {exc.strerror}"
                    self._distrust(self._lasting)
                continue
            old = self._dirs.get(wd)
            if old is not None and self._wds.get(old) == wd:
                del self._wds[old]
            self._dirs[wd], self._wds[rel] = rel, wd
            try:
                with os.scandir(full) as entries:
                    stack += [
                        _join(rel, e.name) for e in entries if e.is_dir(follow_symlinks=False)
                    ]
            except OSError:
                continue  # removed since its watch was added: its events say so

    def _drop_tree(self, fd: ino.Inotify, top: bytes) -> None:
        """Stop watching ``top`` and what is under it (moved away: its old paths are stale)."""
        prefix = top + b"/"
        for rel, wd in [(r, w) for r, w in self._wds.items() if r == top or r.startswith(prefix)]:
            del self._wds[rel]
            self._dirs.pop(wd, None)
            fd.rm_watch(wd)

    # -- the sender's side --------------------------------------------------------------------

    def cut(self, name: str, timeout: float = 10.0, reset: bool = False) -> Changes | None:
        """Make marker ``name`` in ``marks``; the changes read before its event, or None when
        the watcher cannot say (not watching, or the marker not seen within ``timeout``).
        With ``reset``, the batch starts again from the marker."""
        if self.marks is None:
            return None
        key = name.encode()
        with self._lock:
            if self.mode != "inotify":
                return None
            self._cuts[key] = reset
        marker = self.marks / name
        try:
            marker.mkdir()
        except OSError:
            with self._lock:
                self._cuts.pop(key, None)
            raise
        try:
            with self._lock:
                self._lock.wait_for(lambda: key in self._cut or self.mode != "inotify", timeout)
                self._cuts.pop(key, None)
                return self._cut.pop(key, None)
        finally:
            with contextlib.suppress(FileNotFoundError):
                marker.rmdir()

    def poke(self) -> None:
        """Count a change seen some other way than inotify (PostgreSQL's transactions)."""
        now = time.monotonic()
        with self._lock:
            if not self._first:
                self._first = now
            self._last = now

    def due(self, now: float, batch: float, max_delay: float) -> bool:
        with self._lock:
            if not self._first:
                return False
            return now - self._last >= batch or now - self._first >= max_delay

    def pending(self) -> bool:
        """Whether changes were seen that no pass has taken yet."""
        with self._lock:
            return bool(self._first)

    def take(self) -> None:
        with self._lock:
            self._first = self._last = 0.0

    def stop(self) -> None:
        self._stop.set()
