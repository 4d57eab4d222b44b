"""A restore finishes the registry deletes its snapshot caught half done, in the promoted copy
only: a tag whose manifest's revision link is gone is removed there, as the registry's delete
would have; every other tag, link and blob stays, and the snapshot is not written."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from gitlab_sync import registry_deletes
from gitlab_sync.restore import restore
from gitlab_sync.retention import Tiers
from gitlab_sync.snapshots import Area

V2 = Path(registry_deletes.REPOSITORIES.lstrip("/")).parent
KEPT, HALF = "a" * 64, "b" * 64


def _registry(home: Path) -> Path:
    """A registry with repository group/app: tag ``kept`` and tag ``half`` (its manifest's
    revision link removed, as a delete's first step does), and a layer link."""
    repo = home / V2 / "repositories" / "group" / "app"
    for tag, digest in (("kept", KEPT), ("half", HALF)):
        link = repo / "_manifests" / "tags" / tag / "current" / "link"
        link.parent.mkdir(parents=True)
        link.write_text(f"sha256:{digest}")
        blob = home / V2 / "blobs" / "sha256" / digest[:2] / digest / "data"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_text("{}")
    revision = repo / "_manifests" / "revisions" / "sha256" / KEPT / "link"
    revision.parent.mkdir(parents=True)
    revision.write_text(f"sha256:{KEPT}")
    layer = repo / "_layers" / "sha256" / ("c" * 64) / "link"
    layer.parent.mkdir(parents=True)
    layer.write_text("sha256:" + "c" * 64)
    return repo


def test_only_a_tag_whose_revision_link_is_gone_is_found_and_removed(tmp_path: Path) -> None:
    repo = _registry(tmp_path)
    assert [name for name, _ in registry_deletes.half_deleted(tmp_path)] == ["group/app:half"]
    assert registry_deletes.finish(tmp_path) == ["group/app:half"]
    assert sorted(p.name for p in (repo / "_manifests" / "tags").iterdir()) == ["kept"]
    assert (repo / "_layers").is_dir() and len(list((tmp_path / V2 / "blobs").rglob("data"))) == 2
    assert registry_deletes.finish(tmp_path) == []  # nothing more to finish
    assert registry_deletes.finish(tmp_path / "no-registry") == []


def test_a_restore_finishes_them_in_the_copy_and_leaves_the_snapshot_as_it_was(
    tmp_path: Path,
) -> None:
    area = Area(tmp_path / "sync")
    area.begin("p1", 1, dt.datetime(2026, 12, 4, 3, 0, tzinfo=dt.UTC))
    _registry(area.incoming)
    area.mark("p1", "received")
    area.commit("p1", Tiers(every=1e9), extra={})
    record = restore(area, tmp_path / "gitlab")
    assert record["registry_deletes_finished"] == ["group/app:half"]
    tags = V2 / "repositories" / "group" / "app" / "_manifests" / "tags"
    assert sorted(p.name for p in (tmp_path / "gitlab" / tags).iterdir()) == ["kept"]
    assert sorted(p.name for p in (area.current / tags).iterdir()) == ["half", "kept"]
