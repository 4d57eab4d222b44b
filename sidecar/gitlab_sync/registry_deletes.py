"""Finish, in a restored GITLAB_HOME, the registry's deletes that its instant caught half done.

The registry deletes a manifest by removing its revision link first and then each tag link
that names it (``DeleteManifest`` in distribution's ``registry/handlers/manifests.go``). A
snapshot taken between the two, like a registry that crashed there, keeps tags whose manifest is
no longer in the repository: pulling one answers "manifest unknown", yet ``tags/list`` and
GitLab's registry page still list it. The delete was never acknowledged (its client waits for
the last step), so finishing it loses nothing that was acknowledged, and no blob is touched.
On the fallback path a file-by-file copy can hold the same shape for another reason: a push
that ended during the copy, after the snapshot's instant, whose revision link the walk had
passed before its tag link was written. The registry answers "manifest unknown" for that tag
too, and it is removed the same way. It runs on the promoted copy only: the snapshot it came
from stays as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gitlab_sync.filters import REGISTRY_BLOBS

REPOSITORIES = REGISTRY_BLOBS.removesuffix("/blobs") + "/repositories"
"""The registry's repositories in GITLAB_HOME (Omnibus's registry_path)."""


def half_deleted(home: Path) -> list[tuple[str, Path]]:
    """Each tag in ``home``'s registry whose manifest's revision link is gone, as ``repo:tag``
    and the tag's folder; sorted."""
    root = home / REPOSITORIES.lstrip("/")
    found = []
    for manifests in _manifest_folders(root):
        repo = manifests.parent.relative_to(root).as_posix()
        for tag in sorted((manifests / "tags").glob("*")):
            try:
                digest = (tag / "current" / "link").read_text().strip()
            except OSError:
                continue  # no link: nothing names a manifest here
            algorithm, _, hexdigest = digest.partition(":")
            if not (algorithm and hexdigest) or "/" in digest:
                continue  # not a digest: left to the link check to call dangling
            if not (manifests / "revisions" / algorithm / hexdigest / "link").is_file():
                found.append((f"{repo}:{tag.name}", tag))
    return found


def _manifest_folders(root: Path) -> list[Path]:
    """Each repository's ``_manifests`` under ``root``, sorted. A repository's name has no part
    starting with ``_`` (the registry's grammar), so the walk skips its ``_layers`` and
    ``_uploads`` (a link per layer) rather than reading them."""
    found = []
    for folder, names, _files in os.walk(root):
        if "_manifests" in names:
            found.append(Path(folder) / "_manifests")
        names[:] = [name for name in names if not name.startswith("_")]
    return sorted(found)


def finish(home: Path) -> list[str]:
    """Remove the tags :func:`half_deleted` finds, as the registry's delete would have; the
    ``repo:tag`` of each."""
    done = []
    for name, tag in half_deleted(home):
        shutil.rmtree(tag)
        done.append(name)
    return done
