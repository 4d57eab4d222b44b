"""A GitLab on a sync pair's master tree, and a writer in it that does what GitLab does.

The stand-in GitLab (real PostgreSQL, git over HTTP) runs on the pair's own GITLAB_HOME, the
tree the master's sidecar mounts read-only at ``/source``: its config, data and logs are bound
from that folder, so its PostgreSQL is the live cluster the sidecar copies (its socket is in the
tree, where the sidecar finds it). On btrfs that folder is the master's ``gitlab`` subvolume;
on the fallback it is the folder Docker keeps the pair's volume in (Docker 20.10 cannot mount
part of a volume, and the daemon binds its own folders).

The writer (``consistency_writer.sh``) runs inside that GitLab, so a write costs processes,
not round trips through the Docker API: an upload file and then its row, a push and then a row
naming its commit, an image pushed to the container registry and then a row naming its tag and
digest (a tag's row deleted before its manifest), as GitLab orders them. Its
acknowledgements, each with its time, say when the load has begun and what a snapshot begun
later must hold (:meth:`Writer.expectation`); they are read with ``docker cp``, so also from a
GitLab killed with SIGKILL, and a writer started again after that goes on (new names, the
killed git's locks removed).

:func:`standin` starts the same GitLab on any tree, e.g. on a copy of a slave's snapshot.
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest
from testcontainers.core.container import DockerContainer

from ops.rehearsal import registry as reg
from ops.rehearsal import standin as gl
from ops.rehearsal import verify
from tests.integration.rehearsal.standin_container import STANDIN_IMAGE, StandIn
from tests.integration.sidecar.sync_pair import SYNC_IMAGE, Pair, wait_for

HOME_PARTS = {"config": "/etc/gitlab", "data": "/var/opt/gitlab", "logs": "/var/log/gitlab"}
# A replication slot keeps a backup pass's WAL (the fallback's passes take one); a little WAL
# kept beyond it, not the 256 MB the kill tests keep, so snapshots stay small.
OMNIBUS_CONFIG = "postgresql['max_replication_slots'] = 4\npostgresql['wal_keep_size'] = 32\n"
TABLES = (
    "CREATE TABLE dr_uploads (id bigserial PRIMARY KEY, path text NOT NULL, "
    "sha256 text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE dr_commits (id bigserial PRIMARY KEY, project text NOT NULL, "
    "sha text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE dr_tags (repo text NOT NULL, tag text NOT NULL, digest text NOT NULL, "
    "at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (repo, tag))",
)
RUN = "/tmp/dr-writer"  # the writer's own folder in the container, outside GITLAB_HOME
SCRIPT = Path(__file__).with_name("consistency_writer.sh")
LOOPS = ("uploads", "pushes", "images")
TAG_KINDS = {"tag": ("push", True), "tag-try": ("push", False)} | {
    "untag": ("delete", True),
    "untag-try": ("delete", False),
}


def home_folder(pair: Pair) -> str:
    """The master's GITLAB_HOME as a folder on the Docker host."""
    if pair.fs == "btrfs":
        return pair.source_volume
    volume = docker.from_env().api.inspect_volume(pair.source_volume)
    return str(volume["Mountpoint"])


def require_images() -> None:
    """Fail at once, in one line, when an image the consistency rigs run is not built."""
    client = docker.from_env()
    for image in (STANDIN_IMAGE, SYNC_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} is missing: run `make images`")


class GitLab(StandIn):
    """A stand-in GitLab in a container: the master's, or one started on a copy."""

    def read(self, path: str) -> str:
        """A file in the container ("" when it is not there)."""
        return self._copied(path) or ""

    def exists(self, path: str) -> bool:
        return self._copied(path) is not None

    def _copied(self, path: str) -> str | None:
        """A file, with ``docker cp``: from a container killed with SIGKILL too (None: none)."""
        try:
            stream, _ = self.container.get_archive(path)
        except docker.errors.NotFound:
            return None
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile(Path(path).name)
            return member.read().decode(errors="replace") if member else ""


def standin(home: str, name: str) -> DockerContainer:
    """A stand-in GitLab (not started) whose GITLAB_HOME is the host folder ``home``."""
    tc = DockerContainer(STANDIN_IMAGE).with_exposed_ports(80)
    tc.with_name(f"gitlab-dr-test-{name}-{uuid.uuid4().hex[:6]}")
    tc.with_env("GITLAB_OMNIBUS_CONFIG", OMNIBUS_CONFIG)
    for part, path in HOME_PARTS.items():
        tc.with_volume_mapping(f"{home}/{part}", path, "rw")
    return tc


def start_gitlab(pair: Pair) -> GitLab:
    """A ready GitLab on the pair's master tree, with the writer's tables; it goes (before the
    tree does) when the pair's stack closes."""
    pair.writer.run(["mkdir", "-p", *(f"/source/{part}" for part in HOME_PARTS)])
    tc = standin(home_folder(pair), "gitlab")
    pair.stack.enter_context(tc)
    gitlab = GitLab(tc)
    gl.wait_ready(gitlab.url, 120)
    for sql in TABLES:
        gl.psql(gitlab.container, sql)
    return gitlab


@dataclass(frozen=True)
class Written:
    """What the writer had acknowledged when it stopped, and over how long."""

    uploads: int
    commits: int
    seconds: float
    tags: int = 0  # pushes acknowledged
    untags: int = 0  # deletes acknowledged


@dataclass
class Writer:
    gitlab: GitLab
    pause: float = 0.0  # seconds between two uploads (0: as fast as they go)
    moves: bool = True  # tags pushed again and deleted (False: the fallback, see the script)
    started: float = 0.0

    def start(self) -> None:
        """Start both loops (again, after :meth:`stop` or a kill: they go on from there)."""
        container = self.gitlab.container
        container.exec_run(["rm", "-f", f"{RUN}/stop", f"{RUN}/exited"])
        script = ["bash", "-c", SCRIPT.read_text()]
        env = {"PAUSE": str(self.pause), "MOVES": "1" if self.moves else "0"}
        container.exec_run(script, detach=True, environment=env)
        self.started = time.monotonic()

    def acks(self) -> list[str]:
        self._still_running()
        return self.gitlab.read(f"{RUN}/acks").splitlines()

    def loaded(self) -> float:
        """``time.time()`` once an upload, a push and an image are all acknowledged, else 0: a
        snapshot that starts later holds rows of every kind."""
        kinds = {line.split(" ", 1)[0] for line in self.acks()}
        return time.time() if {"upload", "commit", "tag"} <= kinds else 0.0

    def expectation(self, before: float) -> verify.Expectation:
        """What a snapshot whose pass began at ``before`` (``time.time()``) must hold: every
        upload (its row, and its bytes), per project the newest commit acknowledged before
        then, and every registry tag as its writes acknowledged before then left it."""
        rows: set[int] = set()
        uploads: dict[str, str] = {}
        commits: dict[str, str] = {}
        events: list[reg.Event] = []
        for line in self.acks():
            kind, *fields, at = line.split(" ")
            if kind in TAG_KINDS:
                action, acked = TAG_KINDS[kind]
                repo, tag, digest = fields
                events.append(reg.Event(action, repo, tag, digest, float(at), acked))
                continue
            if float(at) >= before:
                continue
            if kind == "upload":
                path, digest, row = fields
                uploads[path] = digest
                rows.add(int(row))
            else:
                project, sha = fields
                commits[project] = sha
        return verify.Expectation(
            table="dr_uploads",
            column="id",
            rows=frozenset(rows),
            commits=commits,
            uploads=uploads,
            tags=reg.expected_tags(events, before),
        )

    def stop(self) -> Written:
        """Ask both loops to end and wait until they have; what they acknowledged."""
        self.gitlab.container.exec_run(["touch", f"{RUN}/stop"])
        wait_for(
            lambda: len(self._exited()) == len(LOOPS), 60, "the writer's loops to end", every=0.2
        )
        seconds = time.monotonic() - self.started
        failed = {loop: code for loop, code in self._exited().items() if code != "0"}
        assert not failed, f"the writer failed ({failed}): {self.gitlab.read(f'{RUN}/log')}"
        kinds = [line.split(" ", 1)[0] for line in self.acks()]
        return Written(
            kinds.count("upload"),
            kinds.count("commit"),
            round(seconds, 1),
            kinds.count("tag"),
            kinds.count("untag"),
        )

    def _exited(self) -> dict[str, str]:
        lines = self.gitlab.read(f"{RUN}/exited").splitlines()
        return {loop: code for loop, _, code in (line.partition(" ") for line in lines)}

    def _still_running(self) -> None:
        """A loop that ended before it was asked to is a broken writer, not a slow one."""
        if not self.gitlab.exists(f"{RUN}/stop"):
            exited = self._exited()
            assert not exited, (
                f"the writer ended early ({exited}): {self.gitlab.read(RUN + '/log')}"
            )
