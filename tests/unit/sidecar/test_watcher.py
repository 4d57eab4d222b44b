"""The master's change watcher on real directories with the kernel's inotify: the paths it
collects, how a marker cuts them, subtrees, doubt, batching, and the fall-back to timed passes."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitlab_sync.watcher import EXHAUSTED, POSTGRESQL_OWN, Changes, Watcher
from tests.unit.sidecar.userns import run_in_user_namespace


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    for folder in ("a/b", "c", "gone/deep"):
        (root / folder).mkdir(parents=True)
    (root / "c" / "x").write_text("x")
    (root / "gone" / "deep" / "old").write_text("old")
    return root


@pytest.fixture
def watcher(tree: Path) -> Iterator[Watcher]:
    found = Watcher(tree, lambda _m: None, marks=tree.parent / "marks")
    found.start(ready_within=10)
    assert found.mode == "inotify"
    found.cut("start")  # what setting up saw
    yield found
    found.stop()


def _cut(watcher: Watcher, name: str) -> Changes:
    got = watcher.cut(name)
    assert got is not None, "the marker was not seen"
    return got


def test_a_cut_returns_what_changed_before_its_marker_and_leaves_the_rest_to_the_next(
    tree: Path, watcher: Watcher
) -> None:
    (tree / "a" / "b" / "new").write_text("1")
    os.rename(tree / "c" / "x", tree / "c" / "y")
    shutil.rmtree(tree / "gone")
    os.chmod(tree / "a", 0o700)
    first = _cut(watcher, "one")
    (tree / "c" / "later").write_text("2")
    second = _cut(watcher, "two")
    assert first == Changes(
        paths=frozenset({b"a/b/new", b"c/x", b"c/y", b"gone", b"gone/deep", b"gone/deep/old", b"a"})
    )
    assert second == Changes(paths=frozenset({b"c/later"}))
    assert _cut(watcher, "three") == Changes()


def test_directories_made_or_moved_in_arrive_as_subtrees_and_are_watched(
    tree: Path, watcher: Watcher
) -> None:
    (tree / "new" / "deep").mkdir(parents=True)
    outside = tree.parent / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "inner" / "f").write_text("made before it was watched")
    os.rename(outside, tree / "a" / "moved-in")
    first = _cut(watcher, "one")
    assert {b"new", b"a/moved-in"} <= first.subtrees
    (tree / "new" / "deep" / "f").write_text("1")
    (tree / "a" / "moved-in" / "inner" / "g").write_text("2")
    assert _cut(watcher, "two").paths == {b"new/deep/f", b"a/moved-in/inner/g"}


def test_a_directory_moved_away_is_not_reported_under_its_old_path(
    tree: Path, watcher: Watcher
) -> None:
    os.rename(tree / "a", tree / "z")
    assert _cut(watcher, "one") == Changes(
        paths=frozenset({b"a", b"z"}), subtrees=frozenset({b"z"})
    )
    (tree / "z" / "b" / "f").write_text("1")
    assert _cut(watcher, "two").paths == {b"z/b/f"}
    os.rename(tree / "z", tree.parent / "out")
    (tree.parent / "out" / "b" / "g").write_text("outside the tree now")
    assert _cut(watcher, "three").paths == {b"z"}


def test_names_are_bytes_whatever_they_hold(tree: Path, watcher: Watcher) -> None:
    names = [b"with space", b"new\nline", b"not-utf8-\xff\xfe\xc3", b"-dash", b"--delete"]
    for name in names:
        with open(bytes(tree / "c") + b"/" + name, "wb") as handle:
            handle.write(b"x")
    assert _cut(watcher, "one").paths == {b"c/" + name for name in names}


def test_a_reader_held_up_overflows_the_queue_then_rewatches_what_was_made_meanwhile(
    tree: Path, watcher: Watcher
) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    with watcher._lock:  # the reader waits for it: the kernel's queue fills up
        for n in range(limit):
            os.close(os.open(tree / "c" / f"f{n}", os.O_CREAT | os.O_WRONLY))
        (tree / "made-in-the-gap").mkdir()
    got = None
    for n in range(10):  # the first markers may be dropped too, while the queue is full
        got = watcher.cut(f"after-{n}", timeout=2)
        if got is not None:
            break
    assert got is not None and got.doubt.startswith("the inotify event queue overflowed")
    assert got.paths == frozenset()  # of no use: the pass that takes it sends the whole tree
    (tree / "made-in-the-gap" / "f").write_text("seen")
    assert _cut(watcher, "next") == Changes(paths=frozenset({b"made-in-the-gap/f"}))


def test_more_changes_than_the_limit_put_the_list_in_doubt(tree: Path) -> None:
    watcher = Watcher(tree, lambda _m: None, marks=tree.parent / "marks", limit=10)
    watcher.start(ready_within=10)
    try:
        watcher.cut("start")
        for n in range(11):
            (tree / "c" / f"f{n}").write_text("x")
        assert _cut(watcher, "one").doubt == "more than 10 paths changed between two passes"
        (tree / "c" / "one-more").write_text("x")
        assert _cut(watcher, "two") == Changes(paths=frozenset({b"c/one-more"}))
    finally:
        watcher.stop()


def test_a_cut_after_the_snapshot_restarts_the_batch_but_leaves_its_changes_pending(
    tree: Path, watcher: Watcher
) -> None:
    (tree / "c" / "e").write_text("x")
    watcher.cut("before")
    watcher.cut("after", reset=True)  # all it took was read before the snapshot
    assert not watcher.pending()
    watcher.cut("before-2")
    (tree / "c" / "f").write_text("x")  # between the markers: may have missed the snapshot
    watcher.cut("after-2", reset=True)
    assert watcher.pending()  # so the next pass comes soon, and sends it again


def test_a_watcher_not_watching_cannot_cut(tree: Path) -> None:
    assert Watcher(tree, lambda _m: None, marks=tree.parent / "marks").cut("x") is None
    assert Watcher(tree, lambda _m: None).cut("x") is None  # the fallback keeps no paths
    assert not (tree.parent / "marks" / "x").exists()


def test_postgresqls_own_files_are_left_out_on_the_fallback(tmp_path: Path) -> None:
    for folder in ("data/postgresql/data/base", "logs/postgresql", "data/postgresql-backup",
                   "logs/nginx"):  # fmt: skip
        (tmp_path / folder).mkdir(parents=True)
    watcher = Watcher(tmp_path, lambda _m: None, exclude=POSTGRESQL_OWN)
    watcher.start(ready_within=10)
    try:
        for rel in ("data/postgresql/.s.PGSQL.5432.lock", "data/postgresql/data/base/1259",
                    "logs/postgresql/current"):  # fmt: skip
            (tmp_path / rel).write_text("PostgreSQL's own")
        time.sleep(0.5)
        assert not watcher.pending()
        for rel in ("data/postgresql-backup/x", "logs/nginx/access.log"):
            watcher.take()
            (tmp_path / rel).write_text("GitLab's")
            deadline = time.monotonic() + 5
            while not watcher.pending():
                assert time.monotonic() < deadline, f"{rel} was not seen"
                time.sleep(0.02)
    finally:
        watcher.stop()


def test_events_are_batched_until_quiet(tree: Path, watcher: Watcher) -> None:
    watcher.take()
    assert not watcher.due(time.monotonic(), batch=0.1, max_delay=1)
    (tree / "c" / "f").write_text("x")
    deadline = time.monotonic() + 5
    while not watcher.due(time.monotonic(), batch=0.1, max_delay=1):
        assert time.monotonic() < deadline, "the batch never became due"
        time.sleep(0.02)
    watcher.take()
    assert not watcher.due(time.monotonic() + 10, batch=0.1, max_delay=1)


def test_changes_are_pending_until_a_pass_takes_them() -> None:
    watcher = Watcher(Path("/nonexistent"), lambda _m: None)
    assert not watcher.pending()
    watcher.poke()
    assert watcher.pending()
    watcher.take()
    assert not watcher.pending()


EXHAUST = """
import sys
from pathlib import Path
from gitlab_sync.watcher import Watcher
open('/proc/sys/user/max_inotify_watches', 'w').write('3')
notes = []
watcher = Watcher(Path(sys.argv[1]), notes.append, marks=Path(sys.argv[2]))
watcher.start(ready_within=10)
print(watcher.mode)
print(watcher.note)
print(watcher.cut('m'))
print(notes[-1])
"""


def test_exhausted_watches_fall_back_to_timed_passes_and_say_so(tree: Path) -> None:
    """In a user namespace of its own the watcher may lower its own watch limit (3: the
    markers' folder and two of the tree's six directories)."""
    done = run_in_user_namespace(EXHAUST, str(tree), str(tree.parent / "m"))
    assert done.stdout.splitlines() == ["timer", EXHAUSTED, "None", EXHAUSTED], done.stderr
