"""The rsync filters of a pass.

From a frozen snapshot (one instant): the whole tree but PostgreSQL's pid file, options file
and socket (:func:`frozen_excludes`). On the fallback (a live tree): refs first, then everything
else but the registry's blobs, then (after pg_backup_stop) the same again and PostgreSQL's WAL,
and the registry's blobs last.
"""

from __future__ import annotations

from collections.abc import Sequence

from gitlab_sync import pg

# Paths in the rsync filters are anchored at the root of the transfer: GITLAB_HOME.
REPOSITORIES = "/data/git-data/repositories"
# The container registry's blobs (Omnibus's default registry_path): the files its links name.
REGISTRY_BLOBS = "/data/gitlab-rails/shared/registry/docker/registry/v2/blobs"
# What a ref is, in the two filter forms the passes need: excluded from the second pass with
# ``refs/**`` (the refs directory itself still arrives, so a new repository is never broken),
# included in the first with ``refs/***`` (the directory and all in it) inside a ``*.git``.
_REF_PATTERNS = ("**/packed-refs", "**/refs/**", "**/reftable/**")
_REF_ENTRIES = ("HEAD", "packed-refs", "refs/***", "reftable/***")  # in a repository


def refs_filters() -> list[str]:
    """The first rsync of a pass: every repository's refs, HEAD and packed-refs, nothing else.

    Copied before the objects, refs in a snapshot only name objects that existed when they
    were read (git writes objects before it moves a ref), and those are in the later copy.
    Inside a repository (a ``*.git`` directory) nothing else is even listed: walking every
    objects directory here would double the cost of a pass on a large tree.
    """
    parents = ["/data/", "/data/git-data/", f"{REPOSITORIES}/"]
    rules = [f"--include={p}" for p in parents]
    rules += [f"--include={REPOSITORIES}/**.git/{p}" for p in _REF_ENTRIES]
    rules += [f"--exclude={REPOSITORIES}/**.git/*", f"--include={REPOSITORIES}/**/"]
    return [*rules, "--exclude=*"]


def not_refs_filters() -> list[str]:
    """The second rsync: everything but the refs (already there, and protected from --delete
    because they are excluded).

    HEAD is copied again: a repository created after the first rsync then arrives whole but
    with no refs (an empty repository, as it was when the pass began), never as a directory
    git does not recognise. HEAD names a branch, not an object.
    """
    return [f"--exclude={REPOSITORIES}/{p}" for p in _REF_PATTERNS]


def not_blobs_filters() -> list[str]:
    """Steps 3 and 5 leave the registry's blobs to the last step (and protect them there
    from ``--delete``)."""
    return [f"--exclude={REGISTRY_BLOBS}/"]


def files_filters(backup: bool) -> list[str]:
    """Step 3 of a fallback pass: everything but the refs and the registry's blobs, and, in a
    base backup, but what one leaves out."""
    return [*not_refs_filters(), *not_blobs_filters(), *(postgres_excludes() if backup else [])]


def registry_blobs_filters() -> list[str]:
    """The last rsync of a fallback pass: the registry's blobs, nothing else.

    The registry writes a blob before any link to it (a layer's, a manifest's revision, a
    tag), and never deletes one while it runs (garbage collection is offline). Copied after
    every link the pass copied, each of those links finds its blob; copied in the same walk
    as the links, blobs sort first and a push between the two left a tag naming a manifest
    the copy lacked.
    """
    return [*_included_parents(REGISTRY_BLOBS), f"--include={REGISTRY_BLOBS}/***", "--exclude=*"]


def _included_parents(path: str) -> list[str]:
    """The ``--include`` of each folder above ``path`` (anchored), so rsync walks down to it."""
    parts = path.strip("/").split("/")[:-1]
    return [f"--include=/{'/'.join(parts[: i + 1])}/" for i in range(len(parts))]


def frozen_excludes() -> list[str]:
    """What a pass from a frozen snapshot leaves out: the server's pid and options files, its
    socket and the socket's lock file. The copy is a crash image; PostgreSQL starts it by its
    ordinary crash recovery, and a stale ``postmaster.pid`` would only get in its way."""
    data = f"/{pg.DATA_DIR}"
    return [
        f"--exclude={data}/postmaster.pid",
        f"--exclude={data}/postmaster.opts",
        f"--exclude=/{pg.SOCKET_DIR}/.s.PGSQL.*",
    ]


def after_stop_filters() -> list[str]:
    """The rsync after pg_backup_stop: everything again but the refs (kept as the first step
    read them) and PostgreSQL's data directory (kept as the backup copied it), so that a file
    written before the stop, which a row of the backup may name, is in the snapshot."""
    return [
        *not_refs_filters(),
        *not_blobs_filters(),
        f"--exclude=/{pg.DATA_DIR}/",
        f"--exclude=/{pg.SOCKET_DIR}/.s.PGSQL.*",
    ]


def postgres_excludes() -> list[str]:
    """What a base backup leaves out, plus the server's socket and its lock file."""
    data = f"/{pg.DATA_DIR}"
    rules = [f"--exclude={data}/{p}" for p in pg.BACKUP_EXCLUDES]
    return [*rules, f"--exclude=/{pg.SOCKET_DIR}/.s.PGSQL.*"]


def wal_filters(skip: Sequence[str] = ()) -> list[str]:
    """The last rsync of a backup pass, after pg_backup_stop: pg_wal only, but the ``skip``
    segments and archive_status's contents (the copy's server needs neither)."""
    return [
        *(f"--exclude=/{pg.DATA_DIR}/pg_wal/{name}" for name in skip),
        f"--exclude=/{pg.DATA_DIR}/pg_wal/archive_status/*",
        *_included_parents(f"/{pg.DATA_DIR}/pg_wal"),
        f"--include=/{pg.DATA_DIR}/pg_wal/***",
        "--exclude=*",
    ]
