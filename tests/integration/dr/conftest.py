"""The promotion tests' sandbox: one per test module (a minute each), paired, first pass done."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.rehearsal import sandbox
from ops.rehearsal.layout import SandboxLayout
from tests.integration.dr.sandbox_pair import STANDIN
from tests.integration.tasks_cli import inv


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sandbox, paired, with its first pass done; its settings file; removed at the end."""
    folder = tmp_path_factory.mktemp("sandbox")
    sandbox.up(folder, lambda _line: None, gitlab_image=STANDIN)
    env_file = SandboxLayout(folder.resolve()).env_file
    try:
        done = inv("pair", env_file=env_file)
        assert done.returncode == 0, done.stdout + done.stderr
        yield env_file
    finally:
        sandbox.down(folder, lambda _line: None)
