"""A realistic write load on a GitLab, and the checks that nothing acknowledged was lost.

The load writes the way users do: commits pushed over HTTP to several projects, rows inserted
in PostgreSQL, uploads PUT over HTTP, and, given the registry's address, images pushed with
skopeo (new tags, tags pushed again, tags deleted: :class:`ops.rehearsal.registry.RegistryLoad`).
It remembers when each write was acknowledged. After a promotion, :func:`verify` checks through
the public address that every write acknowledged before the snapshot's pass began is there:
every project clones, every acknowledged commit is reachable from its branch, every
acknowledged row is in the table, every acknowledged upload reads back byte for byte, every
repository passes ``git fsck --connectivity-only`` with every ref resolving, every tag pulls
with its digest and every registry link resolves to a blob.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from docker.models.containers import Container

from ops.checks import Check
from ops.errors import OpsError
from ops.rehearsal import registry as reg
from ops.rehearsal import standin as gl
from ops.rehearsal.verify import check_repositories, check_rows

TABLE = "drill_rows"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Written:
    """What the load wrote, each with the moment the server acknowledged it."""

    commits: list[tuple[str, str, dt.datetime]] = field(default_factory=list)  # project, sha
    rows: list[tuple[int, dt.datetime]] = field(default_factory=list)
    uploads: list[tuple[str, str, dt.datetime]] = field(default_factory=list)  # path, sha256
    errors: list[str] = field(default_factory=list)
    registry: reg.RegistryWritten = field(default_factory=reg.RegistryWritten)


class Load:
    """Writes to GitLab at ``url`` (and its database through ``gitlab`` container), and to its
    container registry at ``registry`` (host:port) when given."""

    def __init__(
        self, url: str, gitlab: Callable[[], Container], projects: int = 3, registry: str = ""
    ):
        self.url, self.gitlab = url, gitlab
        self.projects = [f"drill/project-{i}" for i in range(projects)]
        self.written = Written()
        self.images = reg.RegistryLoad(registry) if registry else None
        if self.images:
            self.written.registry = self.images.written
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._work = Path(tempfile.mkdtemp(prefix="gitlab-dr-load-"))

    def setup(self) -> None:
        """The table and a first commit in every project (before any snapshot counts)."""
        gl.psql(
            self.gitlab(),
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, payload text NOT NULL)",
        )
        for project in self.projects:
            self._commit(project, 0)
        if self.images:
            for n in range(len(self.images.repos)):
                self.images.step(n)

    def _commit(self, project: str, n: int) -> None:
        sha = gl.push_commit(
            self.url,
            project,
            self._work / project.replace("/", "_"),
            files={f"file-{n % 7}.txt": f"{project} write {n}\n".encode()},
        )
        self.written.commits.append((project, sha, _now()))

    def _row(self, n: int) -> None:
        sql = f"INSERT INTO {TABLE} (payload) VALUES ('row {int(n)}') RETURNING id"  # noqa: S608
        out = gl.psql(self.gitlab(), sql)
        self.written.rows.append((int(out.strip().splitlines()[0]), _now()))

    def _upload(self, n: int) -> None:
        data = os.urandom(2048 + n)
        path = f"drill/{n:06d}.bin"
        gl.put_upload(self.url, path, data)
        self.written.uploads.append((path, hashlib.sha256(data).hexdigest(), _now()))

    def step(self, n: int) -> None:
        """One round: a commit, a row, an upload (and a registry write)."""
        writes: list[Callable[[], None]] = [
            lambda: self._commit(self.projects[n % len(self.projects)], n),
            lambda: self._row(n),
            lambda: self._upload(n),
        ]
        if self.images:
            images = self.images
            writes.append(lambda: images.step(n + len(images.repos)))
        for write in writes:
            try:
                write()
            except OpsError as exc:  # the master may die mid-write: not acknowledged, not counted
                self.written.errors.append(str(exc))

    def start(self, pause: float = 0.05) -> None:
        def run() -> None:
            n = 1
            while not self._stop.is_set():
                self.step(n)
                n += 1
                self._stop.wait(pause)

        self._thread = threading.Thread(target=run, name="load", daemon=True)
        self._thread.start()

    def stop(self) -> Written:
        self._stop.set()
        if self._thread:
            self._thread.join(60)
        return self.written


def verify(
    url: str, gitlab: Container, written: Written, before: dt.datetime, registry: str = ""
) -> list[Check]:
    """Check through ``url`` that every write acknowledged before ``before`` survived.

    Clones, uploads and (through ``registry``, host:port) image pulls go through the public
    address (what users reach); rows, repositories and registry links are checked in the
    container with :mod:`ops.rehearsal.verify`'s and :mod:`ops.rehearsal.registry`'s checks, the
    same the consistency tests run on a started copy.
    """
    out: list[Check] = []
    work = Path(tempfile.mkdtemp(prefix="gitlab-dr-verify-"))
    projects = sorted({p for p, _, _ in written.commits})
    for project in projects:
        try:
            repo = gl.clone(url, project, work / project.replace("/", "_"))
        except OpsError as exc:
            out.append(Check(f"clone {project}", False, str(exc)))
            continue
        acked = [sha for p, sha, at in written.commits if p == project and at < before]
        missing = [sha for sha in acked if not _reachable(repo, sha)]
        out.append(
            Check(
                f"clone {project}", True, f"{len(acked)} commits acknowledged before the snapshot"
            )
        )
        out.append(
            Check(
                f"commits {project}",
                not missing,
                f"{len(acked) - len(missing)}/{len(acked)} reachable"
                + (f"; missing {missing[:3]}" if missing else ""),
            )
        )
    out.append(check_rows(gitlab, TABLE, "id", [i for i, at in written.rows if at < before]))
    bad = [
        p
        for p, sha, at in written.uploads
        if at < before and hashlib.sha256(gl.get_upload(url, p) or b"").hexdigest() != sha
    ]
    count = sum(1 for _, _, at in written.uploads if at < before)
    out.append(
        Check(
            "uploads",
            not bad,
            f"{count - len(bad)}/{count} match" + (f"; wrong {bad[:3]}" if bad else ""),
        )
    )
    out += check_repositories(gitlab)
    if registry:
        expected = reg.expected_tags(written.registry.events, before.timestamp())
        out.append(reg.check_promoted(registry, gitlab, expected, written.registry.errors))
    return out


def _reachable(repo: Path, sha: str) -> bool:
    try:
        gl.git(["merge-base", "--is-ancestor", sha, "HEAD"], cwd=repo)
        return True
    except OpsError:
        return False
