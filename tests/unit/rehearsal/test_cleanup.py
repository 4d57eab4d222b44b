"""Removing the sandbox's things: every removal is tried, and what is left is said."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import docker
import docker.errors

from ops.rehearsal import volumes
from ops.rehearsal.layout import SUBVOLUMES, SandboxLayout
from ops.rehearsal.local import Cleanup

PROJECT = "gdrsb-1234abcd-a"


class Thing:
    """A container, network or volume whose removal does what it is told."""

    def __init__(self, name: str, fails: Exception | None = None, mounts: list[Any] | None = None):
        self.name, self.fails = name, fails
        self.attrs = {"Mounts": mounts or []}
        self.removed: list[dict[str, Any]] = []

    def remove(self, **options: Any) -> None:
        if self.fails is not None:
            raise self.fails
        self.removed.append(options)


class Listing:
    def __init__(self, things: list[Thing]) -> None:
        self.things = things

    def list(self, **_filters: Any) -> list[Thing]:
        return self.things

    def get(self, name: str) -> Thing:
        found = next((t for t in self.things if t.name == name), None)
        if found is None:
            raise docker.errors.NotFound(f"no such volume: {name}")
        return found


class Engine:
    def __init__(self, containers: list[Thing], networks: list[Thing], volumes: list[Thing]):
        self.containers = Listing(containers)
        self.networks = Listing(networks)
        self.volumes = Listing(volumes)


def _engine(engine: Engine) -> docker.DockerClient:
    return cast(docker.DockerClient, cast(Any, engine))


def test_every_removal_is_tried_and_each_failure_is_one_line() -> None:
    busy = docker.errors.APIError("409 Conflict", explanation="network has active endpoints")
    gitlab = Thing(f"{PROJECT}-gitlab-1")
    sidecar = Thing(f"{PROJECT}-gitlab-rsync-1", docker.errors.APIError("500", explanation="io"))
    network = Thing(f"{PROJECT}_default", busy)
    volume = Thing(f"{PROJECT}_data")
    lines: list[str] = []
    cleanup = Cleanup(lines.append)
    cleanup.project(_engine(Engine([gitlab, sidecar], [network], [volume])), PROJECT)
    assert cleanup.left == [
        f"could not remove container {PROJECT}-gitlab-rsync-1: io",
        f"could not remove network {PROJECT}_default: network has active endpoints",
    ]
    assert cleanup.removed == [
        f"removed container {PROJECT}-gitlab-1",
        f"removed volume {PROJECT}_data",
    ]
    assert lines == [
        cleanup.removed[0],
        cleanup.left[0],
        cleanup.left[1],
        cleanup.removed[1],
    ]


def test_containers_go_with_their_anonymous_volumes_and_the_rest_are_removed_after() -> None:
    mounts = [
        {"Type": "volume", "Name": "3f1c0ffee"},  # VOLUME /state: anonymous
        {"Type": "volume", "Name": "kept-by-name"},  # a named one, left by v=True
        {"Type": "bind", "Source": "/var/run/docker.sock"},
    ]
    sidecar = Thing("sidecar", mounts=mounts)
    named = Thing("kept-by-name")
    cleanup = Cleanup()
    cleanup.project(_engine(Engine([sidecar], [], [named])), PROJECT)
    assert sidecar.removed == [{"force": True, "v": True}]
    assert named.removed == [{"force": True}]  # once, though found twice
    assert cleanup.left == []
    assert cleanup.removed == ["removed container sidecar", "removed volume kept-by-name"]


def test_what_is_already_gone_counts_as_removed() -> None:
    gone = Thing("gone", docker.errors.NotFound("no such container"))
    cleanup = Cleanup()
    cleanup.project(_engine(Engine([gone], [], [])), PROJECT)
    assert cleanup.left == []
    assert cleanup.removed == ["removed container gone"]


def test_the_instances_filesystems_are_found_by_the_folder_alone_and_removed(
    tmp_path: Path,
) -> None:
    layout = SandboxLayout(tmp_path / "sandbox")
    assert len(volumes.unmounted(layout, "btrfs")) == 2
    assert volumes.unmounted(layout, "plain") == []
    fs = layout.filesystem("b")  # a real btrfs in a loop file; no record names it
    fs.make("300M", SUBVOLUMES)
    try:
        assert volumes.unmounted(layout, "btrfs") == [
            f"instance a's filesystem ({layout.filesystem('a').image}) is not mounted"
        ]
        cleanup = Cleanup()
        assert volumes.remove(layout, cleanup)
        assert cleanup.removed == [f"unmounted and removed instance b's filesystem ({fs.image})"]
        assert cleanup.left == []
        assert not fs.mounted() and not fs.image.exists() and not fs.loop_devices()
        again = Cleanup()
        assert volumes.remove(layout, again)
        assert again.removed == again.left == []
    finally:
        fs.remove()
