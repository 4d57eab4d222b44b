"""The stand-in image's shell scripts are shellcheck clean.

They keep Omnibus's names (gitlab-ctl, wrapper, run, ...), without a .sh suffix, so they are
found by their shebang.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOTFS = Path(__file__).resolve().parents[3] / "images" / "gitlab-standin" / "rootfs"
SHEBANGS = (b"#!/bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash")


def stand_in_scripts() -> list[Path]:
    scripts = []
    for path in sorted(ROOTFS.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                first = handle.readline()
            if first.startswith(SHEBANGS) or path.suffix == ".sh":
                scripts.append(path)
    return scripts


def test_every_stand_in_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck is missing: make host-deps installs it"
    scripts = stand_in_scripts()
    names = {path.name for path in scripts}
    assert {"wrapper", "gitlab-ctl", "gitlab-psql", "reconfigure", "run", "lib.sh"} <= names
    done = subprocess.run(
        [shellcheck, "--external-sources", *map(str, scripts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_stand_in_script_is_executable() -> None:
    for path in stand_in_scripts():
        if path.suffix != ".sh":
            assert path.stat().st_mode & 0o111, f"{path} is not executable"
