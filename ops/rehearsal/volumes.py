"""The sandbox instances' data volumes: made by ``sandbox up``, removed by ``sandbox down``.

An AMI's host keeps GITLAB_HOME and SYNC_HOME as two subvolumes of one btrfs filesystem, its
EBS data volume; each sandbox instance gets the same in a sparse loop file
(:class:`~ops.rehearsal.loopfs.LoopBtrfs`, in ``instances/<name>``), so that the drill and the
tests run the sync's snapshots path. ``SANDBOX_FILESYSTEM=plain`` makes none: the stacks'
folders are then plain folders of this machine's filesystem, and the sync takes its fallback.

Removal finds the filesystems by the sandbox's folder, not by its record, so a lost
``state.json`` leaves no mount and no loop device behind.
"""

from __future__ import annotations

from ops.errors import SandboxError
from ops.progress import Progress
from ops.rehearsal.layout import FILESYSTEM_SIZE, NAMES, SUBVOLUMES, SandboxLayout
from ops.rehearsal.local import Cleanup


def make(layout: SandboxLayout, filesystem: str, progress: Progress) -> None:
    """Each instance's btrfs with its subvolumes (``filesystem`` "btrfs"), or nothing ("plain").
    A failure leaves what was made for :func:`remove` (``sandbox up`` then calls it)."""
    if filesystem == "plain":
        progress("data: plain folders (SANDBOX_FILESYSTEM=plain): the sync takes its fallback")
        return
    for name in NAMES:
        fs = layout.filesystem(name)
        try:
            fs.make(FILESYSTEM_SIZE, SUBVOLUMES)
        except SandboxError as exc:
            raise SandboxError(
                f"{exc} (SANDBOX_FILESYSTEM=plain runs the sandbox on plain folders)"
            ) from exc
        progress(
            f"data: instance {name} on btrfs in {fs.image} ({FILESYSTEM_SIZE}, sparse), "
            f"subvolumes {' and '.join(SUBVOLUMES)} in {fs.mountpoint}"
        )


def unmounted(layout: SandboxLayout, filesystem: str) -> list[str]:
    """A line for each instance filesystem of a btrfs sandbox that is not mounted."""
    if filesystem != "btrfs":
        return []
    return [
        f"instance {name}'s filesystem ({layout.filesystem(name).image}) is not mounted"
        for name in NAMES
        if not layout.filesystem(name).mounted()
    ]


def remove(layout: SandboxLayout, cleanup: Cleanup) -> bool:
    """Unmount, detach and delete every instance filesystem in the sandbox's folder; False when
    one is left (each named in ``cleanup``), so that its folder is kept for another try."""
    gone = True
    for name in NAMES:
        fs = layout.filesystem(name)
        if not fs.image.exists() and not fs.mounted():
            continue
        left = fs.remove()
        for line in left:
            cleanup.failed(f"instance {name}'s filesystem", line)
        if left:
            gone = False
        else:
            cleanup.done(f"unmounted and removed instance {name}'s filesystem ({fs.image})")
    return gone
