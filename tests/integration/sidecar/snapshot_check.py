"""Every snapshot a slave keeps, checked as GitLab would use it: no row names what it lacks.

A snapshot is checked on a writable copy of it, made by the slave's own
``gitlab-sync prepare --snapshot NAME`` (the snapshot itself stays untouched) beside its sync
area: on the slave's btrfs filesystem, where the copy can be a writable snapshot, or in a
Docker volume on the fallback, where it is a copy. PostgreSQL is then started on the copy as
GitLab's would start (``snapshot_check.sh``, in a container of the stand-in image) and every
row of the writer's tables is checked against the copy's files: an upload row's file is there
with its sha256, a commit row's commit and its whole tree are in the repository, a tag row's
tag is in the registry and its manifest pulls whole (every blob it names there and linked).
Every link of the copy's registry must resolve to a blob, too
(:func:`ops.rehearsal.registry.links_in_container`, in the same container).

Two long-lived helper containers do the work, so a snapshot costs two ``docker exec``: the
copier (the sidecar image, with the slave's sync area) and the inspector (the stand-in image).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import docker
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer

from ops.rehearsal import registry as reg
from tests.integration.rehearsal.standin_container import STANDIN_IMAGE
from tests.integration.sidecar.sync_pair import SYNC_IMAGE, CommandFailed, Pair, new_volume

SCRIPT = Path(__file__).with_name("snapshot_check.sh")
UPLOADS = "data/gitlab-rails/uploads"
REPOSITORIES = "data/git-data/repositories"
REGISTRY = reg.STORAGE_IN_HOME


@dataclass(frozen=True)
class Row:
    """One row of the writer's tables and what the copy says of what it names."""

    kind: str  # "upload", "commit", "tag", or "link" (a registry link, not a row)
    names: str  # the upload's path, "project sha", "repo:tag digest", or the link
    verdict: str  # "ok", or why not: "missing", "changed", "incomplete", "untagged", "dangling"


@dataclass(frozen=True)
class Inspection:
    """PostgreSQL started on one copy, and every row checked."""

    rows: tuple[Row, ...]
    uploads: int
    commits: int
    asked: tuple[tuple[str, ...], ...] = ()  # what the query given to :meth:`inspect` returned
    tags: int = 0
    links: int = 0  # registry links checked

    @property
    def dangling(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if row.verdict != "ok")


_UPLOAD_VERDICTS = {"OK": "ok", "FAILED": "changed", "FAILED open or read": "missing"}


def _tag_verdict(links: reg.Links, repo: str, tag: str, digest: str) -> str:
    """A tag row against the copy's registry: the tag is there, and the manifest the row names
    pulls whole (a tag pushed again since may name a newer one: the row's is still there)."""
    held = links.holds(repo, digest)
    if held != "ok":
        return held
    return "ok" if f"{repo}:{tag}" in links.tags else "untagged"


def parse(output: str, links: reg.Links | None = None) -> Inspection:
    """``snapshot_check.sh``'s lines, and the copy's registry ``links``; every row the tables
    hold must have its line, and every dangling link is a row of its own."""
    links = links or reg.Links({}, 0, ())
    rows: list[Row] = []
    counts: list[int] = []
    asked: list[tuple[str, ...]] = []
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] == "asked":
            asked.append(tuple(fields[1:]))
        elif fields[0] == "rows":
            counts = [int(fields[1]), int(fields[2]), int(fields[3])]
        elif fields[0] == "upload":
            rows.append(Row("upload", fields[1], _UPLOAD_VERDICTS[fields[2]]))
        elif fields[0] == "commit":
            rows.append(Row("commit", f"{fields[1]} {fields[2]}", fields[3]))
        elif fields[0] == "tag":
            repo, tag, digest = fields[1:4]
            verdict = _tag_verdict(links, repo, tag, digest)
            rows.append(Row("tag", f"{repo}:{tag} {digest}", verdict))
        else:
            raise AssertionError(f"snapshot_check.sh said {line!r}")
    uploads = sum(row.kind == "upload" for row in rows)
    commits = sum(row.kind == "commit" for row in rows)
    tags = sum(row.kind == "tag" for row in rows)
    assert counts == [uploads, commits, tags], f"rows {counts}, checked {uploads, commits, tags}"
    rows += [Row("link", link, "dangling") for link in links.dangling]
    return Inspection(tuple(rows), uploads, commits, tuple(asked), tags, links.links)


@dataclass(frozen=True)
class Verdict:
    """One snapshot: how it was copied, and its inspection."""

    snapshot: str
    copy: dict[str, Any]
    inspection: Inspection
    seconds: float  # PostgreSQL started on the copy and every row checked

    def line(self) -> str:
        """The snapshot in one line, with its first dangling rows."""
        dangling = self.inspection.dangling
        text = (
            f"{self.snapshot}: {self.inspection.uploads} uploads, {self.inspection.commits} "
            f"commits, {self.inspection.tags} tags ({self.inspection.links} registry links), "
            f"{len(dangling)} dangling ({self.copy.get('method', 'copy')} in "
            f"{self.copy.get('seconds')} s, checked in {self.seconds:.1f} s)"
        )
        if dangling:
            text += ": " + ", ".join(f"{r.kind} {r.names} {r.verdict}" for r in dangling[:6])
        return text


def _exec(container: Container, argv: list[str], label: list[str] | None = None) -> str:
    """``argv``'s stdout; fails, as ``label`` (default ``argv``), with its output if it fails."""
    code, output = container.exec_run(argv, demux=True)
    out, err = cast("tuple[bytes | None, bytes | None]", output)
    stdout = (out or b"").decode(errors="replace")
    if code != 0:
        stderr = (err or b"").decode(errors="replace")
        raise CommandFailed(label or argv, code if code is not None else -1, stdout + stderr)
    return stdout


def _helper(pair: Pair, image: str, binds: list[tuple[str, str]]) -> Container:
    """A container of ``image`` that only waits for ``docker exec``; gone with the pair."""
    tc = DockerContainer(image).with_command("sleep infinity")
    tc.with_kwargs(entrypoint=["/usr/bin/tini", "--"])
    tc.with_name(f"gitlab-dr-test-check-{uuid.uuid4().hex[:6]}")
    for source, target in binds:
        tc.with_volume_mapping(source, target, "rw")
    pair.stack.enter_context(tc)
    container: Container = tc.get_wrapped_container()
    return container


def _mount_of(container: Container, destination: str) -> str:
    """What is mounted at ``destination``: a volume's name or a host folder."""
    container.reload()
    for mount in container.attrs["Mounts"]:
        if mount["Destination"] == destination:
            return str(mount.get("Name") or mount["Source"])
    raise AssertionError(f"nothing is mounted at {destination} in {container.name}")


class Checker:
    """Copies of a pair's slave snapshots under ``/check``, and their inspection."""

    def __init__(self, pair: Pair):
        self.pair = pair
        sync = _mount_of(pair.slave.container, "/sync")
        # ``folder``: /check on the Docker host, where a GitLab on a copy binds its parts from.
        if pair.fs == "btrfs":  # beside the sync area, on the same filesystem
            area = Path(sync).parent / "check"
            area.mkdir()
            check = self.folder = str(area)
        else:
            client = docker.from_env()
            name = f"gitlab-dr-test-check-{uuid.uuid4().hex[:8]}"
            check = new_volume(client, pair.stack, name)
            self.folder = str(client.api.inspect_volume(check)["Mountpoint"])
        self.copier = _helper(pair, SYNC_IMAGE, [(sync, "/sync"), (check, "/check")])
        self.inspector = _helper(pair, STANDIN_IMAGE, [(check, "/check")])

    def names(self) -> list[str]:
        """The complete snapshots the slave keeps, oldest first."""
        find = ["find", "/sync/snapshots", "-mindepth", "1", "-maxdepth", "1", "-type", "d"]
        out = self.pair.slave.run([*find, "-not", "-name", ".*", "-printf", "%f\\n"], check=False)
        return sorted(out.split())

    def copy(self, name: str, as_: str) -> tuple[str, dict[str, Any]]:
        """A writable copy of snapshot ``name`` at ``/check/<as_>``: its path, prepare's answer."""
        target = f"/check/{as_}"
        argv = ["gitlab-sync", "prepare", target, "--snapshot", name, "--json"]
        prepared: dict[str, Any] = json.loads(_exec(self.copier, argv))
        return target, prepared

    def remove(self, copy: str, prepared: dict[str, Any]) -> None:
        """Remove a copy made by :meth:`copy` once it has served (``prepared``: its answer)."""
        if prepared.get("method") == "snapshot":  # a subvolume
            _exec(self.copier, ["btrfs", "subvolume", "delete", copy])
        else:
            _exec(self.copier, ["rm", "-rf", copy])

    def host(self, copy: str) -> str:
        """Where the copy ``/check/<name>`` is on the Docker host."""
        return f"{self.folder}/{Path(copy).relative_to('/check')}"

    def inspect(self, copy: str, query: str = "") -> Inspection:
        """Start PostgreSQL on the copy and check every row against it; and run ``query``."""
        argv = ["bash", "-c", SCRIPT.read_text(), "snapshot_check", copy, query]
        output = _exec(self.inspector, argv, [SCRIPT.name, copy])
        return parse(output, reg.links_in_container(self.inspector, f"{copy}/{REGISTRY}"))

    def check(self, name: str, query: str = "") -> Verdict:
        copy, prepared = self.copy(name, name)
        begun = time.monotonic()
        inspection = self.inspect(copy, query)
        return Verdict(name, prepared, inspection, time.monotonic() - begun)

    def in_copy(self, argv: list[str]) -> str:
        """Run ``argv`` in the inspector (as root), e.g. to break a copy on purpose."""
        return _exec(self.inspector, argv)
