"""The kernel's inotify through ctypes, on real directories: names as bytes, errors by errno,
one queue in order, and the overflow the kernel reports when nobody reads."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gitlab_sync import inotify as ino
from tests.unit.sidecar.userns import run_in_user_namespace


def _read_all(fd: ino.Inotify) -> list[ino.Event]:
    events: list[ino.Event] = []
    while batch := fd.read(0.2):
        events += batch
    return events


def test_events_name_entries_as_bytes_in_the_order_they_happened(tmp_path: Path) -> None:
    fd = ino.Inotify()
    try:
        wd = fd.add_watch(bytes(tmp_path), ino.IN_CREATE | ino.IN_DELETE | ino.IN_MOVED_TO)
        odd = b"new\nline \xff\xfe"
        (tmp_path / "first").write_text("1")
        with open(bytes(tmp_path) + b"/" + odd, "wb"):
            pass
        os.rename(tmp_path / "first", tmp_path / "second")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub").rmdir()
        seen = [
            (e.wd, e.mask & ~ino.IN_ISDIR, e.name, bool(e.mask & ino.IN_ISDIR))
            for e in _read_all(fd)
        ]
    finally:
        fd.close()
    assert seen == [
        (wd, ino.IN_CREATE, b"first", False),
        (wd, ino.IN_CREATE, odd, False),
        (wd, ino.IN_MOVED_TO, b"second", False),
        (wd, ino.IN_CREATE, b"sub", True),
        (wd, ino.IN_DELETE, b"sub", True),
    ]


def test_a_watch_on_what_is_not_there_fails_with_the_kernels_errno(tmp_path: Path) -> None:
    fd = ino.Inotify()
    try:
        with pytest.raises(OSError, match="No such file") as gone:
            fd.add_watch(bytes(tmp_path / "gone"), ino.IN_CREATE)
        assert gone.value.errno == errno.ENOENT
        (tmp_path / "file").write_text("x")
        with pytest.raises(OSError, match="Not a directory") as not_dir:
            fd.add_watch(bytes(tmp_path / "file"), ino.IN_CREATE | ino.IN_ONLYDIR)
        assert not_dir.value.errno == errno.ENOTDIR
    finally:
        fd.close()


def test_a_queue_nobody_reads_overflows_and_says_so(tmp_path: Path) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    fd = ino.Inotify()
    try:
        fd.add_watch(bytes(tmp_path), ino.IN_CREATE)
        for n in range(limit + 10):
            os.close(os.open(tmp_path / f"f{n}", os.O_CREAT | os.O_WRONLY))
        events = _read_all(fd)
    finally:
        fd.close()
    assert len(events) == limit + 1
    assert events[-1].mask & ino.IN_Q_OVERFLOW and events[-1].wd == -1


def test_watches_exhausted_are_enospc(tmp_path: Path) -> None:
    """In a user namespace of its own, a process may lower its own watch limit (the machine's
    sysctl stays as it is)."""
    for name in "abc":
        (tmp_path / name).mkdir()
    script = (
        "import sys\n"
        "from gitlab_sync import inotify as ino\n"
        "open('/proc/sys/user/max_inotify_watches', 'w').write('2')\n"
        "fd = ino.Inotify()\n"
        "for name in 'abc':\n"
        "    try:\n"
        "        fd.add_watch(sys.argv[1].encode() + b'/' + name.encode(), ino.IN_CREATE)\n"
        "    except OSError as exc:\n"
        "        print(exc.errno)\n"
    )
    done = run_in_user_namespace(script, str(tmp_path))
    assert done.stdout.split() == [str(errno.ENOSPC)], done.stderr
