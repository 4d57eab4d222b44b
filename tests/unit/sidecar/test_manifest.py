"""Manifests: every property that must survive the sync is recorded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitlab_sync import manifest as gitlab_manifest
from gitlab_sync.manifest import differences, digest, manifest


def test_manifest_records_types_links_sparse_and_odd_names(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a file").write_text("x")
    os.link(tmp_path / "d" / "a file", tmp_path / "hard")
    os.symlink("/etc/passwd", tmp_path / "out")
    with open(tmp_path / "sparse", "wb") as handle:
        handle.seek(8 * 1024 * 1024)
        handle.write(b"end")
    odd = os.path.join(os.fsencode(tmp_path), b"bad-\xff")
    with open(odd, "wb") as handle:
        handle.write(b"bytes")
    records = {r["path"]: r for r in manifest(str(tmp_path))}
    assert records["."]["type"] == "d"
    assert records["d/a file"]["links"] == records["hard"]["links"] == "d/a file"
    assert records["out"] == {**records["out"], "type": "l", "target": "/etc/passwd"}
    assert records["sparse"]["sparse"] is True and records["sparse"]["size"] == 8 * 1024 * 1024 + 3
    assert "bad-\udcff" in records
    assert len(records["d/a file"]["sha256"]) == 64


def test_differences_and_digest_tell_trees_apart(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("one")
    before = manifest(str(tmp_path))
    os.chmod(tmp_path / "f", 0o600)
    after = manifest(str(tmp_path))
    assert digest(before) != digest(after)
    assert any("mode" in line for line in differences(before, after))
    assert differences(after, after) == []


def test_a_link_to_the_tree_moved_while_it_is_read_gives_the_tree_it_named_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``current`` moves to the next snapshot while a pass lands: the walk reads one snapshot."""
    for name, files in (("one", ["a", "b", "gone"]), ("two", ["a", "b", "new"])):
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file).write_text(name)
    current = tmp_path / "current"
    current.symlink_to("one")
    walk = gitlab_manifest._walk

    def moving(root: bytes) -> Iterator[bytes]:
        for index, rel in enumerate(walk(root)):
            if index == 1:  # the next pass lands: current now names snapshot two
                (tmp_path / "next").symlink_to("two")
                os.replace(tmp_path / "next", current)
            yield rel

    monkeypatch.setattr(gitlab_manifest, "_walk", moving)
    read = manifest(str(current))
    monkeypatch.setattr(gitlab_manifest, "_walk", walk)
    assert read == manifest(str(tmp_path / "one"))
