"""``inv rebuild-slave``: a new slave for the new master, after a promotion.

By default a fresh instance is launched from the AMI (``inv launch`` plans exactly the missing
slave: the zone the master is not in, the pair's current epoch). With ``reuse``, a repaired
instance of the project (typically the fenced old master) is taken instead: it is tagged
``Role=slave`` at the current epoch and put in ``gitlab-slave``. Then the pair is made as
``inv pair`` makes it, and the first complete pass is awaited.
"""

from __future__ import annotations

from ops.aws import client as aws
from ops.aws import inventory, launch
from ops.aws.inventory import OPEN_GROUP, SLAVE_GROUP
from ops.aws.writer import Ec2Writer
from ops.dr import pair
from ops.errors import Refusal
from ops.progress import Progress
from ops.settings import Settings


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
        epoch = state.epoch or 1
        writer = Ec2Writer(settings, ec2)
        progress(writer.tag_role(reuse, "slave", epoch))
        progress(writer.swap_group(reuse, OPEN_GROUP, SLAVE_GROUP))
        progress(f"{reuse} is the slave again, at epoch {epoch}")
    else:
        report = launch.launch(settings)
        for line in report.lines():
            progress(line)
    return pair.pair(settings, progress=progress, timeout=timeout)
