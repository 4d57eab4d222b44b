"""btrfs filesystems in loop files, as the sandbox's "instances" and the tests keep their data.

The AMI formats each instance's data volume btrfs, mounted with ``user_subvol_rm_allowed`` and
``noatime``, with one subvolume for GITLAB_HOME and one for SYNC_HOME. :class:`LoopBtrfs` makes
the same in a sparse file (``mkfs.btrfs``, ``mount -o loop``), so the sandbox and the tests run
the path a real pair runs. Whatever made one removes it (:meth:`LoopBtrfs.remove`, also on
failure): unmounted, the loop device detached (``mount -o loop`` marks it autoclear, and
``losetup -d`` makes sure), the file deleted. Needs root, ``btrfs-progs`` and the btrfs module.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ops.errors import SandboxError

MOUNT_OPTIONS = "loop,user_subvol_rm_allowed,noatime"
IMAGE_NAME = "btrfs.img"


def run_tool(*argv: str) -> str:
    """Run a system tool; its output, or a SandboxError with its last line of complaint."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SandboxError(f"{argv[0]} is not installed (make host-deps installs it)") from None
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise SandboxError(f"{' '.join(argv[:3])} failed: {why[-1] if why else done.returncode}")
    return done.stdout


def available() -> str:
    """Why btrfs in a loop file cannot be made here, or "" when it can."""
    for tool in ("mkfs.btrfs", "btrfs", "losetup", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make host-deps installs btrfs-progs)"
    if "btrfs" not in Path("/proc/filesystems").read_text():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["modprobe", "btrfs"], capture_output=True, check=False)
        if "btrfs" not in Path("/proc/filesystems").read_text():
            return "the kernel has no btrfs module"
    return ""


@dataclass(frozen=True)
class LoopBtrfs:
    """A btrfs filesystem in ``folder/btrfs.img``, mounted at ``folder/mnt``."""

    folder: Path

    @property
    def image(self) -> Path:
        return self.folder / IMAGE_NAME

    @property
    def mountpoint(self) -> Path:
        return self.folder / "mnt"

    def mounted(self) -> bool:
        return (
            subprocess.run(
                ["mountpoint", "-q", str(self.mountpoint)], capture_output=True, check=False
            ).returncode
            == 0
        )

    def make(self, size: str = "4G", subvolumes: tuple[str, ...] = ()) -> Path:
        """Make, mount and fill with ``subvolumes``; returns the mount point. On any failure
        what was made is removed again before the error goes up."""
        why = self.unavailable()
        if why:
            raise SandboxError(f"cannot make a btrfs filesystem: {why}")
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.mountpoint.mkdir(exist_ok=True)
            self.format_and_mount(size)
            for name in subvolumes:
                self.subvolume(name)
        except BaseException:
            self.remove()
            raise
        return self.mountpoint

    def unavailable(self) -> str:
        """Why this kind of filesystem cannot be made here ("" when it can)."""
        return available()

    def format_and_mount(self, size: str) -> None:
        run_tool("truncate", "-s", size, str(self.image))
        run_tool("mkfs.btrfs", "-q", "-f", str(self.image))
        run_tool("mount", "-o", MOUNT_OPTIONS, str(self.image), str(self.mountpoint))

    def subvolume(self, name: str) -> Path:
        """A subvolume at the top of the filesystem (a plain folder where there are none)."""
        path = self.mountpoint / name
        run_tool("btrfs", "subvolume", "create", str(path))
        return path

    def loop_devices(self) -> list[str]:
        """The loop devices backed by this image (normally one while mounted, none after)."""
        if not self.image.exists():
            return []
        out = subprocess.run(
            ["losetup", "-j", str(self.image)], capture_output=True, text=True, check=False
        ).stdout
        return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]

    def remove(self) -> list[str]:
        """Unmount, detach and delete; returns one line per thing that could not be removed
        (empty when all went). Safe to call on what was never made or already removed."""
        problems: list[str] = []
        if self.mountpoint.exists() and self.mounted():
            for attempt in range(10):  # a container that just stopped may still hold it
                done = subprocess.run(
                    ["umount", str(self.mountpoint)], capture_output=True, text=True, check=False
                )
                if done.returncode == 0:
                    break
                time.sleep(0.5 * (attempt + 1))
            else:
                problems.append(f"{self.mountpoint} is still mounted: {done.stderr.strip()}")
        for device in self.loop_devices():
            if subprocess.run(
                ["losetup", "-d", device], capture_output=True, check=False
            ).returncode:
                problems.append(f"loop device {device} of {self.image} could not be detached")
        if not problems:
            with contextlib.suppress(FileNotFoundError):
                self.image.unlink()
            with contextlib.suppress(OSError):
                self.mountpoint.rmdir()
        return problems


@contextlib.contextmanager
def loop_btrfs(
    folder: Path, size: str = "4G", subvolumes: tuple[str, ...] = ()
) -> Iterator[LoopBtrfs]:
    """A mounted :class:`LoopBtrfs` for the ``with`` block, removed after it whatever happens."""
    fs = LoopBtrfs(folder)
    fs.make(size, subvolumes)
    try:
        yield fs
    finally:
        problems = fs.remove()
        if problems:
            raise SandboxError("; ".join(problems))
