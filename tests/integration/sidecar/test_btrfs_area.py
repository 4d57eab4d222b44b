"""The slave's sync area and promotion's restore on a real btrfs filesystem in a loop file.

Laid out as the AMI lays out a host (subvolumes ``gitlab`` and ``gitlab-sync`` on one btrfs
mounted ``user_subvol_rm_allowed``), with the sidecar's own code run here as root: the pass
protocol (begin, commit, prune, a pass cut short, a crash before the seal), the ``base=`` word,
restore and prepare. That a container without CAP_SYS_ADMIN may do the same is shown by the
pairs of test_sync_pair.py on ``fs="btrfs"`` and by the restore container at the end here.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import docker
import pytest

from gitlab_sync import btrfs, layout, receiver
from gitlab_sync.config import Pairing, Paths, Peer, SyncError, Tunables, save_pairing
from gitlab_sync.manifest import differences, digest, manifest
from gitlab_sync.restore import MARKER, restore
from gitlab_sync.retention import Tiers
from gitlab_sync.snapshots import Area
from ops.rehearsal.loopfs import LoopBtrfs, loop_btrfs
from tests.integration.sidecar import trees
from tests.integration.sidecar.sync_pair import SYNC_IMAGE, run_once, sync_pair

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
KEEP = Tiers(every=1e9)  # every snapshot, unless a test says otherwise


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[LoopBtrfs]:
    with loop_btrfs(tmp_path / "disk", "1G", ("gitlab", "gitlab-sync")) as fs:
        yield fs


def _area(disk: LoopBtrfs) -> Area:
    area = Area(disk.mountpoint / "gitlab-sync")
    assert area.method == "snapshots"
    return area


def _tree(root: Path, files: int = 50) -> None:
    """A small GitLab-like tree: files, a hard link, a symlink, an owner, a mode, a sparse file."""
    for i in range(files):
        path = root / "data" / f"d{i % 5}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(100 + i))
    (root / "config").mkdir(exist_ok=True)
    secrets = root / "config" / "gitlab-secrets.json"
    secrets.write_text('{"secret": "not really"}')
    secrets.chmod(0o600)
    os.chown(root / "data" / "d0", 998, 998)
    os.link(root / "data" / "d0" / "f0000", root / "data" / "hard-link")
    (root / "data" / "repos-link").symlink_to("d1")
    with open(root / "data" / "sparse.img", "wb") as handle:
        handle.seek(16 * 1024 * 1024)
        handle.write(b"tail")


def _many(root: Path, count: int) -> None:
    folder = root / "data" / "many"
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"f{i:06d}").write_bytes(b"x")


def _big_tree(root: Path) -> None:
    _tree(root)
    _many(root, 20_000)


def _pass(
    area: Area, pass_id: str, at: dt.datetime, change: Callable[[Path], Any] | None = None
) -> str:
    """One pass as the receiver runs it; ``change`` writes into ``.incoming`` (rsync's part)."""
    area.begin(pass_id, 1, at)
    if change:
        change(area.incoming)
    area.mark(pass_id, "received")
    name: str = area.commit(pass_id, KEEP, extra={"files": 1})["snapshot"]
    return name


def test_a_pass_lands_in_a_writable_snapshot_of_current_and_is_published_read_only(
    disk: LoopBtrfs,
) -> None:
    area = _area(disk)
    area.begin("p1", 1, T0)
    assert btrfs.is_subvolume(area.incoming) and not btrfs.is_readonly(area.incoming)
    assert list(area.incoming.iterdir()) == []  # no current yet: an empty subvolume
    _tree(area.incoming)
    area.mark("p1", "received")
    first = area.commit("p1", KEEP, extra={})["snapshot"]
    published = area.snapshots / first
    assert btrfs.is_subvolume(published) and btrfs.is_readonly(published)
    assert area.current_name() == first and not area.incoming.exists()
    assert area.meta(first)["method"] == "snapshots" and area.summary()["method"] == "snapshots"
    before = manifest(str(published))

    area.begin("p2", 1, T0 + dt.timedelta(minutes=1))
    assert area.incoming.stat().st_dev != published.stat().st_dev  # a subvolume of its own
    assert manifest(str(area.incoming)) == before  # starts as a copy of current
    changed = area.incoming / "data" / "d0" / "f0000"
    with open(changed, "r+b") as handle:  # in place, as rsync --inplace or PostgreSQL would
        handle.write(b"CHANGED")
    os.chown(area.incoming / "data" / "d0", 0, 0)
    (area.incoming / "data" / "d1" / "f0001").unlink()
    (area.incoming / "config" / "gitlab-secrets.json").chmod(0o644)
    area.mark("p2", "received")
    second = area.commit("p2", KEEP, extra={})["snapshot"]
    assert area.meta(second)["started_from"] == first
    now = manifest(str(published))
    assert now == before, differences(before, now)  # the older snapshot is untouched
    assert (area.snapshots / second / "data" / "hard-link").read_bytes().startswith(b"CHANGED")
    with pytest.raises(OSError, match="Read-only file system"):
        (area.current / "data" / "new").write_text("x")


def test_a_pass_cut_short_is_never_published_and_the_next_starts_from_current(
    disk: LoopBtrfs,
) -> None:
    area = _area(disk)
    first = _pass(area, "p1", T0, _tree)
    kept = digest(manifest(str(area.current)))
    area.begin("p2", 1, T0 + dt.timedelta(minutes=1))
    (area.incoming / "data" / "half-written").write_bytes(b"x" * 1000)
    (area.incoming / "data" / "d2" / "f0002").unlink()
    with pytest.raises(SyncError, match="receiving"):
        area.commit("p2", KEEP, extra={})
    area.mark("p2", "failed", "rsync exited 20")
    with pytest.raises(SyncError, match="failed"):
        area.commit("p2", KEEP, extra={})
    assert area.current_name() == first and area.names() == [first]
    area.begin("p3", 1, T0 + dt.timedelta(minutes=2))  # the cut pass's subvolume is deleted
    assert digest(manifest(str(area.incoming))) == kept
    assert digest(manifest(str(area.current))) == kept


def test_a_snapshot_a_crash_left_writable_is_sealed_at_the_next_pass(disk: LoopBtrfs) -> None:
    area = _area(disk)
    _pass(area, "p1", T0, _tree)
    # What commit does up to the crash: the metadata, the rename, but no seal, no current.
    area.begin("p2", 1, T0 + dt.timedelta(minutes=1))
    stray = area.snapshots / "20261125T120100.000000Z"
    area.incoming.rename(stray)
    area.incoming_meta.unlink()
    assert not btrfs.is_readonly(stray)
    area.begin("p3", 1, T0 + dt.timedelta(minutes=2))
    assert btrfs.is_readonly(stray)
    assert area.seal_published() == []  # once is enough


def test_retention_deletes_subvolumes_at_once_not_through_the_trash(disk: LoopBtrfs) -> None:
    area = _area(disk)
    _pass(area, "p0", T0, partial(_many, count=20_000))
    for i in range(1, 4):
        _pass(area, f"p{i}", T0 + dt.timedelta(minutes=i))
    area.begin("p4", 1, T0 + dt.timedelta(minutes=4))
    area.mark("p4", "received")
    began = time.monotonic()
    area.commit("p4", Tiers(every=1e9, most=2), extra={})  # prunes three of 20,000 files each
    seconds = time.monotonic() - began
    print(f"commit with three 20,000-file snapshots pruned: {seconds:.3f} s")
    assert len(area.names()) == 2 and not area.trash.exists()
    listed = subprocess.run(
        ["btrfs", "subvolume", "list", "-o", str(area.snapshots)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert sorted(line.rsplit("/", 1)[-1] for line in listed.splitlines()) == area.names()
    assert seconds < 2.0


def test_a_current_kept_as_a_folder_by_an_older_version_is_not_continued(
    disk: LoopBtrfs,
) -> None:
    area = _area(disk)
    old = "20261125T110000.000000Z"
    (area.snapshots / old / "data").mkdir(parents=True)  # a hard-linked folder snapshot
    (area.snapshots / old / "data" / "f").write_text("old")
    area.current.symlink_to(Path("snapshots") / old)
    assert "folder, not a subvolume" in area.continues_from(old)
    area.begin("p1", 1, T0)
    assert btrfs.is_subvolume(area.incoming) and list(area.incoming.iterdir()) == []
    area.mark("p1", "received")
    area.commit("p1", Tiers(every=1e9, most=1), extra={})
    assert area.names() == [area.current_name()] and area.empty_trash() == 1  # the folder


@pytest.fixture
def slave_paths(disk: LoopBtrfs, monkeypatch: pytest.MonkeyPatch) -> Paths:
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(b"")))
    paths = Paths(
        state=disk.folder / "state",
        source=disk.mountpoint / "gitlab",
        sync=disk.mountpoint / "gitlab-sync",
    )
    save_pairing(paths, Pairing(role="slave", peer=Peer("master"), peer_key="ssh-ed25519 AAAA"))
    return paths


def _serve(paths: Paths, command: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = receiver.serve({"SSH_ORIGINAL_COMMAND": command}, paths, Tunables())
    return code, capsys.readouterr().err


def test_base_is_taken_only_when_it_is_current(
    slave_paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    area = Area(slave_paths.sync)
    first = _pass(area, "p1", T0, _tree)
    args = "--server -logDtpre.iLsfxC . incoming/"
    other = "20261125T000000.000000Z"
    code, err = _serve(slave_paths, f"gitlab-sync-recv rsync 1 p2 base={other} {args}", capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert "base=" in err and f"current snapshot is {first}" in err and "send a full pass" in err
    assert not area.incoming.exists()
    # Its own current: received into a copy of it (rsync itself fails here: no master on stdin).
    _serve(slave_paths, f"gitlab-sync-recv rsync 1 p2 base={first} {args}", capsys)
    meta = json.loads(area.incoming_meta.read_text())
    assert meta["id"] == "p2" and meta["started_from"] == first and meta["state"] == "failed"
    # No hard links from current into a subvolume (they cannot cross it; rsync would copy).
    assert not any("link-dest" in word for word in receiver.server_command(area, args.split()))
    hello = receiver.serve(
        {"SSH_ORIGINAL_COMMAND": "gitlab-sync-recv hello 1"}, slave_paths, Tunables()
    )
    assert hello == 0
    said = json.loads(capsys.readouterr().out)
    assert said["layout"]["method"] == "snapshots" and said["current"] == first


def test_the_layout_of_a_host_laid_out_as_the_ami_does(disk: LoopBtrfs, tmp_path: Path) -> None:
    home, sync = disk.mountpoint / "gitlab", disk.mountpoint / "gitlab-sync"
    found = layout.detect(home, sync)
    assert (found.method, found.problems) == ("snapshots", []), found.why
    (disk.mountpoint / "plain").mkdir()
    assert "not a subvolume" in layout.detect(disk.mountpoint / "plain", sync).problems[0]
    assert "on ext4" in layout.detect(tmp_path, sync).problems[0]
    subprocess.run(["umount", str(disk.mountpoint)], check=True)
    subprocess.run(
        ["mount", "-o", "loop,noatime", str(disk.image), str(disk.mountpoint)], check=True
    )
    (problem,) = layout.detect(home, sync).problems
    assert "SYNC_HOME is mounted without user_subvol_rm_allowed" in problem
    assert Area(sync).method == "fallback"  # nor could the sidecar prune its snapshots


def _files(root: Path) -> list[dict[str, Any]]:
    """The manifest of what a restore put in ``root``: not its marker, nor the top folder
    (whose time the marker changed)."""
    return [r for r in manifest(str(root)) if r["path"] not in {".", MARKER}]


def _gitlab_writes(home: Path) -> None:
    """What GitLab does to its home once it runs: pages rewritten in place, logs appended,
    files made and removed, modes changed."""
    with open(home / "data" / "d0" / "f0000", "r+b") as handle:
        handle.write(b"PAGE")
    with open(home / "data" / "d1" / "f0001", "ab") as handle:
        handle.write(b"log line\n")
    (home / "data" / "new-upload").write_bytes(b"upload")
    (home / "data" / "d2" / "f0002").unlink()
    (home / "config" / "gitlab-secrets.json").chmod(0o640)


def test_restore_makes_gitlab_home_a_writable_snapshot_and_leaves_the_snapshot_whole(
    disk: LoopBtrfs,
) -> None:
    area = _area(disk)
    first = _pass(area, "p1", T0, _big_tree)
    second = _pass(area, "p2", T0 + dt.timedelta(minutes=1))
    home = disk.mountpoint / "gitlab"
    (home / "config").mkdir()  # an empty mount point, as Docker makes it
    kept = {name: digest(manifest(str(area.snapshots / name))) for name in area.names()}

    record = restore(area, home)
    print(f"restore of a 20,000-file snapshot: {record['seconds']} s ({record['method']})")
    assert (record["method"], record["snapshot"], record["aside"]) == ("snapshot", second, None)
    assert record["seconds"] < 1.0 and record["copied"] is True
    assert btrfs.is_subvolume(home) and not btrfs.is_readonly(home)
    assert _files(home) == _files(area.current)
    _gitlab_writes(home)
    assert restore(area, home)["copied"] is False  # the marker: the same snapshot again

    record = restore(area, home, first)  # an older one: what GitLab wrote goes beside
    aside = Path(record["aside"])
    assert aside.parent == home.parent and aside.name.startswith("gitlab.before-restore-")
    assert (aside / "data" / "new-upload").read_bytes() == b"upload"
    assert not (home / "data" / "new-upload").exists()
    _gitlab_writes(home)
    after = {name: digest(manifest(str(area.snapshots / name))) for name in area.names()}
    assert after == kept  # no write of GitLab's reached a snapshot
    assert all(btrfs.is_readonly(area.snapshots / name) for name in area.names())


def test_prepare_snapshots_on_the_same_filesystem_and_copies_elsewhere(
    disk: LoopBtrfs, tmp_path: Path
) -> None:
    area = _area(disk)
    name = _pass(area, "p1", T0, _tree)
    same = area.prepare(disk.mountpoint / "verify")
    assert (same["method"], same["snapshot"]) == ("snapshot", name)
    other = area.prepare(tmp_path / "elsewhere")  # ext4: a copy
    assert other["method"] == "copy" and other["bytes"] > 0
    for target in (disk.mountpoint / "verify", tmp_path / "elsewhere"):
        assert manifest(str(target)) == manifest(str(area.current)), target
    (disk.mountpoint / "busy" / "data").mkdir(parents=True)
    (disk.mountpoint / "busy" / "data" / "live").write_text("GitLab's")
    with pytest.raises(SyncError, match="not empty"):
        area.prepare(disk.mountpoint / "busy")


def test_the_promotion_restore_container_replaces_gitlab_home_by_a_snapshot() -> None:
    """``restore /homes/gitlab --json`` as promotion runs it: SYNC_HOME at /sync, the parent
    of GITLAB_HOME at /homes, in a container with Docker's default capabilities."""
    with sync_pair(fs="btrfs") as pair:
        pair.writer.python(trees.EVERY_KIND)
        pair.wait_in_sync(timeout=60)
        pair.stop_sending()
        home = Path(pair.slave_home)
        (home / "data").mkdir()  # GitLab's data mount point, empty
        out = run_once(
            docker.from_env(),
            SYNC_IMAGE,
            ["restore", f"/homes/{home.name}", "--json"],
            {
                str(Path(pair.slave_sync)): {"bind": "/sync", "mode": "rw"},
                str(home.parent): {"bind": "/homes", "mode": "rw"},
            },
        )
        record = json.loads(out)
        assert record["method"] == "snapshot" and record["seconds"] < 1.0, record
        assert btrfs.is_subvolume(home) and not btrfs.is_readonly(home)
        current, restored = _files(Path(pair.slave_sync) / "current"), _files(home)
        assert restored == current, differences(current, restored)
