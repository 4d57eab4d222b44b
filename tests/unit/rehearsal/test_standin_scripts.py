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


GIT_CGI = ROOTFS / "opt" / "gitlab" / "standin" / "cgi" / "git"

# A git whose `init` makes part of a repository and then dies with the CGI that ran it, as when
# GitLab is killed in the middle of creating a project; anything else is the real git.
DYING_GIT = """#!/bin/bash
if [ "${3:-}" = init ]; then
  mkdir -p "${@: -1}/objects"
  kill -KILL "$PPID"
  exit 1
fi
exec /usr/bin/git "$@"
"""


def test_a_push_killed_while_creating_its_repository_leaves_no_half_made_repository(
    tmp_path: Path,
) -> None:
    stubs, repositories = tmp_path / "bin", tmp_path / "repositories"
    stubs.mkdir()
    (stubs / "git").write_text(DYING_GIT)
    (stubs / "git").chmod(0o755)
    done = subprocess.run(
        ["bash", str(GIT_CGI)],
        env={
            "GITLAB_REPO": "dr/fresh",
            "GITLAB_GIT_PATH": "git-receive-pack",
            "GITLAB_REPOSITORIES": str(repositories),
            "GITLAB_STANDIN_PATH": f"{stubs}:/usr/bin:/bin",
        },
        capture_output=True,
        check=False,
    )
    assert done.returncode == -9, done
    # Whatever the kill left is not a repository: nothing named *.git exists.
    assert not (repositories / "dr" / "fresh.git").exists()
    assert [p.name for p in (repositories / "dr").iterdir() if p.name.endswith(".git")] == []
