"""The sandbox instances' filesystems: up failing half-way, down meeting one in use, and the
sandbox on plain folders (``SANDBOX_FILESYSTEM=plain``), all run as commands."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ops.rehearsal.layout import SandboxLayout
from tests.integration.rehearsal.leftovers import (
    Footprint,
    assert_no_mount_or_loop_device,
    processes_mentioning,
)
from tests.integration.tasks_cli import inv

pytestmark = pytest.mark.integration

STANDIN = os.environ.get("STANDIN_IMAGE", "gitlab-dr/gitlab-standin:local")


def test_sandbox_up_failing_half_way_removes_what_it_made(
    sandbox_dir: Path, tmp_path: Path
) -> None:
    # A broken ssh client: the check that both hosts' engines answer fails, after the
    # filesystems, moto, the launch and the host containers were made.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(
        "#!/bin/sh\necho 'ssh: connect to host 127.0.0.1: Connection refused' >&2\nexit 255\n"
    )
    (bin_dir / "ssh").chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    failed = inv(
        "sandbox.up",
        "--directory",
        str(sandbox_dir),
        "--gitlab-image",
        STANDIN,
        extra_env={"PATH": path},
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert "data: instance b on btrfs in" in failed.stdout, failed.stdout
    assert "removing what was started" in failed.stdout, failed.stdout
    assert "could not remove" not in failed.stdout, failed.stdout
    assert not sandbox_dir.exists()
    assert_no_mount_or_loop_device(sandbox_dir)
    assert Footprint.of(sandbox_dir) == Footprint()
    assert not processes_mentioning(str(sandbox_dir))


def test_sandbox_down_names_a_filesystem_in_use_keeps_its_folder_and_removes_it_later(
    sandbox_dir: Path,
) -> None:
    fs = SandboxLayout(sandbox_dir.resolve()).filesystem("a")
    fs.make("300M", ("gitlab", "gitlab-sync"))
    # Something still working in instance a's GITLAB_HOME: the filesystem cannot be unmounted.
    holder = subprocess.Popen(["sleep", "600"], cwd=fs.mountpoint / "gitlab")
    try:
        held = inv("sandbox.down", "--directory", str(sandbox_dir))
        assert held.returncode == 1, held.stdout + held.stderr
        left = [line for line in held.stdout.splitlines() if "could not remove" in line]
        assert left == [
            f"sandbox: could not remove instance a's filesystem: {fs.mountpoint} is still "
            f"mounted: umount: {fs.mountpoint}: target is busy.",
            f"sandbox: could not remove {sandbox_dir.resolve()}: kept while a filesystem in it "
            "is left",
        ], held.stdout
        assert held.stderr.strip().splitlines() == [
            f"error: sandbox.down left 2 thing(s) of the sandbox in {sandbox_dir.resolve()} "
            "(each named above); free them and run it again"
        ]
        assert fs.mounted() and fs.image.is_file() and fs.loop_devices()
    finally:
        holder.kill()
        holder.wait()
    freed = inv("sandbox.down", "--directory", str(sandbox_dir))
    assert freed.returncode == 0, freed.stdout + freed.stderr
    assert f"unmounted and removed instance a's filesystem ({fs.image})" in freed.stdout
    assert not sandbox_dir.exists()
    assert_no_mount_or_loop_device(sandbox_dir)


def test_sandbox_on_plain_folders_makes_no_filesystem(sandbox_dir: Path) -> None:
    plain = {"SANDBOX_FILESYSTEM": "plain"}
    up = inv(
        "sandbox.up",
        "--directory",
        str(sandbox_dir),
        "--gitlab-image",
        STANDIN,
        "--json",
        extra_env=plain,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert "sandbox: data: plain folders (SANDBOX_FILESYSTEM=plain)" in up.stderr, up.stderr
    env_file = Path(json.loads(up.stdout)["env_file"])
    assert "SANDBOX_FILESYSTEM='plain'" in env_file.read_text()
    assert_no_mount_or_loop_device(sandbox_dir)
    down = inv("sandbox.down", "--directory", str(sandbox_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert "filesystem" not in down.stdout
    assert not sandbox_dir.exists()


def test_sandbox_up_with_a_bad_filesystem_is_one_line_and_makes_nothing(
    sandbox_dir: Path,
) -> None:
    failed = inv(
        "sandbox.up", "--directory", str(sandbox_dir), extra_env={"SANDBOX_FILESYSTEM": "zfs"}
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        "error: SANDBOX_FILESYSTEM: expected btrfs or plain, got 'zfs'"
    ]
    assert not sandbox_dir.exists()
