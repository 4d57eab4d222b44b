"""The first-boot helper that formats the EBS data volume (packer/files/prepare-data-volume.sh).

It formats disks, so its choices are tested one by one: the block-device tools it calls
(lsblk, blkid, findmnt, mkfs.ext4, udevadm) are replaced by small scripts describing the disks
of an imaginary EC2 instance. No real device is touched.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "packer" / "files" / "prepare-data-volume.sh"
EBS = "Amazon Elastic Block Store"
INSTANCE_STORE = "Amazon EC2 NVMe Instance Storage"

FAKES = {
    # lsblk -dnpo NAME,TYPE,MODEL | lsblk -nro NAME DEV | lsblk -no PKNAME SOURCE
    "lsblk": """#!/bin/sh
case "$1" in
  -dnpo) cat "$FAKE/disks" ;;
  -nro) name=$(basename "$3"); echo "$name"; cat "$FAKE/parts/$name" 2>/dev/null ;;
  -no) echo nvme0n1 ;;
esac
""",
    # blkid -L LABEL (0: found) | blkid -p DEV (0: a signature, 2: nothing)
    "blkid": """#!/bin/sh
case "$1" in
  -L) [ -e "$FAKE/labelled" ] && exit 0; exit 2 ;;
  -p) [ -e "$FAKE/signed/$(basename "$2")" ] && exit 0; exit 2 ;;
esac
""",
    "findmnt": "#!/bin/sh\necho /dev/nvme0n1p1\n",
    "mkfs.ext4": """#!/bin/sh
echo "$*" >>"$FAKE/mkfs.log"
for last; do :; done
touch "$FAKE/signed/$(basename "$last")" "$FAKE/labelled"
""",
    "udevadm": "#!/bin/sh\nexit 0\n",
}


@dataclass
class Instance:
    """The disks of an imaginary instance, and a way to run the helper on it."""

    root: Path
    disks: list[tuple[str, str]] = field(default_factory=list)

    def disk(self, name: str, model: str = EBS, *, signed: bool = False, parts: int = 0) -> None:
        self.disks.append((name, model))
        if signed:
            (self.root / "signed" / name).touch()
        if parts:
            (self.root / "parts" / name).write_text(
                "".join(f"{name}p{i}\n" for i in range(1, parts + 1))
            )

    def run(self, **conf: str) -> tuple[int, str, list[str]]:
        (self.root / "disks").write_text(
            "".join(f"/dev/{name} disk {model}\n" for name, model in self.disks)
        )
        settings = {"DATA_LABEL": "gitlab-data", "WAIT_SECONDS": "0", **conf}
        (self.root / "conf").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        run = subprocess.run(
            ["bash", str(SCRIPT)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            env={
                "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
                "FAKE": str(self.root),
                "GITLAB_DR_DATA_CONF": str(self.root / "conf"),
            },
        )
        log = self.root / "mkfs.log"
        formatted = log.read_text().splitlines() if log.exists() else []
        return run.returncode, run.stdout + run.stderr, formatted


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    for sub in ("bin", "signed", "parts"):
        (tmp_path / sub).mkdir()
    for name, body in FAKES.items():
        path = tmp_path / "bin" / name
        path.write_text(body)
        path.chmod(0o755)
    box = Instance(tmp_path)
    box.disk("nvme0n1", signed=True, parts=1)  # the root disk
    return box


def test_a_volume_that_already_has_its_label_is_left_alone(instance: Instance) -> None:
    (instance.root / "labelled").touch()
    instance.disk("nvme1n1")
    code, out, formatted = instance.run()
    assert (code, formatted) == (0, [])
    assert "the data volume labelled gitlab-data is there" in out


def test_the_one_blank_ebs_disk_is_formatted_with_the_label(instance: Instance) -> None:
    instance.disk("nvme1n1")
    code, out, formatted = instance.run()
    assert code == 0, out
    assert formatted == ["-q -L gitlab-data -m 1 /dev/nvme1n1"]


def test_blank_instance_storage_is_never_taken_for_the_data_volume(instance: Instance) -> None:
    instance.disk("nvme1n1", INSTANCE_STORE)
    instance.disk("nvme2n1")
    code, out, formatted = instance.run()
    assert code == 0, out
    assert formatted == ["-q -L gitlab-data -m 1 /dev/nvme2n1"]


def test_a_disk_holding_anything_is_never_formatted(instance: Instance) -> None:
    instance.disk("nvme1n1", signed=True)
    instance.disk("nvme2n1", parts=2)
    code, out, formatted = instance.run()
    assert (code, formatted) == (1, [])
    assert "no data volume after 0s" in out


def test_two_blank_disks_are_a_refusal_that_asks_for_data_device(instance: Instance) -> None:
    instance.disk("nvme1n1")
    instance.disk("nvme2n1")
    code, out, formatted = instance.run()
    assert (code, formatted) == (1, [])
    assert "several blank disks (/dev/nvme1n1 /dev/nvme2n1); set DATA_DEVICE" in out


def test_no_volume_attached_in_time_is_an_error_naming_the_label(instance: Instance) -> None:
    code, out, formatted = instance.run(DATA_LABEL="gl-data")
    assert (code, formatted) == (1, [])
    assert "no data volume after 0s (label gl-data)" in out
