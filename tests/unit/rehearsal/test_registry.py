"""The registry's link check on a folder, and what a tag must name after an instant (no Docker).

A registry's storage is laid out here as distribution 2.8 lays it out on a push (blobs under
``blobs/sha256/<2 hex>/<hex>/data``, a repository's tag, revision and layer links), from a real
OCI image made by :func:`ops.rehearsal.registry.make_image`; then it is broken on purpose.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from ops.errors import SettingError
from ops.rehearsal import registry as reg
from ops.rehearsal.forwarder import choose, parse_also
from tests.unit.pairs import SANDBOX, A, B, pair, settings_of


def _data(storage: Path, digest: str) -> Path:
    hex_ = digest.removeprefix("sha256:")
    return storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def stored(storage: Path, repo: str, tag: str, seed: int) -> dict[str, str]:
    """Push, as the registry stores it, a random image as ``repo:tag``; its digests by role."""
    layout = storage.parent / f"oci-{seed}"
    manifest = reg.make_image(layout, random.Random(seed))  # noqa: S311
    blobs = layout / "blobs" / "sha256"
    body = json.loads((blobs / manifest[7:]).read_bytes())
    digests = {"manifest": manifest, "config": body["config"]["digest"]}
    digests |= {f"layer{i}": layer["digest"] for i, layer in enumerate(body["layers"])}
    repository = storage / "docker/registry/v2/repositories" / repo
    for role, digest in digests.items():
        _data(storage, digest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blobs / digest[7:], _data(storage, digest))
        if role != "manifest":
            _link(repository / "_layers/sha256" / digest[7:], digest)
    _link(repository / "_manifests/revisions/sha256" / manifest[7:], manifest)
    _link(repository / "_manifests/tags" / tag / "current", manifest)
    _link(repository / "_manifests/tags" / tag / "index/sha256" / manifest[7:], manifest)
    return digests


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "registry"


def test_a_whole_registry_passes_with_every_tag_and_its_digest(storage: Path) -> None:
    app = stored(storage, "drill/app", "v1", 1)
    tool = stored(storage, "drill/group/tool", "v2", 2)
    links = reg.links_in_directory(storage)
    assert links.ok, links.dangling
    assert links.tags == {"drill/app:v1": app["manifest"], "drill/group/tool:v2": tool["manifest"]}
    assert links.holds("drill/app", app["manifest"]) == "ok"
    assert links.holds("drill/app", tool["manifest"]) == "missing"  # another repository's
    assert reg.check_links(links).ok
    assert reg.check_links(links).detail.endswith("2 tags, 0 dangling")


def test_an_empty_or_missing_storage_has_nothing_dangling(storage: Path) -> None:
    assert reg.links_in_directory(storage) == reg.Links({}, 0, (), frozenset())
    (storage / "docker/registry/v2/repositories").mkdir(parents=True)
    assert reg.links_in_directory(storage).ok


def test_a_layer_whose_blob_is_gone_fails_the_link_check(storage: Path) -> None:
    digests = stored(storage, "drill/app", "v1", 3)
    _data(storage, digests["layer0"]).unlink()
    links = reg.links_in_directory(storage)
    check = reg.check_links(links)
    assert not check.ok
    assert set(links.dangling) == {
        f"layer drill/app {digests['layer0']}: no-blob",
        f"ref drill/app {digests['manifest']} {digests['layer0']}: no-blob",
    }
    assert check.detail.startswith("2 dangling of ")
    assert links.holds("drill/app", digests["manifest"]) == "incomplete"


def test_a_tag_whose_manifest_blob_is_gone_fails(storage: Path) -> None:
    gone = stored(storage, "drill/app", "v1", 4)
    _data(storage, gone["manifest"]).unlink()
    dangling = set(reg.links_in_directory(storage).dangling)
    assert f"tag drill/app v1 {gone['manifest']}: no-blob" in dangling
    assert f"revision drill/app {gone['manifest']}: no-blob" in dangling


def _delete_under_way(storage: Path, digest: str) -> None:
    """The registry's first step of deleting ``digest`` (its revision link), not its second
    (the tags that name it)."""
    revisions = storage / "docker/registry/v2/repositories/drill/app/_manifests/revisions/sha256"
    shutil.rmtree(revisions / digest[7:])


def test_a_tag_caught_inside_its_delete_is_a_delete_under_way_not_a_dangling_link(
    storage: Path,
) -> None:
    kept = stored(storage, "drill/app", "v1", 4)
    deleting = stored(storage, "drill/app", "v2", 5)
    _delete_under_way(storage, deleting["manifest"])
    links = reg.links_in_directory(storage)
    assert links.ok, links.dangling
    assert links.deleting == ("drill/app:v2",)
    assert links.tags == {"drill/app:v1": kept["manifest"]}  # the registry serves v2 as unknown
    assert links.holds("drill/app", deleting["manifest"]) == "missing"
    assert reg.check_links(links).detail.endswith("0 dangling, 1 tag delete(s) under way")


def test_a_tag_inside_a_delete_nobody_tried_is_lost(storage: Path) -> None:
    digests = stored(storage, "drill/app", "v1", 4)
    _delete_under_way(storage, digests["manifest"])
    links = reg.links_in_directory(storage)
    pushed = reg.Event("push", "drill/app", "v1", digests["manifest"], 10.0)
    tried = reg.Event("delete", "drill/app", "v1", digests["manifest"], 11.0, acked=False)
    assert reg.check_tags(links, reg.expected_tags([pushed, tried], before=12.0)).ok
    check = reg.check_tags(links, reg.expected_tags([pushed], before=12.0))
    assert not check.ok
    assert "drill/app:v1 lost" in check.detail


def test_a_manifest_naming_a_blob_the_repository_does_not_link_fails(storage: Path) -> None:
    digests = stored(storage, "drill/app", "v1", 6)
    layers = storage / "docker/registry/v2/repositories/drill/app/_layers/sha256"
    shutil.rmtree(layers / digests["config"][7:])
    assert reg.links_in_directory(storage).dangling == (
        f"ref drill/app {digests['manifest']} {digests['config']}: no-link",
    )


def test_a_link_that_holds_no_digest_is_reported(storage: Path) -> None:
    stored(storage, "drill/app", "v1", 7)
    current = storage / "docker/registry/v2/repositories/drill/app/_manifests/tags/v1/current"
    (current / "link").write_text("garbage")
    assert reg.links_in_directory(storage).dangling == (
        f"unreadable link {'drill/app'}/_manifests/tags/v1/current/link",
    )


def test_the_link_check_is_the_same_script_a_container_runs() -> None:
    done = subprocess.run(["bash", "-n", "-c", reg.LINK_SCRIPT], check=False)
    assert done.returncode == 0
    with pytest.raises(reg.RegistryError, match="the link check said"):
        reg.parse_links("blob what\n")


def _e(kind: str, tag: str, digest: str, at: float, acked: bool = True) -> reg.Event:
    return reg.Event(kind, "drill/app", tag, digest, at, acked)


def test_a_tag_must_name_its_last_write_acknowledged_before_the_instant() -> None:
    events = [
        _e("push", "v1", "sha256:a", 1.0, acked=False),
        _e("push", "v1", "sha256:a", 2.0),
        _e("push", "v1", "sha256:b", 3.0, acked=False),
        _e("push", "v1", "sha256:b", 4.0),
        _e("push", "v2", "sha256:c", 5.0),  # after the instant: not expected
    ]
    expected = reg.expected_tags(events, before=3.5)
    assert set(expected) == {"drill/app:v1"}
    v1 = expected["drill/app:v1"]
    assert v1.digest == "sha256:a"
    assert reg.tag_verdict(v1, "sha256:a") == "ok"
    assert reg.tag_verdict(v1, "sha256:b") == "newer"  # pushed again after the instant
    assert reg.tag_verdict(v1, None) == "lost"
    assert reg.tag_verdict(v1, "sha256:z") == "lost"


def test_a_tag_deleted_before_the_instant_must_stay_deleted() -> None:
    events = [
        _e("push", "v1", "sha256:a", 1.0),
        _e("delete", "v1", "sha256:a", 2.0, acked=False),
        _e("delete", "v1", "sha256:a", 2.5),
    ]
    v1 = reg.expected_tags(events, before=3.0)["drill/app:v1"]
    assert v1.digest is None
    assert reg.tag_verdict(v1, None) == "ok"
    assert reg.tag_verdict(v1, "sha256:a") == "undeleted"
    # a delete tried but never acknowledged before the instant: either state will do
    tried = reg.expected_tags(events[:2], before=3.0)["drill/app:v1"]
    assert reg.tag_verdict(tried, None) == "newer"
    assert reg.tag_verdict(tried, "sha256:a") == "ok"


def test_check_tags_names_the_lost_tag() -> None:
    expected = reg.expected_tags([_e("push", "v1", "sha256:a", 1.0)], before=2.0)
    check = reg.check_tags(reg.Links({}, 0, ()), expected)
    assert not check.ok
    assert "drill/app:v1 lost" in check.detail
    assert reg.check_tags(reg.Links({"drill/app:v1": "sha256:a"}, 3, ()), expected).ok


def test_the_forwarder_sends_registry_clients_to_the_holders_registry_port() -> None:
    overrides = f" {A}:GITLAB_REGISTRY_PORT=45001 {B}:GITLAB_REGISTRY_PORT=45002"
    settings = settings_of(
        **{**SANDBOX, "INSTANCE_OVERRIDES": SANDBOX["INSTANCE_OVERRIDES"] + overrides}
    )
    assert choose(settings, pair(master=A, slave=B, holder=A), "registry").port == 45001
    assert choose(settings, pair(master=B, slave=A, holder=B), "registry").port == 45002
    assert parse_also(["registry=127.0.0.1:5999"]) == [("registry", "127.0.0.1", 5999)]
    with pytest.raises(SettingError, match="expected SERVICE=HOST:PORT"):
        parse_also(["registry:5999"])


def test_the_drill_check_fails_when_no_tag_was_acknowledged_at_all() -> None:
    check = reg.check_promoted("127.0.0.1:1", None, {}, ["skopeo copy ...: connection refused"])  # type: ignore[arg-type]
    assert not check.ok
    assert check.detail == (
        "no tag was acknowledged before the snapshot: skopeo copy ...: connection refused"
    )
