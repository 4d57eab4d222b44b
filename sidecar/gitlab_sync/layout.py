"""Which way this host syncs, read from its mounts: snapshots from one instant, or the fallback.

Snapshots from one instant need btrfs under both of the sidecar's areas:

- ``/source`` (GITLAB_HOME) is the top of a btrfs subvolume, so that the master can freeze it
  whole with one read-only snapshot;
- ``/sync`` (SYNC_HOME) is on the same btrfs filesystem (the master's frozen snapshots are
  made there; the slave's snapshots live there), mounted with ``user_subvol_rm_allowed`` (or
  the sidecar, which has no CAP_SYS_ADMIN, could not delete a subvolume).

Roles swap at promotion, so both hosts need both. On a filesystem without snapshots (ext4,
say) the first design carries on (PostgreSQL's backup API, refs first, hard-linked snapshots,
a copy at promotion): :attr:`Layout.method` is then ``fallback`` and :attr:`Layout.why` says
why. btrfs set up wrongly (not a subvolume, another filesystem, the mount option missing) is
also the fallback, but :attr:`Layout.problems` names what is wrong, and ``inv pair`` refuses.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Method = Literal["snapshots", "fallback"]
MOUNT_OPTION = "user_subvol_rm_allowed"
MOUNTINFO = Path("/proc/self/mountinfo")
SUBVOLUME_ROOT_INODE = 256  # the inode number of every btrfs subvolume's top directory


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``."""

    device: str  # major:minor of the filesystem (one per btrfs filesystem, all subvolumes)
    root: str  # the path inside the filesystem that is mounted here (the subvolume, for btrfs)
    point: str
    fstype: str
    source: str
    options: frozenset[str]  # the filesystem's (superblock) options


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(text: str) -> str:
    """mountinfo's path with its escapes undone: the kernel writes space, tab, newline and
    backslash as ``\\ooo`` and leaves every other byte (UTF-8 names too) as it is."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or sep < 6:
            continue
        mounts.append(
            Mount(
                device=fields[2],
                root=_unescape(fields[3]),
                point=_unescape(fields[4]),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                options=frozenset(fields[sep + 3].split(",")),
            )
        )
    return mounts


def mount_of(path: Path, mounts: list[Mount] | None = None) -> Mount | None:
    """The mount ``path`` lives on: the longest mount point that contains it (the last one
    mounted there, when several were)."""
    if mounts is None:
        try:
            # bytes as the kernel has them: a name that is not UTF-8 stays one
            mounts = parse_mountinfo(MOUNTINFO.read_text(errors="surrogateescape"))
        except OSError:
            return None
    target = str(path.resolve() if path.exists() else path)
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/") or "/"
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = mount
    return best


def fstype(path: Path) -> str:
    mount = mount_of(path)
    return mount.fstype if mount else "unknown"


def is_mount_point(path: Path, mounts: list[Mount] | None = None) -> bool:
    """Whether something is mounted at ``path`` itself. Not :func:`os.path.ismount`: every
    btrfs subvolume has a device number of its own, so that one says yes to each of them."""
    mount = mount_of(path, mounts)
    target = str(path.resolve() if path.exists() else path)
    return mount is not None and (mount.point.rstrip("/") or "/") == target


def sync_method(sync: Path, mounts: list[Mount] | None = None) -> Method:
    """How the slave keeps its snapshots in ``sync``: as btrfs subvolumes when ``sync`` is on
    btrfs mounted with ``user_subvol_rm_allowed`` (which is all that receiving, publishing and
    pruning them needs), else as hard-linked folders. Only the sync area decides it: a slave
    whose GITLAB_HOME is laid out wrongly still receives in O(1); :func:`detect` names the
    problem, and promotion copies where it cannot snapshot."""
    mount = mount_of(sync, mounts)
    on_btrfs = mount is not None and mount.fstype == "btrfs" and MOUNT_OPTION in mount.options
    return "snapshots" if on_btrfs else "fallback"


@dataclass(frozen=True)
class Area:
    path: str
    fstype: str
    subvolume: bool  # the top of a btrfs subvolume
    device: str
    options: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    method: Method
    why: str
    problems: list[str]
    source: Area | None
    sync: Area | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layout:
        def area(value: Any) -> Area | None:
            return Area(**value) if isinstance(value, dict) else None

        method: Method = "snapshots" if data.get("method") == "snapshots" else "fallback"
        return cls(
            method=method,
            why=str(data.get("why", "")),
            problems=[str(p) for p in data.get("problems", [])],
            source=area(data.get("source")),
            sync=area(data.get("sync")),
        )


def _area(path: Path, mounts: list[Mount] | None) -> Area | None:
    mount = mount_of(path, mounts)
    if mount is None or not path.exists():
        return None
    return Area(
        path=str(path),
        fstype=mount.fstype,
        subvolume=mount.fstype == "btrfs" and path.stat().st_ino == SUBVOLUME_ROOT_INODE,
        device=mount.device,
        options=sorted(mount.options),
    )


def detect(source: Path, sync: Path, mounts: list[Mount] | None = None) -> Layout:
    """The method this host's sidecar uses, and why."""
    return decide(source, sync, _area(source, mounts), _area(sync, mounts))


def decide(source: Path, sync: Path, src: Area | None, area: Area | None) -> Layout:
    """:func:`detect`'s judgement of the two areas as found (None: missing)."""
    if area is None:
        return Layout("fallback", f"{sync} does not exist", [], src, area)
    on_btrfs = [a for a in (src, area) if a is not None and a.fstype == "btrfs"]
    if not on_btrfs:
        kinds = sorted({a.fstype for a in (src, area) if a is not None})
        why = (
            f"the data is on {' and '.join(kinds)}, which has no cheap snapshots: PostgreSQL's "
            "backup API, refs first and hard-linked snapshots"
        )
        return Layout("fallback", why, [], src, area)
    problems = []
    if src is None:
        problems.append(f"{source} (GITLAB_HOME) does not exist")
    elif src.fstype != "btrfs":
        problems.append(f"GITLAB_HOME is on {src.fstype}, SYNC_HOME on btrfs: put both on btrfs")
    elif not src.subvolume:
        problems.append(
            "GITLAB_HOME is a plain directory on btrfs, not a subvolume: it cannot be frozen "
            "at one instant (make it one with btrfs subvolume create)"
        )
    if area.fstype != "btrfs":
        problems.append(f"SYNC_HOME is on {area.fstype}, GITLAB_HOME on btrfs: put both on btrfs")
    elif MOUNT_OPTION not in area.options:
        problems.append(
            f"the btrfs filesystem of SYNC_HOME is mounted without {MOUNT_OPTION}: the sidecar "
            "could not delete old snapshots (add it to the mount options)"
        )
    if src is not None and src.fstype == area.fstype == "btrfs" and src.device != area.device:
        problems.append(
            "GITLAB_HOME and SYNC_HOME are on two btrfs filesystems: a snapshot cannot cross "
            "them (put both subvolumes on one)"
        )
    if problems:
        return Layout(
            "fallback", "btrfs is set up wrongly: " + "; ".join(problems), problems, src, area
        )
    why = "btrfs: each pass freezes GITLAB_HOME at one instant; snapshots are subvolumes"
    return Layout("snapshots", why, [], src, area)
