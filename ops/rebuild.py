"""``inv rebuild-slave``: a new slave for the new master, after a promotion.

By default a fresh instance is launched from the AMI (``inv launch`` plans exactly the missing
slave: the zone the master is not in, the pair's current epoch). With ``reuse``, a repaired
instance of the project (typically the fenced old master) is taken instead: it is tagged
``Role=slave`` at the current epoch and put in ``gitlab-slave``. Then the pair is made as
``inv pair`` makes it, and the first complete pass is awaited.
"""

from __future__ import annotations

from collections.abc import Callable

from ops import aws, inventory, launch, pair
from ops.errors import Refusal
from ops.promote import SLAVE_GROUP, Context, Flags, _swap_group
from ops.settings import Settings

Progress = Callable[[str], None]


def rebuild_slave(
    settings: Settings, progress: Progress, reuse: str = "", timeout: float = 600.0
) -> pair.PairResult:
    ec2 = aws.ec2_client(settings)
    state = inventory.describe_pair(settings, ec2)
    if state.master is None:
        raise Refusal("AWS has no instance tagged Role=master: promote a slave first")
    if state.slave is not None:
        raise Refusal(
            f"the pair already has a slave ({state.slave.instance_id}); "
            "inv pair repairs its pairing"
        )
    if reuse:
        found = next((h for h in state.hosts if h.instance_id == reuse), None)
        if found is None:
            raise Refusal(f"{reuse} is not an instance of project {settings.project_name}")
        if found.instance_id == state.master.instance_id:
            raise Refusal(f"{reuse} is the master; it cannot be its own slave")
        if found.state != "running":
            raise Refusal(f"{reuse} is {found.state}; start it first")
        epoch = str(state.epoch or 1)
        with aws.aws_errors("ec2 CreateTags", f"instance {reuse}"):
            ec2.create_tags(
                Resources=[reuse],
                Tags=[
                    {"Key": inventory.TAG_ROLE, "Value": "slave"},
                    {"Key": inventory.TAG_EPOCH, "Value": epoch},
                    {"Key": inventory.TAG_NAME, "Value": f"{settings.project_name}-slave"},
                ],
            )
        ctx = Context(settings, ec2, state, Flags(), progress)
        progress(_swap_group(ctx, reuse, launch.OPEN_GROUP, SLAVE_GROUP))
        progress(f"{reuse} is the slave again, at epoch {epoch}")
    else:
        report = launch.launch(settings)
        for line in report.lines():
            progress(line)
    return pair.pair(settings, progress=progress, timeout=timeout)
