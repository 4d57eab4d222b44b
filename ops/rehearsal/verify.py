"""Is a GitLab started from a copy whole? The checks the consistency tests and the drill share.

Run against a GitLab container (the stand-in, or Omnibus for the parts they share) started on a
prepared copy of a snapshot: readiness goes green, PostgreSQL is out of recovery, the rows and
commits and uploads acknowledged before a moment are all there, every repository is connected
(``git fsck --connectivity-only``) and every ref resolves, every registry link resolves to a
blob and every tag acknowledged before the moment names what it named then. Like ``barman
check``: each check has a name, a result, what was seen and a hint (:class:`ops.checks.Check`);
:attr:`Verification.ok` is the verdict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from docker.models.containers import Container

from ops.checks import Check
from ops.errors import OpsError
from ops.rehearsal import registry as reg
from ops.rehearsal import standin as gl

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")

# Run in the container as git, one exec for every repository: fsck, then every ref (and HEAD,
# unless the repository has no commit yet) must name an object that is there.
_REPOSITORY_SCRIPT = r"""
cd "$1" || exit 2
find . -name '*.git' -type d -prune -printf '%P\n' | sort | while read -r repo; do
  out=$(git -C "$repo" fsck --connectivity-only --no-progress 2>&1) ||
    { echo "FAIL ${repo%.git}: fsck: $(echo "$out" | head -3 | tr '\n' ' ')"; continue; }
  bad=$(git -C "$repo" for-each-ref --format='%(objectname) %(refname)' |
        while read -r sha ref; do
          git -C "$repo" cat-file -e "$sha" 2>/dev/null || echo "$ref -> $sha"
        done)
  [ -z "$bad" ] || { echo "FAIL ${repo%.git}: refs to missing objects: $bad"; continue; }
  if [ -n "$(git -C "$repo" for-each-ref --count=1)" ] &&
     ! git -C "$repo" rev-parse --verify -q HEAD >/dev/null; then
    echo "FAIL ${repo%.git}: HEAD does not resolve"; continue
  fi
  echo "OK ${repo%.git} $(git -C "$repo" for-each-ref | wc -l)"
done
"""


class VerifyError(OpsError):
    """The checks could not run at all (no container, no answer)."""


@dataclass(frozen=True)
class Expectation:
    """What must be in the copy: what was acknowledged before the snapshot's pass began.

    ``rows``: keys of ``table.column`` that must be present. ``commits``: for each project, a
    commit that ``branch`` must contain (the newest acknowledged before that moment).
    ``uploads``: files under GitLab's uploads directory and the SHA-256 of their bytes.
    ``tags``: registry tags (``repo:tag``) and what each must name
    (:func:`ops.rehearsal.registry.expected_tags`).
    """

    table: str = ""
    column: str = "n"
    rows: frozenset[int] = frozenset()
    commits: Mapping[str, str] = field(default_factory=dict)
    branch: str = "main"
    uploads: Mapping[str, str] = field(default_factory=dict)  # path under uploads -> sha256
    tags: Mapping[str, reg.TagExpectation] = field(default_factory=dict)


@dataclass(frozen=True)
class Verification:
    """Every check run on one copy, in order."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[str]:
        return [
            f"{c.name}: {c.detail}" + (f" ({c.hint})" if c.hint else "")
            for c in self.checks
            if not c.ok
        ]

    def render(self) -> list[str]:
        return [f"[{'ok' if c.ok else 'FAILED'}] {c.name}: {c.detail}" for c in self.checks]


def check_ready(base_url: str, timeout: float) -> Check:
    try:
        waited = gl.wait_ready(base_url, timeout)
    except gl.GitLabClientError as exc:
        return Check("readiness", False, str(exc), "see the container's logs")
    return Check("readiness", True, f"green after {waited:.1f} s")


def check_postgresql(container: Container) -> Check:
    try:
        recovering = gl.psql(container, "SELECT pg_is_in_recovery()").strip()
    except gl.GitLabClientError as exc:
        return Check("postgresql", False, str(exc), "PostgreSQL did not start on the copy")
    if recovering != "f":
        return Check("postgresql", False, "still in recovery", "a standby, or WAL missing")
    return Check("postgresql", True, "started, out of recovery")


def check_rows(container: Container, table: str, column: str, rows: Iterable[int]) -> Check:
    """Every key in ``rows`` is in ``table.column``."""
    wanted = sorted(set(rows))
    if not wanted:
        return Check("rows", True, "none expected")
    if not (_IDENT.match(table) and _IDENT.match(column)):
        raise VerifyError(f"not an identifier: {table}.{column}")
    query = f"SELECT {column} FROM {table} WHERE {column} <= {wanted[-1]}"  # noqa: S608
    try:
        present = {int(x) for x in gl.psql(container, query).split()}
    except (gl.GitLabClientError, ValueError) as exc:
        return Check("rows", False, f"could not read {table}: {exc}")
    missing = [n for n in wanted if n not in present]
    if missing:
        return Check(
            "rows",
            False,
            f"{len(missing)} of {len(wanted)} rows committed before the pass are missing: "
            f"{missing[:10]}",
            "the PostgreSQL copy lost committed transactions",
        )
    return Check("rows", True, f"all {len(wanted)} rows committed before the pass are there")


def check_repositories(container: Container) -> list[Check]:
    """fsck --connectivity-only and every ref resolving, for every repository."""
    result = gl.run_in(
        container, ["sh", "-c", _REPOSITORY_SCRIPT, "verify", gl.REPOSITORIES], user="git"
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    bad = [line[5:] for line in lines if line.startswith("FAIL ")]
    good = [line for line in lines if line.startswith("OK ")]
    if not result.ok and not lines:
        return [Check("repositories", False, f"could not list repositories: {result.output}")]
    return [
        Check(
            "repositories",
            not bad,
            f"{len(good)} connected, every ref resolves"
            if not bad
            else f"{len(bad)} broken: {'; '.join(bad)[:500]}",
            "" if not bad else "a ref points at an object the copy does not hold",
        )
    ]


def check_commits(container: Container, commits: Mapping[str, str], branch: str) -> Check:
    """For each project, ``branch`` contains the given commit."""
    missing: list[str] = []
    for project, sha in sorted(commits.items()):
        if not _SHA.match(sha):
            raise VerifyError(f"not a commit id: {sha!r}")
        result = gl.run_in(
            container,
            [
                "git",
                "-C",
                gl.repository_path(project),
                "merge-base",
                "--is-ancestor",
                sha,
                f"refs/heads/{branch}",
            ],
            user="git",
        )
        if not result.ok:
            missing.append(f"{project}@{sha[:10]}")
    if missing:
        return Check(
            "commits",
            False,
            f"pushed before the pass, not in the copy: {', '.join(missing)}",
            "refs or objects lost",
        )
    return Check(
        "commits", True, f"every commit pushed before the pass is in {len(commits)} projects"
    )


def check_uploads(container: Container, uploads: Mapping[str, str]) -> Check:
    """Every upload is there with the same bytes."""
    if not uploads:
        return Check("uploads", True, "none expected")
    paths = sorted(uploads)
    for path in paths:
        if path.startswith("/") or ".." in path.split("/"):
            raise VerifyError(f"not a path under uploads: {path!r}")
    result = gl.run_in(container, ["sh", "-c", 'cd "$0" && sha256sum -- "$@"', gl.UPLOADS, *paths])
    seen = {}
    for line in result.output.splitlines():
        digest, _, name = line.partition("  ")
        if _SHA256.match(digest):
            seen[name] = digest
    bad = [p for p in paths if seen.get(p) != uploads[p]]
    if bad:
        return Check(
            "uploads",
            False,
            f"{len(bad)} of {len(paths)} uploads missing or different: {bad[:5]}",
            "uploads stored before the pass must be in the copy, byte for byte",
        )
    return Check("uploads", True, f"all {len(paths)} uploads there, byte for byte")


def check_registry(container: Container, tags: Mapping[str, reg.TagExpectation]) -> list[Check]:
    """Every link of the registry's storage resolves to a blob; every tag in ``tags`` names what
    it must."""
    try:
        links = reg.links_in_container(container)
    except reg.RegistryError as exc:
        return [Check("registry links", False, str(exc), "the registry's storage is unreadable")]
    checks = [reg.check_links(links)]
    if tags:
        checks.append(reg.check_tags(links, tags))
    return checks


def verify(
    container: Container,
    base_url: str,
    expect: Expectation,
    ready_timeout: float = 120.0,
    log: Callable[[str], None] = lambda _m: None,
) -> Verification:
    """Every check, in order; readiness first (the others need PostgreSQL up)."""
    checks = [check_ready(base_url, ready_timeout)]
    log(checks[-1].detail)
    checks.append(check_postgresql(container))
    if expect.table:
        checks.append(check_rows(container, expect.table, expect.column, expect.rows))
    checks += check_repositories(container)
    if expect.commits:
        checks.append(check_commits(container, expect.commits, expect.branch))
    if expect.uploads:
        checks.append(check_uploads(container, expect.uploads))
    checks += check_registry(container, expect.tags)
    return Verification(tuple(checks))
