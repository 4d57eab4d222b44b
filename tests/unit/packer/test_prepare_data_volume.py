"""The boot helper that makes the EBS data volume ready (packer/files/prepare-data-volume.sh).

It formats disks, so it runs here for real, as root, on disks that are loop devices over sparse
files: mkfs.btrfs, blkid, mount, the btrfs subvolumes and the fstab it writes are all real.
Only the disk inventory of an imaginary EC2 instance is made up (lsblk's list of whole disks
with their models, and which one is the root disk), so that the script never sees a disk of
this machine, let alone formats one. Each test's label is its own, for ``blkid -L``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "packer" / "files" / "prepare-data-volume.sh"
EBS = "Amazon Elastic Block Store"
INSTANCE_STORE = "Amazon EC2 NVMe Instance Storage"
ROOT_DISK = "/dev/nvme0n1"  # in the inventory only: no such device here
MARK = "# gitlab-dr: the EBS data volume, formatted on first boot by gitlab-dr-data.service"
SYSTEMD = "nofail,x-systemd.requires=gitlab-dr-data.service,x-systemd.device-timeout=12min"
# The first boot's entry, as provision.sh writes it.
FIRST_BOOT = f"LABEL=gitlab-data /srv btrfs user_subvol_rm_allowed,noatime,{SYSTEMD} 0 0"

LSBLK = """#!/bin/sh
case "$1" in
  -dnpo) cat "$FAKE/disks" ;;  # NAME TYPE MODEL of each whole disk
  -no) echo nvme0n1 ;;         # the disk the root filesystem is on
  *) exec "$REAL_LSBLK" "$@" ;;
esac
"""


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _probe(device: str, tag: str) -> str:
    """A tag of what is on ``device`` (TYPE, LABEL, UUID), read from the device itself."""
    done = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", tag, device],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def _dos_partition_table(device: str) -> None:
    """One Linux partition in an MBR, as fdisk would write it (no sfdisk needed)."""
    entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little")
    entry += (4096).to_bytes(4, "little")
    with open(device, "r+b") as disk:
        disk.seek(446)
        disk.write(entry + bytes(48) + b"\x55\xaa")


@dataclass
class Instance:
    """An imaginary EC2 instance: its disks (loop devices), its fstab and its data mount."""

    root: Path
    label: str = field(default_factory=lambda: f"gdr{uuid.uuid4().hex[:8]}")
    disks: list[tuple[str, str]] = field(default_factory=list)

    @property
    def mount(self) -> Path:
        return self.root / "srv"

    @property
    def fstab(self) -> Path:
        return self.root / "fstab"

    def disk(self, model: str = EBS, holding: str = "", size: str = "512M") -> str:
        """A new blank disk (or one ``holding`` btrfs, ext4, swap or a partition table)."""
        image = self.root / "images" / f"disk{len(self.disks)}.img"
        _run("truncate", "-s", size, str(image))
        device = _run("losetup", "--find", "--show", str(image)).strip()
        self.disks.append((device, model))
        if holding == "btrfs":
            _run("mkfs.btrfs", "-q", "-L", self.label, device)
        elif holding == "ext4":
            _run("mkfs.ext4", "-q", "-L", self.label, device)
        elif holding == "other ext4":
            _run("mkfs.ext4", "-q", "-L", "someone-else", device)
        elif holding == "swap":
            _run("mkswap", device)
        elif holding == "partitions":
            _dos_partition_table(device)
        return device

    def run(self, **conf: str) -> tuple[int, str]:
        disks = [(ROOT_DISK, EBS), *self.disks]
        (self.root / "disks").write_text("".join(f"{d} disk {m}\n" for d, m in disks))
        settings = {
            "DATA_LABEL": self.label,
            "DATA_MOUNT": str(self.mount),
            "FSTAB": str(self.fstab),
            "WAIT_SECONDS": "0",
            **conf,
        }
        (self.root / "conf").write_text("".join(f"{k}='{v}'\n" for k, v in settings.items()))
        run = subprocess.run(
            ["bash", str(SCRIPT)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={
                "PATH": f"{self.root / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
                "FAKE": str(self.root),
                "REAL_LSBLK": str(shutil.which("lsblk")),
                "GITLAB_DR_DATA_CONF": str(self.root / "conf"),
            },
        )
        return run.returncode, run.stdout + run.stderr

    def mounted(self) -> tuple[str, str, str]:
        """What is mounted at the data mount: source, filesystem type, options."""
        out = subprocess.run(
            ["findmnt", "-rno", "SOURCE,FSTYPE,OPTIONS", "--mountpoint", str(self.mount)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return (out[0], out[1], out[2]) if len(out) == 3 else ("", "", "")

    def entries(self) -> list[list[str]]:
        """The fstab entries for the data mount."""
        lines = self.fstab.read_text().splitlines() if self.fstab.exists() else []
        return [
            f for f in (line.split() for line in lines) if len(f) > 1 and f[1] == str(self.mount)
        ]

    def unmount(self) -> None:
        """As a shutdown does."""
        while subprocess.run(["mountpoint", "-q", str(self.mount)], check=False).returncode == 0:
            _run("umount", str(self.mount))

    def remove(self) -> None:
        self.unmount()
        for device, _ in self.disks:
            subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    for sub in ("bin", "images"):
        (tmp_path / sub).mkdir()
    (tmp_path / "bin" / "lsblk").write_text(LSBLK)
    (tmp_path / "bin" / "lsblk").chmod(0o755)
    box = Instance(tmp_path)
    try:
        yield box
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            box.remove()


def _is_subvolume(path: Path) -> bool:
    return path.is_dir() and path.stat().st_ino == 256


def test_the_one_blank_ebs_disk_becomes_btrfs_mounted_by_uuid_with_its_subvolumes(
    instance: Instance,
) -> None:
    disk = instance.disk()
    instance.fstab.write_text("UUID=1234 / ext4 defaults 0 1\n")
    code, out = instance.run()
    assert code == 0, out
    assert f"formatting {disk} as btrfs labelled {instance.label}" in out
    assert (_probe(disk, "TYPE"), _probe(disk, "LABEL")) == ("btrfs", instance.label)
    uuid_ = _probe(disk, "UUID")
    entry = f"UUID={uuid_} {instance.mount} btrfs user_subvol_rm_allowed,noatime,{SYSTEMD} 0 0"
    assert instance.fstab.read_text().splitlines() == ["UUID=1234 / ext4 defaults 0 1", MARK, entry]
    source, fstype, options = instance.mounted()
    assert (source, fstype) == (disk, "btrfs")
    assert {"noatime", "user_subvol_rm_allowed"} <= set(options.split(",")), options
    for name in ("gitlab", "gitlab-sync"):
        assert _is_subvolume(instance.mount / name), name
    assert f"the data volume (btrfs, UUID {uuid_}) is mounted at {instance.mount}" in out


def test_the_first_boot_entry_by_label_is_replaced_by_the_uuid(instance: Instance) -> None:
    disk = instance.disk()
    first_boot = FIRST_BOOT.replace(
        "LABEL=gitlab-data /srv", f"LABEL={instance.label} {instance.mount}"
    )
    instance.fstab.write_text(f"{MARK}\n{first_boot}\n# a comment of the admin's\n")
    code, out = instance.run()
    assert code == 0, out
    assert instance.fstab.read_text().splitlines() == [
        "# a comment of the admin's",
        MARK,
        f"UUID={_probe(disk, 'UUID')} {instance.mount} btrfs "
        f"user_subvol_rm_allowed,noatime,{SYSTEMD} 0 0",
    ]


def test_every_boot_after_the_first_changes_nothing(instance: Instance) -> None:
    disk = instance.disk()
    code, out = instance.run()
    assert code == 0, out
    uuid_, fstab = _probe(disk, "UUID"), instance.fstab.read_text()
    (instance.mount / "gitlab" / "gitlab-secrets.json").write_text("{}")
    # Run again while mounted, then after a reboot (unmounted), as a boot would.
    for reboot in (False, True):
        if reboot:
            instance.unmount()
        code, again = instance.run()
        assert code == 0, again
        assert "formatting" not in again and "made the btrfs subvolume" not in again, again
        assert f"the data volume labelled {instance.label} is there ({disk})" in again
        assert instance.fstab.read_text() == fstab
        assert _probe(disk, "UUID") == uuid_
        assert instance.mounted()[:2] == (disk, "btrfs")
        assert (instance.mount / "gitlab" / "gitlab-secrets.json").read_text() == "{}"
        assert [line for line in again.splitlines() if "mounted" in line] == (
            [f"gitlab-dr-data: mounted {disk} at {instance.mount}"] if reboot else []
        ) + [
            f"gitlab-dr-data: the data volume (btrfs, UUID {uuid_}) is mounted at {instance.mount}"
        ]


def test_a_btrfs_volume_missing_a_subvolume_gets_it_and_keeps_the_rest(instance: Instance) -> None:
    disk = instance.disk(holding="btrfs")
    code, out = instance.run(DATA_SUBVOLUMES="gitlab")
    assert code == 0, out
    (instance.mount / "gitlab" / "kept").write_text("kept")
    (instance.mount / "gitlab-sync").mkdir()  # an empty plain folder where a subvolume belongs
    code, out = instance.run()
    assert code == 0, out
    assert out.count("made the btrfs subvolume") == 1, out
    assert _is_subvolume(instance.mount / "gitlab-sync")
    assert (instance.mount / "gitlab" / "kept").read_text() == "kept"
    assert instance.mounted()[0] == disk


def test_a_folder_with_files_where_a_subvolume_belongs_is_left_and_said(
    instance: Instance,
) -> None:
    instance.disk(holding="btrfs")
    code, out = instance.run(DATA_SUBVOLUMES="gitlab-sync")
    assert code == 0, out
    (instance.mount / "gitlab").mkdir()
    (instance.mount / "gitlab" / "data").write_text("GitLab's")
    code, out = instance.run()
    assert code == 0, out
    assert (
        f"{instance.mount / 'gitlab'} is a folder with files, not a btrfs subvolume: left as it "
        "is, and inv pair refuses until it is one"
    ) in out
    assert (instance.mount / "gitlab" / "data").read_text() == "GitLab's"
    assert not _is_subvolume(instance.mount / "gitlab")


def test_an_ext4_volume_is_left_as_it_is_and_mounted_for_the_fallback(instance: Instance) -> None:
    disk = instance.disk(holding="ext4")
    uuid_ = _probe(disk, "UUID")
    code, out = instance.run()
    assert code == 0, out
    assert "formatting" not in out
    assert f"{disk} holds ext4, not btrfs: left as it is, and the sync takes its fallback" in out
    assert (_probe(disk, "TYPE"), _probe(disk, "UUID")) == ("ext4", uuid_)
    assert instance.entries() == [
        [f"UUID={uuid_}", str(instance.mount), "ext4", f"defaults,noatime,{SYSTEMD}", "0", "2"]
    ]
    source, fstype, options = instance.mounted()
    assert (source, fstype) == (disk, "ext4") and "noatime" in options.split(",")
    assert sorted(p.name for p in instance.mount.iterdir()) == ["lost+found"]  # no subvolumes


def test_data_device_is_the_one_formatted_when_set(instance: Instance) -> None:
    instance.disk()
    chosen = instance.disk()
    code, out = instance.run(DATA_DEVICE=chosen)
    assert code == 0, out
    assert [_probe(d, "TYPE") for d, _ in instance.disks] == ["", "btrfs"]


def test_a_data_device_holding_anything_else_is_not_touched(instance: Instance) -> None:
    other = instance.disk(holding="other ext4")
    code, out = instance.run(DATA_DEVICE=other)
    assert code == 1
    assert f"{other} holds something that is not labelled {instance.label}; not touching it" in out
    assert _probe(other, "LABEL") == "someone-else"
    assert not instance.fstab.exists()


def test_blank_instance_storage_is_never_taken_for_the_data_volume(instance: Instance) -> None:
    ephemeral = instance.disk(INSTANCE_STORE)
    ebs = instance.disk()
    code, out = instance.run()
    assert code == 0, out
    assert (_probe(ephemeral, "TYPE"), _probe(ebs, "TYPE")) == ("", "btrfs")


def test_a_disk_holding_anything_is_never_formatted(instance: Instance) -> None:
    held = {
        instance.disk(holding="other ext4"): "ext4",
        instance.disk(holding="swap"): "swap",
    }
    tabled = instance.disk(holding="partitions")
    code, out = instance.run()
    assert code == 1
    assert f"no data volume after 0s (label {instance.label})" in out
    assert {d: _probe(d, "TYPE") for d in held} == held
    assert _probe(tabled, "PTTYPE") == "dos"
    assert not instance.fstab.exists() and not instance.mount.exists()


def test_two_blank_disks_are_a_refusal_that_asks_for_data_device(instance: Instance) -> None:
    one, two = instance.disk(), instance.disk()
    code, out = instance.run()
    assert code == 1
    assert f"several blank disks ({one} {two}); set DATA_DEVICE" in out
    assert (_probe(one, "TYPE"), _probe(two, "TYPE")) == ("", "")


def test_something_else_mounted_at_the_data_mount_is_not_mounted_over(instance: Instance) -> None:
    disk = instance.disk(holding="btrfs")
    instance.mount.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=1m", "placeholder", str(instance.mount))
    code, out = instance.run()
    assert code == 1
    assert (
        f"{instance.mount} holds placeholder, not the data volume {disk}; not mounting over it"
        in out
    )
    assert instance.mounted()[:2] == ("placeholder", "tmpfs")
