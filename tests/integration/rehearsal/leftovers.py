"""What a sandbox may leave behind, looked for the way an operator would: its processes, its
containers, networks and volumes on the engine, its mounts and its loop devices."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import docker

from gitlab_sync.layout import mount_of, parse_mountinfo
from ops.hosts.engine import labelled
from ops.rehearsal.layout import LABEL, NAMES, SandboxLayout
from ops.rehearsal.local import volumes_of


def processes_mentioning(text: str) -> list[str]:
    """The processes whose command line holds ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


@dataclass
class Footprint:
    """A sandbox's containers, networks and volumes (named, and anonymous ones its containers
    have) on the engine, found by its labels."""

    containers: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    volumes: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, directory: Path) -> Footprint:
        client, layout, found = docker.from_env(), SandboxLayout(directory.resolve()), cls()
        labels = [f"{LABEL}={layout.root}"]
        labels += [f"com.docker.compose.project={layout.stack(name)}" for name in NAMES]
        for label in labels:
            by_label = {"label": label}
            for container in labelled(client, label):
                found.containers.add(str(container.name))
                found.volumes.update(volumes_of(container))
            found.networks.update(str(n.name) for n in client.networks.list(filters=by_label))
            found.volumes.update(str(v.name) for v in client.volumes.list(filters=by_label))
        return found


def mounts_under(directory: Path) -> list[str]:
    """The mount points in ``directory`` (this process's view, which is the engine's too)."""
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    return [m.point for m in mounts if m.point.startswith(f"{directory.resolve()}/")]


def loop_devices_of(directory: Path) -> list[str]:
    """Loop devices backed by a file in ``directory``, deleted files included (which
    ``losetup -j`` can no longer name)."""
    listed = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in listed.splitlines() if f" {directory.resolve()}/" in f" {line}"]


def assert_instances_on_btrfs(directory: Path, env_file: Path) -> None:
    """Each instance's GITLAB_HOME and SYNC_HOME: subvolumes of one btrfs of its own, mounted
    from its loop file with user_subvol_rm_allowed, as the AMI lays out a data volume."""
    layout = SandboxLayout(directory.resolve())
    settings = env_file.read_text()
    assert "SANDBOX_FILESYSTEM='btrfs'" in settings
    devices = set()
    for name in NAMES:
        fs = layout.filesystem(name)
        assert fs.loop_devices(), f"no loop device for {fs.image}"
        assert fs.image.stat().st_blocks * 512 < 1 << 30, f"{fs.image} is not sparse"
        for sub in ("gitlab", "gitlab-sync"):
            home = fs.mountpoint / sub
            assert f"={home}" in settings, f"{home} is not in {env_file}"
            mount = mount_of(home)
            assert mount is not None and mount.point == str(fs.mountpoint), mount
            assert mount.fstype == "btrfs" and "user_subvol_rm_allowed" in mount.options, mount
            assert "noatime" in _mount_options(fs.mountpoint).split(","), fs.mountpoint
            assert home.stat().st_ino == 256, f"{home} is not a btrfs subvolume"
            devices.add(mount.device)
    assert len(devices) == 2, devices  # a filesystem for each instance


def _mount_options(point: Path) -> str:
    """The per-mount options of ``point`` (noatime is one), as findmnt says them."""
    return subprocess.run(
        ["findmnt", "-rno", "OPTIONS", "--mountpoint", str(point)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def assert_no_mount_or_loop_device(directory: Path) -> None:
    assert not mounts_under(directory), mounts_under(directory)
    assert not loop_devices_of(directory), loop_devices_of(directory)


def engine_volumes() -> set[str]:
    """``docker volume ls``: every volume on the engine now."""
    return {str(v.name) for v in docker.from_env().volumes.list()}


class VolumesMounted:
    """Every volume that a sandbox's containers mount while this watch is open (the stacks'
    named ones, the anonymous ones of one-off containers), from the engine's event stream.

    Other work on the engine meanwhile (another test worker's sandbox) makes and drops volumes
    of its own: only the events of containers with this sandbox's project labels count.
    """

    def __init__(self, directory: Path) -> None:
        layout = SandboxLayout(directory.resolve())
        self._projects = {layout.stack(name) for name in NAMES}
        self._stream = docker.from_env().events(
            decode=True, filters={"type": ["container", "volume"]}
        )
        self._ours: set[str] = set()
        self._mounts: list[tuple[str, str]] = []  # (container id, volume name)
        self._thread = threading.Thread(target=self._read, name="volume-events", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                actor = event.get("Actor") or {}
                attributes = actor.get("Attributes") or {}
                if event.get("Type") == "container" and event.get("Action") == "create":
                    if attributes.get("com.docker.compose.project") in self._projects:
                        self._ours.add(str(actor.get("ID")))
                elif event.get("Type") == "volume" and event.get("Action") == "mount":
                    self._mounts.append((str(attributes.get("container")), str(actor.get("ID"))))
        except Exception:  # noqa: S110 - the stream ends with an error when closed
            pass

    def close(self) -> set[str]:
        """Stop watching; the volumes this sandbox's containers mounted."""
        self._stream.close()
        self._thread.join(timeout=10)
        return {volume for container, volume in self._mounts if container in self._ours}
