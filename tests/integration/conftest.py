"""The check that an integration run leaves nothing of its own on the Docker engine.

Whatever a test, the sandbox or the bench creates (containers, networks, volumes, the anonymous
volumes of images that declare ``VOLUME`` too), it removes, also when it fails. The containers,
networks and volumes that were not there when the run's first integration test began and are
still there at its end fail the run, listed.

Other work on the same engine can add its own objects meanwhile. Test sessions (``make test``'s
two workers are two) hold a shared lock while they run: the first to begin writes down what was
there, the others read it, and one that ends while another still runs says so and checks
nothing; the last to end checks what all of them left. For anything else (a drill or a bench
run beside the tests while developing) ``GITLAB_DR_SKIP_LEAK_CHECK=1`` turns the check off; CI
(``.ci/run``) never sets it.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import docker
import pytest

SKIP = "GITLAB_DR_SKIP_LEAK_CHECK"
SESSIONS = Path(tempfile.gettempdir()) / "gitlab-dr-test-sessions.lock"
BEFORE = SESSIONS.with_suffix(".before.json")  # what the first of the running sessions found
NOTE = pytest.StashKey[str]()


def docker_objects(client: docker.DockerClient) -> dict[str, str]:
    """Every container, network and volume on the engine: id -> how a person would name it.

    One listing call each (the engine's own summaries): nothing is looked up again, so an
    object another process removes meanwhile cannot fail the listing.
    """
    found: dict[str, str] = {}
    for container in client.api.containers(all=True):
        name = ",".join(n.lstrip("/") for n in container.get("Names") or []) or container["Id"]
        found[f"container:{container['Id']}"] = (
            f"container {name} (image {container.get('Image')}, {container.get('Status')})"
        )
    for network in client.api.networks():
        found[f"network:{network['Id']}"] = f"network {network['Name']}"
    for volume in client.api.volumes().get("Volumes") or []:
        labels = volume.get("Labels") or {}
        kind = "anonymous volume" if "com.docker.volume.anonymous" in labels else "volume"
        found[f"volume:{volume['Name']}"] = f"{kind} {volume['Name']}"
    return found


def leftovers(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What is in ``after`` and was not in ``before``, sorted by kind and name."""
    return sorted(after[key] for key in after.keys() - before.keys())


@pytest.fixture(scope="session", autouse=True)
def leaves_no_docker_objects_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the session if its integration tests left containers, networks or volumes."""
    if os.environ.get(SKIP) == "1":
        yield
        return
    client = docker.from_env()
    with open(SESSIONS, "a") as lock:
        before = _first_look(lock, client)
        yield
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            request.config.stash[NOTE] = (
                "Docker leak check skipped: another test session is running on this engine"
            )
            return
        left = leftovers(before, docker_objects(client))
    if left:
        listing = "\n  ".join(left)
        pytest.fail(
            f"the integration tests left {len(left)} Docker object(s) behind (remove what you "
            f"create, with its volumes: remove(v=True)):\n  {listing}",
            pytrace=False,
        )


def _first_look(lock: IO[str], client: docker.DockerClient) -> dict[str, str]:
    """Take the shared lock (this session runs, others may too) and return what was on the
    engine before the first of the sessions running now began: looked at here when this one is
    the first (none holds the lock), else read from what the first wrote."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(lock, fcntl.LOCK_SH)
        found: dict[str, str] = json.loads(BEFORE.read_text())
        return found
    found = docker_objects(client)
    BEFORE.write_text(json.dumps(found))
    fcntl.flock(lock, fcntl.LOCK_SH)
    return found


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Say so when the leak check could not run."""
    note = config.stash.get(NOTE, "")
    if note:
        terminalreporter.write_line(note, yellow=True)
