"""Fixtures of the rehearsal's integration tests: a sandbox's folder, a shared stand-in GitLab."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.rehearsal.standin_container import StandIn, standin
from tests.integration.tasks_cli import inv


@pytest.fixture
def sandbox_dir(tmp_path: Path) -> Iterator[Path]:
    """Where a test's sandbox lives; ``inv sandbox.down`` runs after the test, as a safety net."""
    where = tmp_path / "sandbox"
    yield where
    inv("sandbox.down", "--directory", str(where))


@pytest.fixture(scope="module")
def gitlab() -> Iterator[StandIn]:
    """One stand-in shared by the module's tests that leave it as they found it."""
    with standin() as side:
        yield side
