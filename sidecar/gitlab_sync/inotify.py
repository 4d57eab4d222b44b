"""inotify(7) through ctypes: the kernel's change events, read as they are queued.

The standard library has no inotify, and ``inotifywait`` prints one line per event with the
path as text: names with newlines or bytes that are not UTF-8 cannot be read back from it,
and it says nothing of where the markers a pass makes fall among the events. Here events are
read from the descriptor itself: names are bytes, and every event of every watch of one
descriptor comes out of one queue, in the order the kernel queued them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000  # the queue was full: events were dropped (wd is -1)
IN_IGNORED = 0x00008000  # the watch is gone (removed, or its directory deleted)
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
_BUFFER = 256 * 1024  # many events per read; one event takes at most 16 + NAME_MAX + 1 bytes


@dataclass(frozen=True, slots=True)
class Event:
    wd: int
    mask: int
    cookie: int
    name: bytes  # the entry's name in the watched directory; b"" for the directory itself


def parse(data: bytes) -> list[Event]:
    """The events in one ``read`` of an inotify descriptor (always whole events)."""
    events = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        name = data[start : start + length].split(b"\0", 1)[0]  # NUL-padded
        events.append(Event(wd, mask, cookie, name))
        offset = start + length
    return events


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own C library
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


class Inotify:
    """One inotify descriptor: watches added and removed, events read with a timeout."""

    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if fd < 0:
            raise _error("inotify_init1", b"")
        self.fd: int = fd

    def add_watch(self, path: bytes, mask: int) -> int:
        """Watch directory ``path``; its watch descriptor (the same one if already watched).

        Raises OSError with the kernel's errno: ENOSPC when the watches allowed are used up,
        ENOENT or ENOTDIR when the directory went away or was replaced by something else.
        """
        wd: int = self._libc.inotify_add_watch(self.fd, path, mask)
        if wd < 0:
            raise _error("inotify_add_watch", path)
        return wd

    def rm_watch(self, wd: int) -> None:
        """Stop watching (a watch the kernel already dropped is no error)."""
        if self._libc.inotify_rm_watch(self.fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            raise _error("inotify_rm_watch", b"")

    def read(self, timeout: float) -> list[Event]:
        """The events queued now, waiting up to ``timeout`` seconds for one."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            return parse(os.read(self.fd, _BUFFER))
        except BlockingIOError:
            return []

    def close(self) -> None:
        os.close(self.fd)


def _error(call: str, path: bytes) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{call}: {os.strerror(code)}", os.fsdecode(path) if path else None)
