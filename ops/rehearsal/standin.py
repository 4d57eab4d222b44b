"""Client helpers for a GitLab container: readiness, git over HTTP, gitlab-psql, fsck, uploads.

Made for the stand-in image (``images/gitlab-standin``) and reused by the tests and the drill.
Most of it works against the Omnibus image too: the probes, git over HTTP (given credentials in
the URL), ``gitlab-psql`` and ``gitlab-ctl status``. Two parts are the stand-in's own: uploads
through ``PUT``/``GET /uploads/<path>``, and repositories on disk as ``<group>/<project>.git``
(Omnibus keeps them under ``@hashed/``).

Over HTTP the base URL is the container's published address (``http://127.0.0.1:32768``). In
the container, commands go through the Docker SDK (``docker exec``), so they work the same on a
local engine and on a host's engine over ``ssh://``. The host's own ``git`` runs the git side.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from docker.models.containers import Container

from ops.dr import readiness as probes
from ops.errors import OpsError
from ops.rehearsal.local import DockerFailure

REPOSITORIES = "/var/opt/gitlab/git-data/repositories"
"""Where GitLab (and the stand-in) keep bare repositories in the container."""

UPLOADS = "/var/opt/gitlab/gitlab-rails/uploads"
"""Where uploads land in the container."""

GIT_IDENTITY = ("-c", "user.name=gitlab-dr", "-c", "user.email=gitlab-dr@example.invalid")

_PROJECT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_STATUS_LINE = re.compile(r"^(run|down|finish|fail|warning): ([^:]+):")


class GitLabClientError(OpsError):
    """A probe, a git command or a command in the GitLab container failed."""


class GitLabNotReady(GitLabClientError):
    """GitLab did not become ready in time; the message gives the last reason."""


# --- Probes ---------------------------------------------------------------------------------


Readiness = probes.Readiness
"""One answer of ``/-/readiness`` (:class:`ops.dr.readiness.Readiness`)."""


def readiness(base_url: str, timeout: float = 5.0, all_checks: bool = True) -> Readiness:
    """Ask ``/-/readiness`` once (with ``?all=1``: every check and its message)."""
    return probes.readiness(base_url, timeout, all_checks)


def health(base_url: str, timeout: float = 5.0) -> int:
    """The HTTP status of ``/-/health`` (0 when nothing answered)."""
    try:
        status, _ = probes.http_request(f"{base_url.rstrip('/')}/-/health", timeout=timeout)
    except OSError:
        return 0
    return status


def wait_ready(
    base_url: str,
    timeout: float,
    *,
    interval: float = 0.25,
    probe: Callable[[], Readiness] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Poll readiness until it is green; returns the seconds waited.

    Raises :class:`GitLabNotReady` with the last reason once ``timeout`` has passed.
    """
    return probes.wait_ready(
        base_url,
        timeout,
        interval=interval,
        probe=probe,
        clock=clock,
        sleep=sleep,
        error=GitLabNotReady,
    )


# --- git over HTTP, with the host's git ----------------------------------------------------


def project_url(base_url: str, project: str) -> str:
    """The clone URL of ``group/project``."""
    if not _PROJECT.match(project):
        raise GitLabClientError(f"not a project path like group/project: {project!r}")
    return f"{base_url.rstrip('/')}/{project}.git"


def git(args: Sequence[str], cwd: Path | None = None, timeout: float = 120.0) -> str:
    """Run the host's git (no user or system configuration, never a prompt); returns stdout."""
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
    }
    argv = ["git", *GIT_IDENTITY, *args]
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitLabClientError(f"git {' '.join(args)} failed: {exc}") from exc
    if done.returncode != 0:
        raise GitLabClientError(
            f"git {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}"
        )
    return done.stdout


def push_commit(
    base_url: str,
    project: str,
    workdir: Path,
    *,
    branch: str = "main",
    message: str = "a commit from gitlab-dr",
    files: Mapping[str, bytes] | None = None,
) -> str:
    """Commit ``files`` (default: one changed file) in ``workdir`` and push it; returns its sha.

    ``workdir`` is a local repository kept between calls (made on the first one): its branch is
    pushed as it is, so a project written by one writer only ever fast-forwards.
    """
    url = project_url(base_url, project)
    if not (workdir / ".git").is_dir():
        workdir.mkdir(parents=True, exist_ok=True)
        git(["init", "--quiet", "--initial-branch", branch], cwd=workdir)
    git(["checkout", "--quiet", "-B", branch], cwd=workdir)
    content = files or {"counter.txt": f"{time.time_ns()}\n".encode()}
    for name, data in content.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    git(["add", "--all"], cwd=workdir)
    git(["commit", "--quiet", "--allow-empty", "-m", message], cwd=workdir)
    git(["push", "--quiet", url, f"HEAD:refs/heads/{branch}"], cwd=workdir)
    return git(["rev-parse", "HEAD"], cwd=workdir).strip()


def ls_remote(base_url: str, project: str) -> dict[str, str]:
    """The project's refs over HTTP: ``{"HEAD": sha, "refs/heads/main": sha, ...}``."""
    out = git(["ls-remote", project_url(base_url, project)])
    return {ref: sha for sha, ref in (line.split("\t", 1) for line in out.splitlines() if line)}


def clone(base_url: str, project: str, dest: Path) -> Path:
    """Clone the project into ``dest`` (which must not exist); returns ``dest``."""
    git(["clone", "--quiet", project_url(base_url, project), str(dest)])
    return dest


def fetch(repo: Path) -> None:
    """Fetch every branch of ``origin`` into a clone."""
    git(["fetch", "--quiet", "origin"], cwd=repo)


def local_refs(repo: Path, pattern: str = "refs/heads") -> dict[str, str]:
    """A local repository's refs under ``pattern``: ``{"refs/heads/main": sha, ...}``."""
    out = git(["for-each-ref", "--format=%(refname) %(objectname)", pattern], cwd=repo)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


# --- Uploads (the stand-in's PUT/GET /uploads/<path>) ----------------------------------------


def _upload_url(base_url: str, path: str) -> str:
    return f"{base_url.rstrip('/')}/uploads/{urllib.parse.quote(path.lstrip('/'))}"


def put_upload(base_url: str, path: str, data: bytes, timeout: float = 60.0) -> int:
    """Store ``data`` at ``uploads/<path>``; returns 201 (created) or 204 (replaced)."""
    try:
        status, body = probes.http_request(_upload_url(base_url, path), "PUT", data, timeout)
    except OSError as exc:
        raise GitLabClientError(f"PUT uploads/{path} failed: {exc}") from exc
    if status not in (201, 204):
        raise GitLabClientError(f"PUT uploads/{path}: HTTP {status}: {body[:200]!r}")
    return status


def get_upload(base_url: str, path: str, timeout: float = 60.0) -> bytes | None:
    """The bytes at ``uploads/<path>``, or None when there is no such upload."""
    try:
        status, body = probes.http_request(_upload_url(base_url, path), timeout=timeout)
    except OSError as exc:
        raise GitLabClientError(f"GET uploads/{path} failed: {exc}") from exc
    if status == 404:
        return None
    if status != 200:
        raise GitLabClientError(f"GET uploads/{path}: HTTP {status}: {body[:200]!r}")
    return body


# --- In the container ----------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    """What a command in the GitLab container did: its exit code and its output (both streams)."""

    argv: tuple[str, ...]
    code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def run_in(container: Container, argv: Sequence[str], *, user: str = "root") -> CommandResult:
    """Run ``argv`` in the container as ``user``; returns its exit code and output."""
    try:
        code, output = container.exec_run(list(argv), user=user)
    except (*DockerFailure, OSError) as exc:
        raise GitLabClientError(f"docker exec {' '.join(argv)} failed: {exc}") from exc
    text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
    return CommandResult(tuple(argv), int(code if code is not None else -1), text)


def check_in(container: Container, argv: Sequence[str], *, user: str = "root") -> str:
    """Run ``argv`` in the container; its output, or :class:`GitLabClientError` if it fails."""
    result = run_in(container, argv, user=user)
    if not result.ok:
        raise GitLabClientError(
            f"{' '.join(argv)} exited {result.code} in {container.name}: {result.output.strip()}"
        )
    return result.output


def psql(container: Container, sql: str) -> str:
    """Run SQL with ``gitlab-psql`` (unaligned, tuples only, stop at the first error)."""
    return check_in(
        container, ["gitlab-psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql]
    )


def count_rows(container: Container, table: str) -> int:
    """``SELECT count(*)`` of a table of gitlabhq_production."""
    if not _TABLE.match(table):
        raise GitLabClientError(f"not a table name: {table!r}")
    query = f"SELECT count(*) FROM {table}"  # noqa: S608 (a checked identifier, not data)
    return int(psql(container, query).strip())


def service_states(container: Container) -> dict[str, str]:
    """``gitlab-ctl status`` as ``{"postgresql": "run", "puma": "down", ...}``.

    Read the lines, not the exit code: runit's ``sv status`` exits 0 for a service that is
    down while its log service runs (on Omnibus as on the stand-in).
    """
    out = run_in(container, ["gitlab-ctl", "status"]).output
    return {m.group(2): m.group(1) for m in map(_STATUS_LINE.match, out.splitlines()) if m}


@dataclass(frozen=True)
class FsckResult:
    """``git fsck --connectivity-only`` of one repository in the container."""

    project: str
    ok: bool
    output: str = field(repr=False)


def repository_path(project: str) -> str:
    """Where the stand-in keeps ``group/project`` in the container."""
    if not _PROJECT.match(project):
        raise GitLabClientError(f"not a project path like group/project: {project!r}")
    return f"{REPOSITORIES}/{project}.git"


def fsck(container: Container, project: str) -> FsckResult:
    """Check that every ref of the project resolves and every object it reaches is there."""
    result = run_in(
        container,
        ["git", "-C", repository_path(project), "fsck", "--connectivity-only", "--no-progress"],
        user="git",
    )
    return FsckResult(project, result.ok, result.output)


def list_projects(container: Container) -> list[str]:
    """Every ``group/.../project`` with a bare repository under the repositories directory."""
    out = check_in(
        container,
        ["find", REPOSITORIES, "-name", "*.git", "-type", "d", "-prune", "-printf", "%P\\n"],
        user="git",
    )
    return sorted(line.removesuffix(".git") for line in out.splitlines() if line)


def fsck_all(container: Container) -> list[FsckResult]:
    """:func:`fsck` of every repository the container holds."""
    return [fsck(container, project) for project in list_projects(container)]


def repository_refs(container: Container, project: str) -> dict[str, str]:
    """A repository's refs as stored in the container: ``{"refs/heads/main": sha, ...}``."""
    out = check_in(
        container,
        [
            "git",
            "-C",
            repository_path(project),
            "for-each-ref",
            "--format=%(refname) %(objectname)",
        ],
        user="git",
    )
    return dict(line.split(" ", 1) for line in out.splitlines() if line)
