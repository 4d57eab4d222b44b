"""A change pass's list, from the real watcher's events, sent by the real rsync with the
sender's options: the slave's copy of the previous snapshot becomes the new one exactly.

The "frozen" tree here is a plain directory left alone once changed (a btrfs snapshot is
that, made at one instant); the slave's copy is a plain copy of the tree before the changes
(the slave's ``.incoming``, a writable snapshot of ``current``, is that).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gitlab_sync import changelist, rsync
from gitlab_sync.filters import frozen_excludes
from gitlab_sync.manifest import differences, manifest
from gitlab_sync.watcher import Changes, Watcher


def _copy(source: Path, dest: Path) -> None:
    subprocess.run(["cp", "-a", f"{source}/.", f"{dest}/"], check=True)


def _send(frozen: Path, dest: Path, entries: list[bytes], listed: Path) -> None:
    """The change pass's rsync, as the sender runs it, but to a local directory."""
    changelist.write(listed, entries)
    argv = [
        "rsync", *rsync.CLIENT_OPTIONS, *frozen_excludes(),
        f"--files-from={listed}", *rsync.CHANGE_OPTIONS, f"{frozen}/", f"{dest}/",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Path, Path, Watcher]]:
    """A tree and the slave's copy of it, the tree watched (its first cut taken)."""
    tree, slave = tmp_path / "tree", tmp_path / "slave"
    for folder in ("data/uploads/ab", "data/repos/p.git/refs/heads", "data/old-dir/deep",
                   "data/file-to-dir", "data/postgresql/data", "config"):  # fmt: skip
        (tree / folder).mkdir(parents=True)
    for rel in ("data/uploads/ab/a.png", "data/repos/p.git/refs/heads/main",
                "data/old-dir/deep/x", "data/file-to-dir/f", "config/gitlab.rb",
                "data/dir-to-file", "data/postgresql/data/PG_VERSION"):  # fmt: skip
        (tree / rel).write_text(rel)
    slave.mkdir()
    _copy(tree, slave)
    watcher = Watcher(tree, lambda _m: None, marks=tmp_path / "marks")
    watcher.start(ready_within=10)
    watcher.cut("start")
    yield tree, slave, watcher
    watcher.stop()


def _changes(watcher: Watcher) -> Changes:
    got = watcher.cut("pass")
    assert got is not None and not got.doubt
    return got


def _same(tree: Path, slave: Path, excluded: Callable[[str], bool] = lambda _p: False) -> None:
    master = [r for r in manifest(str(tree)) if not excluded(r["path"])]
    copy = manifest(str(slave))
    assert master == copy, differences(master, copy)


def test_changes_deletions_and_renames_of_files_and_directories_reach_the_copy(
    pair: tuple[Path, Path, Watcher], tmp_path: Path
) -> None:
    tree, slave, watcher = pair
    (tree / "data/uploads/ab/a.png").write_text("changed")
    (tree / "data/uploads/ab/b.png").write_text("new")
    os.rename(tree / "data/repos/p.git/refs/heads/main", tree / "data/repos/p.git/refs/heads/x")
    os.rename(tree / "data/old-dir", tree / "data/renamed-dir")
    shutil.rmtree(tree / "data/file-to-dir")
    (tree / "data/file-to-dir").write_text("a file now")
    (tree / "data/dir-to-file").unlink()
    (tree / "data/dir-to-file/inner").mkdir(parents=True)
    (tree / "data/dir-to-file/inner/f").write_text("made at once")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "blob").write_text("moved in whole")
    os.rename(outside, tree / "data/moved-in")
    os.chmod(tree / "config", 0o700)
    (tree / "top-level").write_text("in the top directory")
    (tree / "data/postgresql/data/postmaster.pid").write_text("4242")
    entries, reason = changelist.build(tree, _changes(watcher))
    assert reason == ""
    assert b"data/renamed-dir/." in entries and b"data/moved-in/sub/." in entries
    _send(tree, slave, entries, tmp_path / "list")
    _same(tree, slave, lambda p: p.endswith("postmaster.pid"))
    assert not (slave / "data/postgresql/data/postmaster.pid").exists()


def test_names_with_spaces_newlines_and_bytes_that_are_not_utf8(
    pair: tuple[Path, Path, Watcher], tmp_path: Path
) -> None:
    tree, slave, watcher = pair
    folder = bytes(tree / "data/uploads/ab")
    names = [b"with space", b"new\nline", b"not-utf8-\xff\xfe\xc3", b"-dash", b"--delete"]
    for name in names:
        with open(folder + b"/" + name, "wb") as handle:
            handle.write(name)
    os.mkdir(folder + b"/dir \n\xff")
    with open(folder + b"/dir \n\xff/inside", "wb") as handle:
        handle.write(b"x")
    entries, _ = changelist.build(tree, _changes(watcher))
    _send(tree, slave, entries, tmp_path / "list")
    _same(tree, slave)
    os.rename(folder + b"/new\nline", folder + b"/renamed\nagain \xfe")
    os.unlink(folder + b"/not-utf8-\xff\xfe\xc3")
    shutil.rmtree(folder + b"/dir \n\xff")
    entries, _ = changelist.build(tree, _changes(watcher))
    _send(tree, slave, entries, tmp_path / "list")
    _same(tree, slave)


def test_a_parent_replaced_by_a_symlink_is_sent_as_the_link_never_followed(
    pair: tuple[Path, Path, Watcher], tmp_path: Path
) -> None:
    tree, slave, watcher = pair
    secret = tmp_path / "elsewhere"
    (secret / "deep").mkdir(parents=True)
    (secret / "deep" / "x").write_text("not GitLab's")
    (tree / "data/old-dir/deep/x").write_text("changed first")
    shutil.rmtree(tree / "data/old-dir")
    (tree / "data/old-dir").symlink_to(secret)
    entries, _ = changelist.build(tree, _changes(watcher))
    assert all(not e.startswith(b"data/old-dir/") for e in entries)
    _send(tree, slave, entries, tmp_path / "list")
    assert (slave / "data/old-dir").is_symlink()
    _same(tree, slave)


def test_a_subtree_remade_with_other_contents_comes_across_exactly(
    pair: tuple[Path, Path, Watcher], tmp_path: Path
) -> None:
    tree, slave, watcher = pair
    shutil.rmtree(tree / "data/old-dir")
    (tree / "data/old-dir/other").mkdir(parents=True)
    (tree / "data/old-dir/other/y").write_text("y")
    changes = _changes(watcher)
    # The slave's copy also holds what no event named (a pass before went wrong): the
    # subtree's directories are sent with their contents, so that goes too.
    (slave / "data/old-dir/stray").write_text("stray")
    entries, _ = changelist.build(tree, changes)
    _send(tree, slave, entries, tmp_path / "list")
    _same(tree, slave)


def test_a_hard_linked_file_leaves_the_pass_to_a_full_one(
    pair: tuple[Path, Path, Watcher],
) -> None:
    tree, _slave, watcher = pair
    os.link(tree / "data/uploads/ab/a.png", tree / "config/a-link")
    entries, reason = changelist.build(tree, _changes(watcher))
    assert entries == [] and reason == "a hard-linked file changed ('config/a-link')"
    (tree / "data/fresh").mkdir()
    os.link(tree / "config/gitlab.rb", tree / "data/fresh/rb")
    _, reason = changelist.build(tree, Changes(subtrees=frozenset({b"data/fresh"})))
    assert reason == "a hard-linked file arrived ('data/fresh')"


def test_the_list_names_each_change_and_its_parent_or_the_parents_entries(tmp_path: Path) -> None:
    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / "a/b/f").write_text("f")
    (tmp_path / "a/b/f2").write_text("f2")
    changes = Changes(paths=frozenset({b"a/b/f", b"a/gone", b"top", b""}))
    # What is gone is deleted by sending its parent's entries ("a/.", "."): "a" itself is in.
    assert changelist.build(tmp_path, changes) == ([b".", b"a/.", b"a/b", b"a/b/f"], "")
    changes = Changes(paths=frozenset({b"a/b/f/under-a-file", b"x/y/z", b"a/b/f2"}))
    assert changelist.build(tmp_path, changes) == ([b".", b"a/b", b"a/b/f", b"a/b/f2"], "")


def test_a_frozen_pass_leaves_out_postgresqls_pid_options_and_socket_files_only(
    tmp_path: Path,
) -> None:
    """A crash image: the WAL, the temporary files, everything else comes along."""
    tree, copy = tmp_path / "tree", tmp_path / "copy"
    kept = (
        "data/postgresql/data/PG_VERSION",
        "data/postgresql/data/base/1/1259",
        "data/postgresql/data/pg_wal/000000010000000000000001",
        "data/postgresql/data/base/1/pgsql_tmp/t1",
        "data/postgresql/data/backup_label.old",
    )
    left = ("data/postgresql/data/postmaster.pid", "data/postgresql/data/postmaster.opts",
            "data/postgresql/.s.PGSQL.5432.lock", "data/postgresql/.s.PGSQL.5432")  # fmt: skip
    for rel in (*kept, *left):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(rel)
    subprocess.run(
        ["rsync", *rsync.CLIENT_OPTIONS, *frozen_excludes(), f"{tree}/", f"{copy}/"], check=True
    )
    assert all((copy / rel).is_file() for rel in kept)
    assert not any((copy / rel).exists() for rel in left)
