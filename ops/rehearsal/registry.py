"""The container registry in a rehearsal: real pushes, and the checks that no tag was lost.

A tag is a link to a manifest, and a manifest names blobs (its config and layers), each a file
of the registry's storage (``docker/registry/v2``: ``repositories/<name>/_manifests/tags/<tag>/
current/link``, ``_manifests/revisions/sha256/<hex>/link`` and ``_layers/sha256/<hex>/link``,
each holding a digest whose bytes are ``blobs/sha256/<2 hex>/<hex>/data``). A file-by-file copy
can hold a link without its blob; a snapshot from one instant cannot. It can hold one
thing that looks like it: the registry deletes a manifest by removing its revision link first
and then the tags that name it (``DeleteManifest`` in distribution's
``registry/handlers/manifests.go``), so an instant inside a delete holds a tag whose manifest
blob is there and whose revision link is not. The registry itself answers such a tag "manifest
unknown", as after the delete; :class:`Links` counts it as a delete under way, not a dangling
link, and leaves it out of the tags (a tag acknowledged before the instant that no delete was
tried on fails :func:`check_tags` as lost). So:

- :func:`make_image` writes a small random OCI image (one or two random tar layers) as an OCI
  layout, with no pull; :func:`push` sends it with skopeo over plain HTTP, :func:`delete`
  deletes a tag's manifest through the registry's API (``skopeo delete``), and
  :class:`RegistryLoad` does both as users do (new tags, tags pushed again with new content,
  tags deleted), recording each acknowledged write with its time and digest.
- :func:`check_promoted`: through the public address, every tag acknowledged before an
  instant pulls with its digest (``skopeo inspect --raw``, then ``skopeo copy`` of it by
  digest), and every link of the promoted registry resolves.
- :data:`LINK_SCRIPT` walks a registry's storage and says of every link whether its blob is
  there (and of every digest a manifest names, whether the repository links it): run in a
  GitLab container (:func:`links_in_container`) or on a plain folder such as a snapshot
  (:func:`links_in_directory`); :func:`check_links` and :func:`check_tags` judge its answer.

skopeo (Debian's, on the operator's machine: ``scripts/host-deps.sh``) is the one client, and
:func:`skopeo` its one choke point.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from docker.models.containers import Container

from ops.checks import Check
from ops.errors import OpsError
from ops.rehearsal import standin as gl

STORAGE = "/var/opt/gitlab/gitlab-rails/shared/registry"
"""Omnibus's (and the stand-in's) registry storage in the GitLab container."""

STORAGE_IN_HOME = "data/gitlab-rails/shared/registry"
"""The same folder under GITLAB_HOME (a snapshot's tree)."""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

# Every link of a registry's storage at $1, one line each (space-separated; names have none):
#   tag <repo> <tag> <digest> ok|no-blob|no-revision   a tag, its manifest's blob and revision
#                                                      (no-revision: a delete under way)
#   revision <repo> <digest> ok|no-blob                a manifest linked in the repository
#   ref <repo> <manifest> <digest> ok|no-blob|no-link  a digest the manifest names
#   layer <repo> <digest> ok|no-blob                   a blob linked in the repository
#   bad <path>                                         a link that holds no sha256 digest
# "none" alone when there is no repository. Bash and coreutils only: it runs in the stand-in.
LINK_SCRIPT = r"""
v2=$1/docker/registry/v2
[ -d "$v2/repositories" ] || { echo none; exit 0; }
cd "$v2/repositories" || exit 2
blob() { [ -f "$v2/blobs/sha256/${1:0:2}/$1/data" ]; }
hex_of() { # a link file -> its digest's hex, or 1
  local d
  d=$(cat "$1" 2>/dev/null) || return 1
  [[ $d =~ ^sha256:[0-9a-f]{64}$ ]] || return 1
  printf '%s' "${d#sha256:}"
}
repos=$(find . \( -name _manifests -o -name _layers \) -type d -prune -printf '%h\n' |
  sed 's|^\./||' | sort -u)
[ -n "$repos" ] || { echo none; exit 0; }
while read -r repo; do
  m=$repo/_manifests
  for link in "$m"/tags/*/current/link; do
    [ -e "$link" ] || continue
    tag=${link#"$m/tags/"}; tag=${tag%/current/link}
    hex=$(hex_of "$link") || { echo "bad $link"; continue; }
    if ! blob "$hex"; then v=no-blob
    elif [ ! -f "$m/revisions/sha256/$hex/link" ]; then v=no-revision
    else v=ok; fi
    echo "tag $repo $tag sha256:$hex $v"
  done
  for link in "$m"/revisions/sha256/*/link; do
    [ -e "$link" ] || continue
    hex=$(hex_of "$link") || { echo "bad $link"; continue; }
    if ! blob "$hex"; then echo "revision $repo sha256:$hex no-blob"; continue; fi
    echo "revision $repo sha256:$hex ok"
    grep -o 'sha256:[0-9a-f]\{64\}' "$v2/blobs/sha256/${hex:0:2}/$hex/data" | sort -u |
      while read -r ref; do
        r=${ref#sha256:}
        [ "$r" = "$hex" ] && continue
        if ! blob "$r"; then v=no-blob
        elif [ -f "$repo/_layers/sha256/$r/link" ] ||
          [ -f "$m/revisions/sha256/$r/link" ]; then v=ok
        else v=no-link; fi
        echo "ref $repo sha256:$hex $ref $v"
      done
  done
  for link in "$repo"/_layers/sha256/*/link; do
    [ -e "$link" ] || continue
    hex=$(hex_of "$link") || { echo "bad $link"; continue; }
    if blob "$hex"; then v=ok; else v=no-blob; fi
    echo "layer $repo sha256:$hex $v"
  done
done <<<"$repos"
"""


class RegistryError(OpsError):
    """skopeo or the registry's API failed, or a registry's storage could not be read."""


# --- skopeo, the one client -------------------------------------------------------------------


def skopeo(args: Sequence[str], timeout: float = 120.0) -> str:
    """Run ``skopeo ARGS``; its stdout, or :class:`RegistryError` with its last words."""
    binary = shutil.which("skopeo")
    if binary is None:
        raise RegistryError("skopeo is not installed: run scripts/host-deps.sh")
    try:
        done = subprocess.run(
            [binary, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RegistryError(f"skopeo {args[0]} took over {timeout:.0f} s") from exc
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RegistryError(f"skopeo {' '.join(args[:1])} {args[-1]}: {said}")
    return done.stdout


def reference(address: str, repo: str, tag: str = "", digest: str = "") -> str:
    """``docker://ADDRESS/REPO:TAG`` (or ``@DIGEST``)."""
    return f"docker://{address}/{repo}" + (f"@{digest}" if digest else f":{tag}")


# --- images, pushes, deletes ------------------------------------------------------------------


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return digest, len(data)


def _layer(rng: random.Random, size: int) -> tuple[bytes, str]:
    """A gzipped tar of one random file; and the digest of the tar (its diff id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        payload = rng.randbytes(size)
        info = tarfile.TarInfo(f"data/{rng.getrandbits(64):016x}.bin")
        info.size, info.mtime, info.mode = len(payload), 0, 0o644
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def make_image(layout: Path, rng: random.Random | None = None, ref: str = "latest") -> str:
    """A small random image (one or two layers) as an OCI layout at ``layout``; its manifest
    digest. No pull, no daemon: the files are written here."""
    rng = rng or random.Random(os.urandom(8))  # noqa: S311 - content, not a secret
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    layers, diff_ids = [], []
    for _ in range(rng.choice((1, 2))):
        data, diff_id = _layer(rng, rng.randrange(1024, 16384))
        digest, size = _blob(layout, data)
        layers.append({"mediaType": OCI_LAYER, "digest": digest, "size": size})
        diff_ids.append(diff_id)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"gitlab-dr": f"{rng.getrandbits(64):016x}"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_digest, config_size = _blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    }
    digest, size = _blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return digest


def push(address: str, repo: str, tag: str, layout: Path, ref: str = "latest") -> str:
    """Push the OCI layout's image as ``repo:tag`` over plain HTTP; the digest the registry
    acknowledged (skopeo's ``--digestfile``)."""
    digestfile = layout / f".digest-{tag}"
    skopeo(
        [
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--digestfile",
            str(digestfile),
            f"oci:{layout}:{ref}",
            reference(address, repo, tag),
        ]
    )
    return digestfile.read_text().strip()


def delete(address: str, repo: str, tag: str) -> None:
    """Delete the manifest ``repo:tag`` names, through the registry's API (and so the tag)."""
    skopeo(["delete", "--tls-verify=false", reference(address, repo, tag)])


def digest_of(address: str, repo: str, tag: str) -> str | None:
    """The digest of the manifest ``repo:tag`` serves now; None when there is no such tag."""
    try:
        raw = skopeo(["inspect", "--raw", "--tls-verify=false", reference(address, repo, tag)])
    except RegistryError as exc:
        if "manifest unknown" in str(exc) or "not found" in str(exc).lower():
            return None
        raise
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def pull(address: str, repo: str, digest: str, dest: Path) -> None:
    """Pull ``repo@digest`` (manifest and every blob, each checked against its digest)."""
    skopeo(
        [
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            reference(address, repo, digest=digest),
            f"dir:{dest}",
        ]
    )


def answers(address: str, timeout: float = 5.0) -> bool:
    """Whether the registry at ``address`` answers its API's ``/v2/`` with 200."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=timeout) as r:
            return int(r.status) == 200
    except (urllib.error.URLError, OSError):
        return False


# --- what was written, and what must be there ---------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One write to a tag: a push of ``digest`` or a delete of it; ``at`` (epoch seconds) when
    it was acknowledged, or when it was tried if ``acked`` is False (it may have landed)."""

    kind: str  # "push" or "delete"
    repo: str
    tag: str
    digest: str
    at: float
    acked: bool = True

    @property
    def key(self) -> str:
        return f"{self.repo}:{self.tag}"

    @property
    def leaves(self) -> str | None:
        """What the tag names after this write: the digest, or None after a delete."""
        return self.digest if self.kind == "push" else None


@dataclass(frozen=True)
class TagExpectation:
    """A tag acknowledged before an instant: what it named then (None: deleted), and what a
    write after it (acknowledged later, or never) may have left instead."""

    digest: str | None
    allowed: frozenset[str | None]


def expected_tags(events: Iterable[Event], before: float) -> dict[str, TagExpectation]:
    """For every tag with a write acknowledged before ``before``, what it must name (pure).
    ``events`` are in the order they were made; one tag's writes are never concurrent."""
    by_tag: dict[str, list[Event]] = {}
    for event in events:
        by_tag.setdefault(event.key, []).append(event)
    out: dict[str, TagExpectation] = {}
    for key, writes in by_tag.items():
        last = max((i for i, e in enumerate(writes) if e.acked and e.at < before), default=-1)
        if last < 0:
            continue
        later = frozenset(e.leaves for e in writes[last + 1 :])
        out[key] = TagExpectation(writes[last].leaves, later | {writes[last].leaves})
    return out


def tag_verdict(expect: TagExpectation, seen: str | None) -> str:
    """``ok``, ``newer`` (a later write's), ``lost`` (the push is not there) or ``undeleted``."""
    if seen == expect.digest:
        return "ok"
    if seen in expect.allowed:
        return "newer"
    return "lost" if expect.digest is not None else "undeleted"


# --- the load ---------------------------------------------------------------------------------


@dataclass
class RegistryWritten:
    events: list[Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def acknowledged(self, kind: str) -> int:
        return sum(1 for e in self.events if e.acked and e.kind == kind)


class RegistryLoad:
    """Pushes to the registry at ``address`` as users do: new tags, tags pushed again with new
    content, tags deleted. One write at a time, each recorded when tried and when acknowledged."""

    def __init__(self, address: str, repos: Sequence[str] = ("drill/app", "drill/group/tool")):
        self.address, self.repos = address, tuple(repos)
        self.written = RegistryWritten()
        self.tags: dict[str, str] = {}  # key -> digest, as acknowledged
        self.rng = random.Random(os.urandom(8))  # noqa: S311 - content, not a secret
        self._work = Path(tempfile.mkdtemp(prefix="gitlab-dr-registry-"))
        self._lock = threading.Lock()

    def _record(self, event: Event) -> None:
        with self._lock:
            self.written.events.append(event)

    def push(self, repo: str, tag: str) -> str:
        layout = self._work / f"{repo.replace('/', '_')}-{tag}-{len(self.written.events)}"
        local = make_image(layout, self.rng)
        self._record(Event("push", repo, tag, local, time.time(), acked=False))
        acked = push(self.address, repo, tag, layout)
        self._record(Event("push", repo, tag, acked, time.time()))
        self.tags[f"{repo}:{tag}"] = acked
        shutil.rmtree(layout, ignore_errors=True)
        return acked

    def delete(self, repo: str, tag: str) -> None:
        digest = self.tags[f"{repo}:{tag}"]
        self._record(Event("delete", repo, tag, digest, time.time(), acked=False))
        delete(self.address, repo, tag)
        self._record(Event("delete", repo, tag, digest, time.time()))
        del self.tags[f"{repo}:{tag}"]

    def step(self, n: int) -> None:
        """One write: mostly pushes (new tags, then the same tags again), every fifth a delete."""
        repo = self.repos[n % len(self.repos)]
        tag = f"v{(n // len(self.repos)) % 4}"
        try:
            if n % 5 == 4 and f"{repo}:{tag}" in self.tags:
                self.delete(repo, tag)
            else:
                self.push(repo, tag)
        except RegistryError as exc:  # the master may die mid-push: tried, not acknowledged
            self.written.errors.append(str(exc))


# --- checks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pulls:
    """Every tag acknowledged before an instant, asked through the public address."""

    expected: int
    pulled: int  # tags whose digest pulled whole
    deleted: int  # tags deleted before the instant that stay deleted
    newer: int  # tags serving a later write's digest
    wrong: tuple[str, ...]


def pull_expected(
    address: str, expected: Mapping[str, TagExpectation], work: Path | None = None
) -> Pulls:
    """Through ``address``: what each tag serves (``skopeo inspect --raw``) against what it
    named at the instant, and a pull of that digest (manifest and every blob, checked)."""
    work = work or Path(tempfile.mkdtemp(prefix="gitlab-dr-pull-"))
    wrong: list[str] = []
    pulled = deleted = newer = 0
    for key, expect in sorted(expected.items()):
        repo, _, tag = key.rpartition(":")
        try:
            seen = digest_of(address, repo, tag)
            verdict = tag_verdict(expect, seen)
            if seen is not None and verdict in ("ok", "newer"):
                pull(address, repo, seen, work / f"{repo.replace('/', '_')}-{tag}")
                pulled += 1
        except RegistryError as exc:
            wrong.append(f"{key}: {exc}")
            continue
        deleted += seen is None and verdict == "ok"
        newer += verdict == "newer"
        if verdict not in ("ok", "newer"):
            wrong.append(f"{key} {verdict} (wanted {expect.digest}, serves {seen})")
    shutil.rmtree(work, ignore_errors=True)
    return Pulls(len(expected), pulled, deleted, newer, tuple(wrong))


def check_promoted(
    address: str,
    container: Container,
    expected: Mapping[str, TagExpectation],
    errors: Sequence[str] = (),
) -> Check:
    """The drill's check of a promoted registry: every tag acknowledged before the snapshot's
    instant pulls with its digest through ``address``, every link in the container's registry
    storage resolves to a blob, and no tag is left half deleted. No tag acknowledged at all
    fails it: it would prove nothing (``errors``: the load's, to say why)."""
    if not expected:
        why = f": {errors[0]}" if errors else ""
        return Check(
            "registry",
            False,
            f"no tag was acknowledged before the snapshot{why}",
            "is skopeo installed (scripts/host-deps.sh), and the stand-in image rebuilt?",
        )
    try:
        pulls = pull_expected(address, expected)
        links = links_in_container(container)
    except OpsError as exc:
        return Check("registry", False, str(exc), "the registry did not answer")
    detail = (
        f"{pulls.pulled} tags pulled with their digests, {len(links.dangling)} dangling links"
        f" ({pulls.deleted} deleted tags stay deleted, {pulls.newer} with a later push's,"
        f" {links.links} links checked)"
    )
    # The restore finishes the deletes its snapshot caught half done: none may be left listed.
    half = [f"{tag} half deleted" for tag in links.deleting]
    problems = [*pulls.wrong[:3], *links.dangling[:3], *half[:3]]
    if problems:
        return Check(
            "registry",
            False,
            f"{detail}; {len(pulls.wrong)} of {pulls.expected} tags wrong: {problems}",
            "a tag acknowledged before the snapshot's instant is lost, a link dangles, or a "
            "delete under way at the snapshot's instant was left listed",
        )
    return Check("registry", True, detail)


@dataclass(frozen=True)
class Links:
    """What :data:`LINK_SCRIPT` saw: every tag's digest and every link that does not resolve."""

    tags: Mapping[str, str]  # "repo:tag" -> digest its link holds
    links: int  # links and manifest references checked
    dangling: tuple[str, ...]
    manifests: frozenset[str] = frozenset()  # "repo@digest" of manifests linked, blob there
    deleting: tuple[str, ...] = ()  # "repo:tag" caught inside a delete (its revision link gone)

    @property
    def ok(self) -> bool:
        return not self.dangling

    def holds(self, repo: str, digest: str) -> str:
        """Whether ``repo@digest`` pulls whole from this storage: ``ok``, ``missing`` (no such
        manifest) or ``incomplete`` (a blob it names is not there, or not linked)."""
        if f"{repo}@{digest}" not in self.manifests:
            return "missing"
        prefix = f"ref {repo} {digest} "
        return "incomplete" if any(d.startswith(prefix) for d in self.dangling) else "ok"


def parse_links(output: str) -> Links:
    """:data:`LINK_SCRIPT`'s lines (pure)."""
    tags: dict[str, str] = {}
    dangling: list[str] = []
    deleting: list[str] = []
    manifests: set[str] = set()
    links = 0
    for line in output.splitlines():
        fields = line.split()
        if not fields or fields == ["none"]:
            continue
        kind, verdict = fields[0], fields[-1]
        if kind == "bad":
            dangling.append(f"unreadable link {fields[1]}")
            continue
        if kind not in ("tag", "revision", "ref", "layer") or len(fields) < 4:
            raise RegistryError(f"the link check said {line!r}")
        links += 1
        if kind == "tag" and verdict == "no-revision":
            deleting.append(f"{fields[1]}:{fields[2]}")
            continue
        if kind == "tag":
            tags[f"{fields[1]}:{fields[2]}"] = fields[3]
        if kind == "revision" and verdict == "ok":
            manifests.add(f"{fields[1]}@{fields[2]}")
        if verdict != "ok":
            dangling.append(f"{kind} {' '.join(fields[1:-1])}: {verdict}")
    return Links(tags, links, tuple(dangling), frozenset(manifests), tuple(deleting))


def links_in_directory(storage: Path) -> Links:
    """The link check on a registry's storage folder here (e.g. in a snapshot)."""
    done = subprocess.run(
        ["bash", "-c", LINK_SCRIPT, "registry-links", str(storage)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise RegistryError(f"the link check of {storage} failed: {done.stderr.strip()[-300:]}")
    return parse_links(done.stdout)


def links_in_container(container: Container, storage: str = STORAGE) -> Links:
    """The link check on a registry's storage in a container (a GitLab, or the stand-in image)."""
    result = gl.run_in(container, ["bash", "-c", LINK_SCRIPT, "registry-links", storage])
    if not result.ok:
        raise RegistryError(f"the link check of {storage} failed: {result.output.strip()[-300:]}")
    return parse_links(result.output)


def check_links(links: Links) -> Check:
    if links.dangling:
        return Check(
            "registry links",
            False,
            f"{len(links.dangling)} dangling of {links.links}: {list(links.dangling[:3])}",
            "a tag, manifest or layer link names a blob the copy lacks",
        )
    under_way = f", {len(links.deleting)} tag delete(s) under way" if links.deleting else ""
    return Check(
        "registry links",
        True,
        f"{links.links} links resolve to blobs, {len(links.tags)} tags, 0 dangling{under_way}",
    )


def check_tags(links: Links, expected: Mapping[str, TagExpectation]) -> Check:
    """Every tag acknowledged before the instant names, in the storage, what it named then (or
    what a later write left)."""
    bad = []
    for key, expect in sorted(expected.items()):
        verdict = tag_verdict(expect, links.tags.get(key))
        if verdict not in ("ok", "newer"):
            bad.append(f"{key} {verdict}")
    if bad:
        return Check(
            "registry tags",
            False,
            f"{len(bad)} of {len(expected)} wrong: {bad[:5]}",
            "a tag acknowledged before the snapshot's instant is lost",
        )
    return Check(
        "registry tags", True, f"all {len(expected)} tags acknowledged before the instant are there"
    )
