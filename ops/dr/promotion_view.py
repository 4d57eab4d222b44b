"""What a promotion knows of the pair when it starts or resumes: an immutable :class:`View`.

Both hosts are read once, as ``inv status`` reads them (:func:`ops.dr.hostview.look`): the
slave's containers and its sidecar's typed status (newest snapshot, when the master was last
heard from, whether the snapshot holds ``gitlab-secrets.json``), the master's containers when
it answers. Promotion decides from the view; it never reads the sidecar's files.

With ``--snapshot``/``--before`` the view also holds the operator's :class:`~ops.dr.snapshots.
Choice`: the snapshot GitLab starts from is that one, and the window of writes lost runs from
its instant (the newest's own window, plus the choice's).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gitlab_sync.status import PassSummary, SidecarStatus, moment
from ops.aws.inventory import Instance, Role
from ops.dr import checks, sidecar, topology
from ops.dr.hostview import HostView, look, look_at_once
from ops.dr.snapshots import Choice
from ops.dr.topology import Absent, Side
from ops.errors import SettingError
from ops.hosts.engine import Engine
from ops.settings import Settings


@dataclass(frozen=True)
class Flags:
    """What the operator allows: each one names the refusal it overrides."""

    planned: bool = False
    accept_data_loss: bool = False
    allow_image_mismatch: bool = False
    skip_health_check: bool = False
    snapshot: str = ""
    """``--snapshot NAME``: start from that snapshot rather than the newest."""
    before: str = ""
    """``--before TIME``: start from the newest snapshot taken at or before TIME."""

    @property
    def chooses(self) -> bool:
        """Whether the operator chose a snapshot (rather than the newest)."""
        return bool(self.snapshot or self.before)


@dataclass(frozen=True)
class View:
    """The pair as a promotion sees it: the two instances, what each host showed, and now."""

    epoch: int
    master_id: str
    slave_id: str
    master: HostView
    slave: HostView
    wanted_image: str
    now: dt.datetime
    choice: Choice | None = None
    """The snapshot the operator chose (None: the newest)."""

    @property
    def master_error(self) -> str:
        """Why the master's engine did not answer (empty when it did)."""
        return self.master.error

    @property
    def master_reachable(self) -> bool:
        return not self.master.error

    @property
    def slave_error(self) -> str:
        return self.slave.error

    @property
    def slave_status(self) -> SidecarStatus | None:
        return self.slave.sync

    @property
    def slave_healthy(self) -> bool:
        return checks.sidecar_alive(self.slave).ok

    @property
    def slave_health(self) -> str:
        return "not reachable" if self.slave.error else checks.sidecar_alive(self.slave).detail

    @property
    def slave_image(self) -> str | None:
        gitlab = self.slave.service(sidecar.GITLAB)
        return gitlab.image if gitlab else None

    @property
    def master_image(self) -> str | None:
        gitlab = self.master.service(sidecar.GITLAB)
        return gitlab.image if gitlab else None

    @property
    def secrets_present(self) -> bool:
        """Whether the slave's newest snapshot holds ``config/gitlab-secrets.json``."""
        return bool(self.slave.sync and self.slave.sync.secrets_present)

    @property
    def last_complete(self) -> PassSummary | None:
        """The slave's newest complete snapshot, as a pass."""
        return self.slave.sync.last_complete if self.slave.sync else None

    @property
    def newest(self) -> str | None:
        """The name of the slave's newest complete snapshot."""
        last, status = self.last_complete, self.slave.sync
        return (last.snapshot if last else "") or (status.current if status else None) or None

    @property
    def snapshot(self) -> str | None:
        """The snapshot GitLab starts from: the chosen one, else the newest."""
        return self.choice.snapshot.name if self.choice else self.newest

    @property
    def newest_started(self) -> dt.datetime | None:
        """When the pass that made the newest snapshot began."""
        return self.last_complete.started if self.last_complete else None

    @property
    def snapshot_started(self) -> dt.datetime | None:
        """The instant of the snapshot GitLab starts from (its pass's start)."""
        return self.choice.snapshot.instant if self.choice else self.newest_started

    @property
    def choice_window(self) -> float:
        """Seconds of writes the choice loses: from its snapshot's instant to the newest's."""
        return self.choice.lost_seconds if self.choice else 0.0

    @property
    def last_contact(self) -> dt.datetime | None:
        """The last time the slave heard from the master."""
        text = self.slave.sync.last_contact if self.slave.sync else None
        return moment(text) if text else None

    @property
    def snapshot_age(self) -> float | None:
        return checks.snapshot_age(self.last_complete, self.now)

    @property
    def until(self) -> dt.datetime | None:
        """The last moment the master may have taken writes the slave did not get: now while
        it answers, else when it was last heard from."""
        if self.master_reachable:
            return self.now
        return self.last_contact or self.newest_started

    @property
    def window(self) -> float | None:
        """Seconds of writes the snapshot may miss: from its pass's start to ``until`` (with a
        choice, that includes the choice's window)."""
        if self.snapshot_started is None or self.until is None:
            return None
        return max(0.0, (self.until - self.snapshot_started).total_seconds())


def _side(settings: Settings, instance: Instance, role: Role) -> Side | Absent:
    if instance.state != "running":
        return Absent(role, f"instance {instance.instance_id} is {instance.state}")
    try:
        return topology.instance_side(
            role, settings, instance.instance_id, instance.public_ip, instance.private_ip
        )
    except SettingError as exc:
        return Absent(role, str(exc))


def slave_side(settings: Settings, slave: Instance) -> Side | Absent:
    """Where the slave ``slave`` is reached (for its snapshots' list)."""
    return _side(settings, slave, "slave")


def read_view(
    settings: Settings,
    epoch: int,
    master: Instance,
    slave: Instance,
    now: dt.datetime,
    choice: Choice | None = None,
    slave_engine: Engine | None = None,
) -> View:
    """Everything the decisions need, read once: the slave's host, and the master's if up, at
    the same time. ``slave_engine``: the slave's, already open (the caller closes it)."""
    seen_master, seen_slave = look_at_once(
        lambda: look(_side(settings, master, "master"), read_sync=False),
        lambda: look(_side(settings, slave, "slave"), engine=slave_engine),
    )
    return View(
        epoch=epoch,
        master_id=master.instance_id,
        slave_id=slave.instance_id,
        master=seen_master,
        slave=seen_slave,
        wanted_image=settings.gitlab_image,
        now=now,
        choice=choice,
    )
