"""Layouts as the sidecar reports them, for the unit tests: btrfs set up as the AMI sets it up,
and btrfs mounted without the option the sidecar needs (problem text as layout.detect has it)."""

from __future__ import annotations

from gitlab_sync.layout import Area, Layout

SNAPSHOTS = Layout(
    "snapshots",
    "btrfs: each pass freezes GITLAB_HOME at one instant; snapshots are subvolumes",
    [],
    Area("/source", "btrfs", True, "0:40", ["rw", "user_subvol_rm_allowed"]),
    Area("/sync", "btrfs", True, "0:40", ["rw", "user_subvol_rm_allowed"]),
)

PROBLEM = (
    "the btrfs filesystem of SYNC_HOME is mounted without user_subvol_rm_allowed: the sidecar "
    "could not delete old snapshots (add it to the mount options)"
)

WRONG = Layout(
    "fallback",
    f"btrfs is set up wrongly: {PROBLEM}",
    [PROBLEM],
    Area("/source", "btrfs", True, "0:41", ["rw"]),
    Area("/sync", "btrfs", True, "0:41", ["rw"]),
)
