"""The hosts' layouts as ops judges them: which way each host syncs and why, what ``inv pair``
refuses, what ``inv status`` warns of, and how promotion restores.

A host's layout is its sidecar's :class:`~gitlab_sync.layout.Layout`, read from its mounts:
``snapshots`` (btrfs: a pass freezes GITLAB_HOME at one instant, the slave's snapshots are
subvolumes, promotion gives GitLab a writable snapshot) or ``fallback`` (no cheap snapshots:
PostgreSQL's backup API, refs first, hard-linked snapshots, a copy at promotion). btrfs set up
wrongly is the fallback too, with ``problems``: ``inv pair`` refuses such a host, since its
operator meant snapshots and would silently get the slow path. Pure: tests pass what they like.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gitlab_sync.layout import Layout
from ops.checks import Check

LABEL = {"snapshots": "snapshots from one instant", "fallback": "the fallback"}
"""How a method reads in a sentence."""

HOW = {
    "snapshot": "by a writable btrfs snapshot",
    "copy": "by a copy",
}
"""How a restore put the snapshot in GITLAB_HOME (the restore's ``method``), in a sentence."""


def parsed(data: Mapping[str, Any] | None) -> Layout | None:
    """A layout from its JSON; None when the sidecar did not say (an image from before
    snapshots prints no layout)."""
    if not data or "method" not in data:
        return None
    return Layout.from_json(dict(data))


def line(role: str, layout: Layout) -> str:
    """``ROLE: METHOD: WHY``, what ``inv pair`` prints for each host."""
    return f"{role}: {LABEL[layout.method]}: {layout.why}"


def refusal(layouts: Mapping[str, Layout]) -> str | None:
    """Why ``inv pair`` refuses (one sentence naming every host whose btrfs is set up wrongly),
    or None. ``layouts`` maps a host's name (its role and address) to its layout."""
    wrong = [f"{host}: {'; '.join(lay.problems)}" for host, lay in layouts.items() if lay.problems]
    if not wrong:
        return None
    return "; ".join(wrong) + "; fix btrfs and run inv pair again (nothing was paired)"


def notes(master: Layout, slave: Layout) -> list[str]:
    """What ``inv pair`` says of a pair that runs the fallback somewhere (and where)."""
    methods = {"master": master.method, "slave": slave.method}
    fallback = [role for role, method in methods.items() if method == "fallback"]
    if not fallback:
        return []
    if len(fallback) == 2:
        return ["both hosts run the fallback: no snapshots from one instant, a copy at promotion"]
    (role,) = fallback
    other = "slave" if role == "master" else "master"
    return [
        f"the hosts differ: the pair runs the fallback on the {role} only (snapshots on the "
        f"{other}); roles swap at promotion, and the fallback goes with that host"
    ]


def method_check(role: str, layout: Layout | None) -> Check:
    """``ROLE sync method``: which way the host syncs and why.

    A warning, never critical: a host with btrfs set up wrongly runs the fallback, which still
    keeps the slave's snapshots complete and promotable (only slower, and consistent by the
    backup API rather than one instant); a sync that really stops fails the critical
    ``sending``, ``receiving`` and ``last complete pass`` checks.
    """
    name = f"{role} sync method"
    if layout is None:
        return Check(
            name,
            False,
            "the sidecar does not say (its image is older than snapshots from one instant)",
            hint="update SYNC_IMAGE and run inv pair",
            critical=False,
        )
    detail = f"{layout.method}: {layout.why}"
    if layout.problems:
        return Check(
            name,
            False,
            detail,
            hint="fix btrfs as the AMI lays it out (one btrfs, subvolumes for GITLAB_HOME and "
            "SYNC_HOME, mounted user_subvol_rm_allowed), then restart gitlab-rsync",
            critical=False,
        )
    return Check(name, True, detail, critical=False)


def restore_plan(layout: Layout | None, snapshot: str = "the newest snapshot") -> str:
    """How promotion expects to restore ``snapshot``, from the slave's layout (the plan's
    text)."""
    if layout is None:
        return f"restore {snapshot} into GITLAB_HOME (the sidecar does not say how)"
    if layout.method == "snapshots":
        return f"GITLAB_HOME becomes a writable btrfs snapshot of {snapshot} (no copy)"
    return f"copy {snapshot} into GITLAB_HOME (the slave has no snapshots: {layout.why})"


def restored(detail: Mapping[str, Any]) -> str:
    """``restored snapshot X by a writable btrfs snapshot in 0.02 s``, from the journal, and
    the registry deletes the snapshot caught half done that the restore finished, if any."""
    method = str(detail.get("restore_method") or "copy")
    seconds = float(detail.get("restore_seconds") or 0.0)
    finished = list(detail.get("registry_deletes_finished") or [])
    deletes = (
        f" (finished {len(finished)} registry tag delete(s) under way at its instant: "
        f"{', '.join(finished[:3])}{', ...' if len(finished) > 3 else ''})"
        if finished
        else ""
    )
    return (
        f"restored snapshot {detail.get('snapshot')} {HOW.get(method, f'by {method}')} "
        f"in {seconds:.2f} s{deletes}"
    )
