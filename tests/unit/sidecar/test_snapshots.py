"""Snapshots on the slave: publication only when a pass is complete (retention:
test_retention.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gitlab_sync import receiver
from gitlab_sync.config import SyncError
from gitlab_sync.retention import Tiers
from gitlab_sync.snapshots import NAME_PATTERN, Area, snapshot_name

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
KEEP = Tiers(every=1e9)  # every snapshot: these tests are not about retention


def _names(*hours_ago: float) -> list[str]:
    return [snapshot_name(NOW - dt.timedelta(hours=h)) for h in hours_ago]


def test_snapshot_names_sort_by_time() -> None:
    names = _names(5, 0.001, 3)
    assert sorted(names) == [names[0], names[2], names[1]]


def test_what_a_snapshot_name_looks_like_is_known_to_the_receiver() -> None:
    assert all(NAME_PATTERN.match(name) for name in _names(0, 0.5, 1e4))
    for word in ("", "current", "../x", "20261125T120000Z", snapshot_name(NOW) + "/.."):
        assert not NAME_PATTERN.match(word), word


def _received(area: Area, pass_id: str, started: dt.datetime, content: str) -> None:
    area.begin(pass_id, 1, started)
    (area.incoming / "file").write_text(content)
    area.mark(pass_id, "received")


def test_a_complete_pass_becomes_current(tmp_path: Path) -> None:
    area = Area(tmp_path)
    _received(area, "p1", NOW, "one")
    done = area.commit("p1", KEEP, extra={"files": 1})
    assert area.current_name() == done["snapshot"] == snapshot_name(NOW)
    assert (area.current / "file").read_text() == "one"
    assert area.meta(done["snapshot"])["files"] == 1
    assert not area.incoming.exists()
    # Not on btrfs: hard-linked folders, said in the snapshot's metadata and the summary.
    assert area.meta(done["snapshot"])["method"] == area.summary()["method"] == "fallback"


def test_a_pass_of_what_changed_needs_btrfs_snapshots(tmp_path: Path) -> None:
    area = Area(tmp_path)
    _received(area, "p1", NOW, "one")
    name = area.commit("p1", KEEP, extra={})["snapshot"]
    assert "not btrfs snapshots" in area.continues_from(name)
    assert area.seal_published() == []  # nothing to seal on folders
    argv = receiver.server_command(area, ["--server", "-logDtpre.iLsfxC", ".", "x/"])
    assert f"--link-dest={area.snapshots / name}" in argv  # unchanged files: hard links


def test_a_failed_or_unfinished_pass_is_never_published(tmp_path: Path) -> None:
    area = Area(tmp_path)
    _received(area, "p1", NOW, "one")
    area.commit("p1", KEEP, extra={})
    area.begin("p2", 1, NOW + dt.timedelta(minutes=1))
    (area.incoming / "file").write_text("half")
    with pytest.raises(SyncError, match="receiving"):
        area.commit("p2", KEEP, extra={})
    area.mark("p2", "failed", "rsync exited 11")
    with pytest.raises(SyncError, match="failed"):
        area.commit("p2", KEEP, extra={})
    with pytest.raises(SyncError, match="not the one being received"):
        area.commit("p3", KEEP, extra={})
    assert (area.current / "file").read_text() == "one"


def test_a_new_pass_starts_from_an_empty_incoming(tmp_path: Path) -> None:
    area = Area(tmp_path)
    area.begin("p1", 1, NOW)
    (area.incoming / "leftover").write_text("from a cut pass")
    area.begin("p2", 1, NOW)
    assert list(area.incoming.iterdir()) == []


def test_commit_applies_retention_through_the_trash(tmp_path: Path) -> None:
    area = Area(tmp_path)
    for i in range(4):
        _received(area, f"p{i}", NOW + dt.timedelta(minutes=i), str(i))
        area.commit(f"p{i}", Tiers(every=1e9, most=2), extra={})
    assert len(area.names()) == 2
    assert area.empty_trash() == 2
    assert (area.current / "file").read_text() == "3"


def test_only_one_pass_is_received_at_a_time(tmp_path: Path) -> None:
    area = Area(tmp_path)
    with area.locked(), pytest.raises(SyncError, match="another pass"), area.locked():
        pass
    assert not area.busy()


def test_restore_copies_the_current_snapshot_without_sharing_inodes(tmp_path: Path) -> None:
    from gitlab_sync.restore import MARKER, restore

    area = Area(tmp_path / "sync")
    _received(area, "p1", NOW, "data")
    area.commit("p1", KEEP, extra={})
    target = tmp_path / "gitlab"
    (target / "config").mkdir(parents=True)  # an empty mount point, as Docker makes it
    record = restore(area, target)
    assert record["copied"] and record["snapshot"] == area.current_name()
    assert record["method"] == "copy" and record["aside"] is None
    copied, original = target / "file", area.current / "file"
    assert copied.read_text() == "data"
    assert copied.stat().st_ino != original.stat().st_ino
    copied.write_text("written by GitLab")
    assert original.read_text() == "data"
    assert not restore(area, target)["copied"]  # the same snapshot again: nothing to do
    assert (target / MARKER).is_file()


def test_restore_moves_what_was_there_aside_and_refuses_without_a_snapshot(tmp_path: Path) -> None:
    from gitlab_sync.restore import restore

    area = Area(tmp_path / "sync")
    with pytest.raises(SyncError, match="no complete snapshot"):
        restore(area, tmp_path / "gitlab")
    _received(area, "p1", NOW, "new")
    area.commit("p1", KEEP, extra={})
    target = tmp_path / "gitlab"
    (target / "data").mkdir(parents=True)
    (target / "data" / "old").write_text("keep me")
    restore(area, target)
    aside = [p for p in target.iterdir() if p.name.startswith(".before-restore-")]
    assert len(aside) == 1 and (aside[0] / "data" / "old").read_text() == "keep me"


def test_restore_of_a_chosen_snapshot_and_of_none_that_exists(tmp_path: Path) -> None:
    from gitlab_sync.restore import restore

    area = Area(tmp_path / "sync")
    for i in range(2):
        _received(area, f"p{i}", NOW + dt.timedelta(minutes=i), str(i))
        area.commit(f"p{i}", KEEP, extra={})
    older = area.names()[0]
    target = tmp_path / "gitlab"
    (target / "data").mkdir(parents=True)
    (target / "data" / "live").write_text("GitLab's")
    with pytest.raises(SyncError, match="no complete snapshot 20990101"):
        restore(area, target, "20990101T000000.000000Z")
    assert (target / "data" / "live").read_text() == "GitLab's"  # refused before moving anything
    record = restore(area, target, older)
    assert record["snapshot"] == older and (target / "file").read_text() == "0"
    assert record["aside"] and (Path(record["aside"]) / "data" / "live").is_file()


def test_a_snapshot_is_named_for_the_masters_instant_never_later_than_the_slave_began(
    tmp_path: Path,
) -> None:
    area = Area(tmp_path)
    _received(area, "p1", NOW, "1")
    frozen = NOW - dt.timedelta(seconds=0.4)  # the master froze its tree before sending
    done = area.commit("p1", KEEP, extra={}, instant=frozen)
    assert done["snapshot"] == snapshot_name(frozen)
    assert area.meta(done["snapshot"])["started_at"] == done["started_at"]
    # An instant after the slave began receiving is not believed: the slave's start stands.
    _received(area, "p2", NOW + dt.timedelta(minutes=1), "2")
    later = NOW + dt.timedelta(minutes=2)
    assert area.commit("p2", KEEP, extra={}, instant=later)["snapshot"] == (
        snapshot_name(NOW + dt.timedelta(minutes=1))
    )
    # Nor one before the current snapshot's: names stay in order.
    _received(area, "p3", NOW + dt.timedelta(minutes=3), "3")
    early = NOW - dt.timedelta(minutes=5)
    assert area.commit("p3", KEEP, extra={}, instant=early)["snapshot"] == (
        snapshot_name(NOW + dt.timedelta(minutes=3))
    )


def test_commit_refuses_an_instant_that_is_not_a_time(tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="not an ISO 8601 UTC time"):
        receiver.commit_words(1, ["files=3", "instant=yesterday"])
    extra, instant = receiver.commit_words(1, ["files=3", "instant=2026-12-02T02:00:00.000000Z"])
    assert extra == {"epoch": 1, "files": 3}
    assert instant == dt.datetime(2026, 12, 2, 2, 0, tzinfo=dt.UTC)
