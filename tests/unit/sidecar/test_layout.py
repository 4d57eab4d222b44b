"""Which way a host syncs, read from mountinfo: every problem named, the fallback otherwise.

Real btrfs (a subvolume's inode 256, the mount option on a loop filesystem) is in
tests/integration/sidecar/test_btrfs_area.py; here the judgement over mountinfo text and the
areas found.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gitlab_sync.layout import (
    Area,
    Layout,
    decide,
    detect,
    is_mount_point,
    mount_of,
    parse_mountinfo,
    sync_method,
)

GOOD = "rw,noatime,space_cache=v2,user_subvol_rm_allowed,subvolid=256,subvol=/gitlab"


def _line(point: str, fstype: str = "btrfs", device: str = "0:45", options: str = GOOD) -> str:
    return f"36 25 {device} /gitlab {point} rw,noatime shared:1 - {fstype} /dev/loop3 {options}"


def test_mountinfo_lines_are_parsed_with_their_escapes_undone() -> None:
    text = "\n".join(
        [
            _line("/srv/gitlab\\040dr/data"),  # a space
            _line("/srv/tab\\011and\\134backslash", "ext4", "8:1", "rw"),
            _line("/srv/caf\u00e9\\040au\\040lait", "xfs", "8:2", "rw"),  # UTF-8 is not escaped
            "not a mountinfo line",
            "1 2 3 - too short",
        ]
    )
    mounts = parse_mountinfo(text)
    assert [m.point for m in mounts] == [
        "/srv/gitlab dr/data",
        "/srv/tab\tand\\backslash",
        "/srv/caf\u00e9 au lait",
    ]
    first = mounts[0]
    assert (first.device, first.root, first.fstype, first.source) == (
        "0:45",
        "/gitlab",
        "btrfs",
        "/dev/loop3",
    )
    assert "user_subvol_rm_allowed" in first.options


def test_a_path_is_on_the_longest_mount_point_that_holds_it() -> None:
    mounts = parse_mountinfo(
        "\n".join(
            [
                _line("/", "ext4", "8:1", "rw"),
                _line("/srv", "btrfs", "0:45"),
                _line("/srv/sync", "tmpfs", "0:50", "rw"),
                _line("/srv/sync", "btrfs", "0:46"),  # mounted over it: the last one counts
            ]
        )
    )
    assert mount_of(Path("/srv/gitlab/data"), mounts).device == "0:45"  # type: ignore[union-attr]
    assert mount_of(Path("/srv/sync/x"), mounts).device == "0:46"  # type: ignore[union-attr]
    assert mount_of(Path("/srvx"), mounts).fstype == "ext4"  # type: ignore[union-attr]
    assert is_mount_point(Path("/srv/sync"), mounts)
    assert not is_mount_point(Path("/srv/gitlab"), mounts)


@pytest.mark.parametrize(
    ("fstype", "options", "method"),
    [
        ("btrfs", GOOD, "snapshots"),
        ("btrfs", "rw,noatime,space_cache=v2", "fallback"),  # cannot delete subvolumes
        ("ext4", "rw", "fallback"),
        ("tmpfs", "rw,size=6m", "fallback"),
    ],
)
def test_the_sync_area_alone_decides_how_the_slave_keeps_snapshots(
    fstype: str, options: str, method: str
) -> None:
    mounts = parse_mountinfo(_line("/sync", fstype, "0:45", options))
    assert sync_method(Path("/sync"), mounts) == method


def test_detect_reads_the_areas_from_mountinfo(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "sync").mkdir()
    mounts = parse_mountinfo(
        "\n".join([_line(str(tmp_path / "home"), "ext4", "8:1", "rw"), _line(str(tmp_path))])
    )
    found = detect(tmp_path / "home", tmp_path / "sync", mounts)
    assert found.sync == Area(
        str(tmp_path / "sync"), "btrfs", False, "0:45", sorted(GOOD.split(","))
    )
    assert found.source is not None and found.source.fstype == "ext4"
    assert found.problems == [
        "GITLAB_HOME is on ext4, SYNC_HOME on btrfs: put both on btrfs"
    ]  # a folder in a tmp_path is never inode 256, so the sync area is no subvolume: not needed


def _area(fstype: str = "btrfs", subvolume: bool = True, device: str = "0:45", **kw: str) -> Area:
    options = kw.get("options", GOOD).split(",")
    return Area(kw.get("path", "/x"), fstype, subvolume, device, sorted(options))


HOME, SYNC = Path("/source"), Path("/sync")


def test_btrfs_laid_out_as_the_ami_does_takes_snapshots() -> None:
    found = decide(HOME, SYNC, _area(), _area(subvolume=True))
    assert (found.method, found.problems) == ("snapshots", [])
    assert "one instant" in found.why


def test_no_btrfs_at_all_is_the_fallback_with_no_problem() -> None:
    found = decide(HOME, SYNC, _area("ext4", False), _area("ext4", False))
    assert (found.method, found.problems) == ("fallback", [])
    assert "ext4" in found.why and "backup API" in found.why
    missing = decide(HOME, SYNC, _area(), None)
    assert (missing.method, missing.problems) == ("fallback", [])
    assert "/sync does not exist" in missing.why


@pytest.mark.parametrize(
    ("src", "sync", "problem"),
    [
        (None, _area(), "/source (GITLAB_HOME) does not exist"),
        (_area("ext4", False), _area(), "GITLAB_HOME is on ext4, SYNC_HOME on btrfs"),
        (_area(subvolume=False), _area(), "GITLAB_HOME is a plain directory on btrfs"),
        (_area(), _area("xfs", False), "SYNC_HOME is on xfs, GITLAB_HOME on btrfs"),
        (
            _area(),
            _area(options="rw,noatime"),
            "SYNC_HOME is mounted without user_subvol_rm_allowed",
        ),
        (_area(), _area(device="0:46"), "GITLAB_HOME and SYNC_HOME are on two btrfs"),
    ],
    ids=["no-home", "home-ext4", "home-not-subvolume", "sync-xfs", "no-option", "two-fs"],
)
def test_btrfs_set_up_wrongly_is_the_fallback_naming_each_problem(
    src: Area | None, sync: Area, problem: str
) -> None:
    found = decide(HOME, SYNC, src, sync)
    assert found.method == "fallback"
    assert len(found.problems) == 1 and problem in found.problems[0], found.problems
    assert found.why == "btrfs is set up wrongly: " + found.problems[0]


def test_every_problem_at_once_is_named() -> None:
    found = decide(HOME, SYNC, _area(subvolume=False), _area(device="0:9", options="rw"))
    assert len(found.problems) == 3
    assert found.why == "btrfs is set up wrongly: " + "; ".join(found.problems)


def test_a_layout_survives_its_json() -> None:
    found = decide(HOME, SYNC, _area(subvolume=False), _area())
    assert Layout.from_json(found.to_json()) == found
    assert Layout.from_json({}).method == "fallback"
    assert Layout.from_json({"method": "snapshots"}).method == "snapshots"
