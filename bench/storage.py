"""The benchmark's "hosts" on this machine: one filesystem each, made and removed by the bench.

A host is laid out as the AMI lays out an instance's data volume: one filesystem at a folder
D with ``D/gitlab`` (GITLAB_HOME) and ``D/gitlab-sync`` (SYNC_HOME), subvolumes on btrfs. The
master, our slave and the contenders' replica each get their own, all of one kind:

- ``btrfs``: :class:`ops.rehearsal.loopfs.LoopBtrfs` (mounted ``user_subvol_rm_allowed``), so
  the sidecar takes its snapshot path;
- ``ext4``: the same in a loop file formatted ext4 (the AMI's filesystem before btrfs);
- ``tmpfs``: a tmpfs of its own (``nr_inodes=0``: tmpfs counts every hard link as an inode, and
  hard-linked snapshots of a large tree would exhaust the default).

The loop files live in memory (``/dev/shm``, the default: on a cloud VM's disk the same copy took
25 s, then 61 s, as its I/O credits ran out, which would drown the ratios) or on the disk
(``/var/tmp``). Whatever is made is unmounted, detached and deleted again, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from gitlab_sync.layout import SUBVOLUME_ROOT_INODE
from ops.errors import SandboxError
from ops.rehearsal.loopfs import LoopBtrfs, run_tool

ROOTS = {"tmpfs": Path("/dev/shm"), "disk": Path("/var/tmp")}
HOME, SYNC = "gitlab", "gitlab-sync"


@dataclass(frozen=True)
class _Plain(LoopBtrfs):
    """A filesystem without subvolumes: GITLAB_HOME and SYNC_HOME are plain folders."""

    def unavailable(self) -> str:
        return ""

    def subvolume(self, name: str) -> Path:
        path = self.mountpoint / name
        path.mkdir()
        return path


@dataclass(frozen=True)
class LoopExt4(_Plain):
    """ext4 in ``folder/btrfs.img`` (the name :class:`LoopBtrfs` removes), mounted ``noatime``;
    the "subvolumes" are plain folders. One inode per 4 KiB: every hard-linked snapshot makes
    all of a tree's directories anew."""

    def format_and_mount(self, size: str) -> None:
        run_tool("truncate", "-s", size, str(self.image))
        run_tool("mkfs.ext4", "-q", "-F", "-i", "4096", "-m", "0", str(self.image))
        run_tool("mount", "-o", "loop,noatime", str(self.image), str(self.mountpoint))


@dataclass(frozen=True)
class Tmpfs(_Plain):
    """A tmpfs of its own at ``folder/mnt`` (no image: :meth:`LoopBtrfs.remove` unmounts it)."""

    def format_and_mount(self, size: str) -> None:
        options = f"size={size},nr_inodes=0,mode=0755"
        run_tool("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.mountpoint))


KINDS: dict[str, type[LoopBtrfs]] = {"btrfs": LoopBtrfs, "ext4": LoopExt4, "tmpfs": Tmpfs}


@dataclass(frozen=True)
class Host:
    """One host's filesystem: ``root`` (D) on ``fs`` (btrfs, ext4 or tmpfs)."""

    fs: str
    root: Path

    @property
    def home(self) -> Path:
        return self.root / HOME

    @property
    def sync(self) -> Path:
        return self.root / SYNC

    def used(self, settle: bool = False) -> int:
        """Bytes in use on the filesystem. btrfs frees a deleted subvolume in the background:
        ``settle`` waits for that first, which never ends while a container still has a
        deleted subvolume mounted (the slave's /source, once a restore replaced it)."""
        if self.fs == "btrfs":
            run_tool("btrfs", "filesystem", "sync", str(self.root))
            if settle:
                run_tool("btrfs", "subvolume", "sync", str(self.root))
            for line in run_tool("btrfs", "filesystem", "usage", "-b", str(self.root)).splitlines():
                if line.strip().startswith("Used:"):
                    return int(line.split()[1])
            raise SandboxError(f"btrfs filesystem usage of {self.root} says nothing of Used")
        os.sync()
        st = os.statvfs(self.root)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def empty(self, folder: Path, keep_top: bool = True) -> None:
        """Remove what ``folder`` holds (subvolumes included, read-only or not), and
        ``folder`` itself unless ``keep_top``."""
        if self.fs == "btrfs":
            for sub in self._subvolumes_under(folder):
                run_tool("btrfs", "property", "set", "-ts", str(sub), "ro", "false")
                run_tool("btrfs", "subvolume", "delete", str(sub))
        if not folder.exists():
            return
        if keep_top:
            for entry in list(folder.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        elif self.fs == "btrfs" and os.lstat(folder).st_ino == SUBVOLUME_ROOT_INODE:
            run_tool("btrfs", "property", "set", "-ts", str(folder), "ro", "false")
            run_tool("btrfs", "subvolume", "delete", str(folder))
        else:
            shutil.rmtree(folder)

    def _subvolumes_under(self, folder: Path) -> list[Path]:
        """The subvolumes strictly inside ``folder``, deepest first."""
        inside = str(folder.relative_to(self.root)).strip("/")
        found = []
        for line in run_tool("btrfs", "subvolume", "list", str(self.root)).splitlines():
            path = line.split(" path ", 1)[1].strip()
            if path.startswith(inside + "/"):
                found.append(self.root / path)
        return sorted(found, key=lambda p: len(p.parts), reverse=True)

    def fresh_home(self) -> None:
        """GITLAB_HOME as a new host has it before promotion: an empty subvolume (btrfs) or
        folder; whatever restores left beside it (``gitlab.before-restore-*``) removed."""
        for entry in self.root.iterdir():
            if entry.name == HOME or entry.name.startswith(f"{HOME}."):
                self.empty(entry, keep_top=False)
        if self.fs == "btrfs":
            run_tool("btrfs", "subvolume", "create", str(self.home))
        else:
            self.home.mkdir()


@dataclass(frozen=True)
class Site:
    """The three hosts of one run: the master, our slave, the contenders' replica."""

    fs: str
    storage: str
    master: Host
    slave: Host
    replica: Host

    def describe(self) -> str:
        if self.fs == "tmpfs":
            return "tmpfs (plain folders in memory)"
        return f"{self.fs} in loop files on {self.storage} ({ROOTS[self.storage]})"


def check(fs: str, storage: str) -> str:
    """Why ``fs`` cannot be used with ``storage`` here ("" when it can)."""
    if fs == "tmpfs" and storage != "tmpfs":
        return "--fs tmpfs keeps the trees in memory; on the disk, choose ext4"
    if fs == "btrfs":
        from ops.rehearsal.loopfs import available

        return available()
    if fs == "ext4" and shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 is not installed (e2fsprogs)"
    return ""


@contextlib.contextmanager
def site(fs: str, storage: str, size_gib: int) -> Iterator[Site]:
    """Three hosts on ``fs``, each able to hold ``size_gib`` (sparse: only what is written
    takes memory or disk); all of it removed after the ``with`` block."""
    why = check(fs, storage)
    if why:
        raise SandboxError(f"cannot make {fs} hosts: {why}")
    kind = KINDS[fs]
    base = ROOTS[storage] / f"gitlab-dr-bench-{uuid.uuid4().hex[:6]}"
    with ExitStack() as stack:
        stack.callback(lambda: base.rmdir() if base.exists() and not any(base.iterdir()) else None)
        hosts = {}
        for name, folders in (("master", (HOME, SYNC)), ("slave", (HOME, SYNC)), ("replica", ())):
            made = kind(base / name)
            stack.callback(_removed, made)
            made.make(f"{size_gib}G", folders)
            hosts[name] = Host(fs, made.mountpoint)
        hosts["replica"].home.mkdir(exist_ok=True)
        yield Site(fs, storage, hosts["master"], hosts["slave"], hosts["replica"])


def _removed(made: LoopBtrfs) -> None:
    problems = made.remove()
    if problems:
        raise SandboxError("; ".join(problems))
    with contextlib.suppress(OSError):
        made.folder.rmdir()
