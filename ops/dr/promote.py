"""``inv promote-slave``: the hand-written disaster-recovery procedure, as one command.

Steps, in order, each idempotent and recorded in a journal (``STATE_DIR/promotions``) so that a
promotion cut short resumes where it stopped and never does a step twice:

1. preflight: the slave is healthy, runs the same GitLab image, and its newest snapshot holds
   ``gitlab-secrets.json``;
2. freshness: when that snapshot's pass began, and when the master was last heard from;
3. stop-master-sync: when the master answers (``--planned``: GitLab stopped and a final pass);
4. fence-master: ``gitlab-open`` swapped for ``gitlab-slave``, its GitLab stopped and its
   restart policy set to "no" when the host answers;
5. start-slave-gitlab: the slave stops receiving, the newest snapshot is restored into
   GITLAB_HOME, GitLab starts and becomes healthy;
6. open-slave: ``gitlab-slave`` swapped for ``gitlab-open``;
7. move-address-and-tags: the Elastic IP moves, the epoch goes up, the slave becomes master and
   the old master is tagged ``fenced``; the RTO ends when the public URL answers ready;
8. report: every step's time, RTO, RPO, what is left, and a post-mortem bundle.

Decisions are made from an immutable :class:`View` of the pair; refusals are sentences.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ops.aws import client as aws
from ops.aws import inventory
from ops.aws.inventory import FENCED, OPEN_GROUP, SLAVE_GROUP, PairState
from ops.aws.writer import Ec2Writer
from ops.dr import sidecar, topology
from ops.errors import AwsError, OpsError, Refusal
from ops.hosts.engine import Engine, Host
from ops.progress import Progress
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

STEPS = (
    "preflight",
    "freshness",
    "stop-master-sync",
    "fence-master",
    "start-slave-gitlab",
    "open-slave",
    "move-address-and-tags",
    "report",
)
KILL_AFTER = "GITLAB_DR_KILL_AFTER_STEP"
"""Testing aid: the process SIGKILLs itself right after journaling the step this names."""


def _parse(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment else None


@dataclass(frozen=True)
class Flags:
    planned: bool = False
    accept_data_loss: bool = False
    allow_image_mismatch: bool = False
    skip_health_check: bool = False


@dataclass(frozen=True)
class View:
    """What is known of the pair when a promotion starts or resumes."""

    epoch: int
    master_id: str
    slave_id: str
    master_error: str  # empty when the master's engine answered
    slave_error: str
    slave_sync: dict[str, Any]
    slave_healthy: bool
    slave_health: str
    slave_image: str | None
    master_image: str | None
    wanted_image: str
    secrets_present: bool
    snapshot: str | None
    snapshot_started: dt.datetime | None
    last_contact: dt.datetime | None  # the last time the master was heard from
    now: dt.datetime

    @property
    def master_reachable(self) -> bool:
        return not self.master_error

    @property
    def snapshot_age(self) -> float | None:
        return (self.now - self.snapshot_started).total_seconds() if self.snapshot_started else None

    @property
    def window(self) -> float | None:
        """Seconds of writes the snapshot may miss: from its pass's start to the last contact."""
        if self.snapshot_started is None:
            return None
        until = self.now if self.master_reachable else (self.last_contact or self.snapshot_started)
        return max(0.0, (until - self.snapshot_started).total_seconds())


def preflight_refusals(view: View, flags: Flags) -> list[str]:
    """Why step 1 refuses, as sentences naming the flag that goes on anyway."""
    out = []
    if view.slave_error:
        out.append(f"the slave's host does not answer ({view.slave_error}); nothing to promote on")
    elif not view.slave_healthy and not flags.skip_health_check:
        out.append(
            f"the slave is not healthy ({view.slave_health}); pass --skip-health-check to go on"
        )
    if view.snapshot is None:
        out.append("the slave has no complete snapshot; there is nothing to start GitLab from")
    elif not view.secrets_present and not flags.accept_data_loss:
        out.append(
            "gitlab-secrets.json is missing from the slave's newest snapshot: GitLab "
            "would lose its encrypted data; pass --accept-data-loss to go on"
        )
    images = {i for i in (view.slave_image, view.master_image) if i} | {view.wanted_image}
    if len(images) > 1 and not flags.allow_image_mismatch:
        out.append(
            f"the GitLab images differ ({', '.join(sorted(images))}); "
            "pass --allow-image-mismatch to go on"
        )
    return out


def freshness_refusals(view: View, flags: Flags, stale_after: float) -> list[str]:
    """Why step 2 refuses: a snapshot older than STALE_AFTER (unless a final pass will run)."""
    age = view.snapshot_age
    if age is None or age <= stale_after or flags.accept_data_loss:
        return []
    if flags.planned and view.master_reachable:
        return []  # the final pass brings it up to date
    return [
        f"the slave's newest snapshot is {age:.0f} s old (STALE_AFTER is {stale_after:g} s); "
        "pass --accept-data-loss to go on"
    ]


class Journal:
    """One promotion's record: which steps are done, when, and what they found."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data

    @classmethod
    def folder(cls, settings: Settings) -> Path:
        return Path(settings.state_dir) / "promotions"

    @classmethod
    def open_for(cls, settings: Settings, state: PairState) -> Journal | None:
        """The unfinished promotion of this project, or the finished one for this epoch."""
        folder = cls.folder(settings)
        if not folder.is_dir():
            return None
        found = []
        for path in sorted(folder.glob(f"{settings.project_name}-epoch*.json")):
            data = json.loads(path.read_text())
            if not data.get("done") or data.get("to_epoch") == state.epoch:
                found.append(cls(path, data))
        unfinished = [j for j in found if not j.data.get("done")]
        chosen = unfinished or found
        return chosen[-1] if chosen else None

    @classmethod
    def new(cls, settings: Settings, view: View, flags: Flags, started: dt.datetime) -> Journal:
        path = cls.folder(settings) / f"{settings.project_name}-epoch{view.epoch}.json"
        data = {
            "project": settings.project_name,
            "from_epoch": view.epoch,
            "to_epoch": view.epoch + 1,
            "master": view.master_id,
            "slave": view.slave_id,
            "planned": flags.planned,
            "started_at": _iso(view.now),
            "steps": {},
            "done": False,
        }
        journal = cls(path, data)
        journal.save()
        return journal

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        tmp.replace(self.path)

    def done(self, step: str) -> bool:
        return step in self.data["steps"]

    def record(self, step: str, started: float, ended: float, detail: dict[str, Any]) -> None:
        self.data["steps"][step] = {
            "seconds": round(ended - started, 3),
            "ended_at": _iso(dt.datetime.now(dt.UTC)),
            **detail,
        }
        self.save()


@dataclass
class Context:
    settings: Settings
    ec2: EC2Client
    state: PairState
    flags: Flags
    progress: Progress
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))

    @property
    def writer(self) -> Ec2Writer:
        return Ec2Writer(self.settings, self.ec2)


# --- reading the pair ---------------------------------------------------------------------------


def _host(
    ctx: Context, instance: inventory.Instance, role: inventory.Role
) -> tuple[Host, Settings]:
    """How to reach ``instance``'s engine (address and per-host settings)."""
    side = topology.instance_side(role, ctx.settings, instance.instance_id, instance.public_ip)
    return side.host, side.settings


def _try(engine_for: Callable[[], Engine]) -> tuple[Engine | None, str]:
    try:
        return engine_for(), ""
    except OpsError as exc:
        return None, str(exc)


def read_view(ctx: Context, master: inventory.Instance, slave: inventory.Instance) -> View:
    """Everything the decisions need, read once: AWS, the slave's engine, the master's if up."""
    slave_engine, slave_error = _try(lambda: Engine.open(*_host(ctx, slave, "slave")))
    master_engine: Engine | None = None
    master_error = f"instance {master.instance_id} is {master.state}"
    if master.state == "running":
        master_engine, master_error = _try(lambda: Engine.open(*_host(ctx, master, "master")))
    try:
        sync: dict[str, Any] = {}
        healthy, health, image, secrets = False, "not reachable", None, False
        if slave_engine is not None:
            try:
                sync = sidecar.run_json(slave_engine, "status")
                healthy = bool(sync.get("daemon", {}).get("alive"))
                health = "sidecar alive" if healthy else "the sidecar's daemon is not running"
                gitlab = next((s for s in slave_engine.ps() if s.service == sidecar.GITLAB), None)
                image = gitlab.image if gitlab else None
                check = slave_engine.exec(
                    sidecar.SERVICE, ["test", "-f", "/sync/current/config/gitlab-secrets.json"]
                )
                secrets = check.exit_code == 0
            except OpsError as exc:
                health = str(exc)
        master_image = None
        if master_engine is not None:
            gitlab = next((s for s in master_engine.ps() if s.service == sidecar.GITLAB), None)
            master_image = gitlab.image if gitlab else None
        last = sync.get("last_complete") or {}
        contact = _last_contact(ctx, slave_engine)
        return View(
            epoch=ctx.state.epoch or 1,
            master_id=master.instance_id,
            slave_id=slave.instance_id,
            master_error="" if master_engine else master_error,
            slave_error=slave_error,
            slave_sync=sync,
            slave_healthy=healthy,
            slave_health=health,
            slave_image=image,
            master_image=master_image,
            wanted_image=ctx.settings.gitlab_image,
            secrets_present=secrets,
            snapshot=last.get("name") or sync.get("current"),
            snapshot_started=_parse(last.get("started_at")),
            last_contact=contact,
            now=ctx.now(),
        )
    finally:
        for engine in (slave_engine, master_engine):
            if engine is not None:
                engine.close()


def _last_contact(ctx: Context, engine: Engine | None) -> dt.datetime | None:
    """When the slave last heard from the master (its last received or attempted pass)."""
    if engine is None:
        return None
    out = engine.exec(sidecar.SERVICE, ["cat", "/state/receiver.json", "/sync/.incoming.json"])
    times = []
    for chunk in out.stdout.decode(errors="replace").replace("}\n{", "}\x00{").split("\x00"):
        try:
            data = json.loads(chunk)
        except json.JSONDecodeError:
            continue
        times += [t for t in (_parse(data.get("at")), _parse(data.get("started_at"))) if t]
    return max(times, default=None)


# --- the steps ----------------------------------------------------------------------------------


def _engine(ctx: Context, journal: Journal, role: inventory.Role) -> Engine:
    instance = next(h for h in ctx.state.hosts if h.instance_id == journal.data[role])
    return Engine.open(*_host(ctx, instance, role))


def step_stop_master_sync(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    if not view.master_reachable:
        return {"skipped": f"master unreachable: {view.master_error}"}
    with _engine(ctx, journal, "master") as master:
        detail: dict[str, Any] = {}
        if ctx.flags.planned:
            ctx.progress("master: stopping GitLab for the final pass")
            master.container(sidecar.GITLAB).stop(timeout=120)
            sidecar.run(master, "stop")
            final = sidecar.run_json(master, "pass", "--final", timeout=3600)
            detail["final_pass"] = final.get("snapshot")
            ctx.progress(f"master: final pass complete, snapshot {final.get('snapshot')}")
        sidecar.run(master, "stop")
        detail["sync"] = "stopped"
        return detail


def step_fence_master(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    detail = {"groups": ctx.writer.swap_group(journal.data["master"], OPEN_GROUP, SLAVE_GROUP)}
    if view.master_reachable:
        try:
            with _engine(ctx, journal, "master") as master:
                container = master.container(sidecar.GITLAB)
                container.update(restart_policy=cast(Any, {"Name": "no"}))
                container.stop(timeout=60)
                detail["gitlab"] = "stopped, restart policy no"
        except OpsError as exc:
            detail["gitlab"] = f"not reached: {exc}"
    return detail


def step_start_slave_gitlab(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    with _engine(ctx, journal, "slave") as slave:
        status = sidecar.run_json(slave, "status")
        if status.get("role") == "slave":
            sidecar.run(slave, "rm")  # no pass may land (or prune) while GitLab starts on it
        settings = slave.settings
        ctx.progress(f"slave: restoring the newest snapshot into {settings.gitlab_home}")
        out = slave.run_once(
            settings.sync_image,
            ["restore", "/target", "--json"],
            {settings.sync_home: "/sync", settings.gitlab_home: "/target"},
        )
        restored = json.loads(out)
        ctx.progress(f"slave: starting GitLab on snapshot {restored['snapshot']}")
        slave.up([sidecar.GITLAB])
        waited = sidecar.wait_gitlab_healthy(
            slave, ctx.settings.ready_timeout, ctx.clock, ctx.sleep
        )
        ctx.progress(f"slave: GitLab healthy after {waited:.1f} s")
        return {
            "snapshot": restored["snapshot"],
            "snapshot_started_at": restored["started_at"],
            "restore_seconds": restored.get("seconds", 0.0),
            "gitlab_healthy_seconds": round(waited, 3),
        }


def step_open_slave(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    return {"groups": ctx.writer.swap_group(journal.data["slave"], SLAVE_GROUP, OPEN_GROUP)}


def public_url(ctx: Context) -> str:
    if ctx.settings.public_url:
        return ctx.settings.public_url
    state = inventory.describe_pair(ctx.settings, ctx.ec2)
    if state.elastic_ip is None:
        raise AwsError(f"the project {ctx.settings.project_name} has no Elastic IP")
    return f"http://{state.elastic_ip.public_ip}:{ctx.settings.gitlab_http_port}"


def wait_ready(
    url: str, timeout: float, clock: Callable[[], float], sleep: Callable[[float], None]
) -> None:
    """Wait until ``url``/-/readiness answers 200 (GitLab reached the way clients reach it)."""
    deadline = clock() + timeout
    last = ""
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/readiness", timeout=5) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if clock() >= deadline:
            raise OpsError(f"GitLab did not answer ready at {url} within {timeout:g} s ({last})")
        sleep(0.5)


def step_move_address_and_tags(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    state = inventory.describe_pair(ctx.settings, ctx.ec2)
    eip = state.elastic_ip
    new_master, old_master = journal.data["slave"], journal.data["master"]
    if eip is None:
        raise AwsError(f"the project {ctx.settings.project_name} has no Elastic IP to move")
    if eip.instance_id != new_master:
        ctx.writer.move_address(eip.allocation_id, eip.public_ip, new_master)
    epoch = journal.data["to_epoch"]
    ctx.writer.tag_role(new_master, "master", epoch)
    ctx.writer.tag_role(old_master, FENCED, epoch)
    url = public_url(ctx)
    ctx.progress(f"waiting for GitLab ready at {url}")
    wait_ready(url, ctx.settings.ready_timeout, ctx.clock, ctx.sleep)
    return {"elastic_ip": eip.public_ip, "url": url, "epoch": journal.data["to_epoch"]}


def postmortem(ctx: Context, journal: Journal) -> str:
    """Save what can be read of the old master: AWS's console output and status, its logs."""
    folder = Path(ctx.settings.state_dir) / "postmortem" / journal.path.stem
    folder.mkdir(parents=True, exist_ok=True)
    old = journal.data["master"]
    for name, call in (
        ("console-output.json", lambda: ctx.ec2.get_console_output(InstanceId=old)),
        (
            "instance-status.json",
            lambda: ctx.ec2.describe_instance_status(InstanceIds=[old], IncludeAllInstances=True),
        ),
    ):
        try:
            data: Any = call()
        except Exception as exc:  # a bundle records what it could not read, and goes on
            data = {"error": str(exc)}
        (folder / name).write_text(json.dumps(data, indent=2, default=str))
    try:
        with _engine(ctx, journal, "master") as master:
            for service in (sidecar.SERVICE, sidecar.GITLAB):
                (folder / f"{service}.log").write_text(master.logs(service, lines=2000))
    except OpsError as exc:
        (folder / "hosts.txt").write_text(f"the old master's host did not answer: {exc}\n")
    return str(folder)


STEP_FUNCTIONS: dict[str, Callable[[Context, Journal, View], dict[str, Any]]] = {
    "stop-master-sync": step_stop_master_sync,
    "fence-master": step_fence_master,
    "start-slave-gitlab": step_start_slave_gitlab,
    "open-slave": step_open_slave,
    "move-address-and-tags": step_move_address_and_tags,
}


# --- the whole promotion ------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What a promotion did: steps and their times, RTO, RPO, and what is left."""

    done: bool
    already: bool
    from_epoch: int
    to_epoch: int
    new_master: str
    old_master: str
    steps: tuple[tuple[str, float, dict[str, Any]], ...]
    rto_seconds: float | None
    rpo_seconds: float | None
    snapshot: str | None
    left: tuple[str, ...]
    postmortem: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = [{"name": n, "seconds": s, **d} for n, s, d in self.steps]
        return data

    def lines(self) -> list[str]:
        if self.already:
            return [
                f"already promoted: {self.new_master} is master at epoch {self.to_epoch}; "
                "nothing to do"
            ]
        out = [
            f"promoted {self.new_master} (epoch {self.from_epoch} -> {self.to_epoch}); "
            f"old master {self.old_master} fenced"
        ]
        for name, seconds, detail in self.steps:
            shown = ", ".join(
                f"{k}={v}" for k, v in detail.items() if k not in {"seconds", "ended_at"}
            )
            out.append(f"  {name:24} {seconds:8.2f} s  {shown}")
        rto = f"{self.rto_seconds:.1f} s" if self.rto_seconds is not None else "-"
        rpo = f"{self.rpo_seconds:.1f} s" if self.rpo_seconds is not None else "-"
        out.append(
            f"RTO {rto} (start to ready through the public address); "
            f"RPO {rpo} (writes after snapshot {self.snapshot} may be lost)"
        )
        out += [f"left: {item}" for item in self.left]
        return out


LEFT = (
    "runners: they reach GitLab at the same address; a runner that failed three times backs "
    "off for an hour (restart it, or wait)",
    "a new slave: inv rebuild-slave (or inv rebuild-slave --reuse INSTANCE once the old master "
    "is repaired)",
    "a post-mortem: why did the master fail? (bundle below)",
)


def _report(journal: Journal, already: bool) -> Report:
    steps = tuple(
        (n, float(journal.data["steps"][n]["seconds"]), journal.data["steps"][n])
        for n in STEPS
        if n in journal.data["steps"]
    )
    rto = (
        sum(s for n, s, _ in steps if n != "report")
        if journal.done("move-address-and-tags")
        else None
    )
    fresh = journal.data["steps"].get("freshness", {})
    started = journal.data["steps"].get("start-slave-gitlab", {})
    used = _parse(started.get("snapshot_started_at"))
    until = _parse(fresh.get("until"))
    rpo = (
        max(0.0, (until - used).total_seconds()) if used and until else fresh.get("window_seconds")
    )
    return Report(
        done=bool(journal.data.get("done")),
        already=already,
        from_epoch=journal.data["from_epoch"],
        to_epoch=journal.data["to_epoch"],
        new_master=journal.data["slave"],
        old_master=journal.data["master"],
        steps=steps,
        rto_seconds=rto,
        rpo_seconds=rpo,
        snapshot=started.get("snapshot"),
        left=LEFT,
        postmortem=journal.data["steps"].get("report", {}).get("postmortem"),
    )


def plan_lines(view: View, journal: Journal | None, flags: Flags) -> list[str]:
    """The plan, with what is known of each step (``--dry-run`` and the confirmation)."""
    age = f"{view.snapshot_age:.0f} s old" if view.snapshot_age is not None else "none"
    known = {
        "preflight": f"slave {view.slave_id}: {view.slave_health}; image {view.slave_image}; "
        f"gitlab-secrets.json {'present' if view.secrets_present else 'MISSING'}",
        "freshness": f"newest snapshot {view.snapshot} ({age}); master last heard "
        f"{_iso(view.last_contact) or 'never'}",
        "stop-master-sync": "final pass with GitLab stopped"
        if flags.planned and view.master_reachable
        else (
            "stop the master's sync" if view.master_reachable else f"skipped: {view.master_error}"
        ),
        "fence-master": f"{view.master_id}: {OPEN_GROUP} -> {SLAVE_GROUP}"
        + ("; its GitLab stopped, restart policy no" if view.master_reachable else ""),
        "start-slave-gitlab": "restore the newest snapshot into GITLAB_HOME; start GitLab; "
        "wait until healthy",
        "open-slave": f"{view.slave_id}: {SLAVE_GROUP} -> {OPEN_GROUP}",
        "move-address-and-tags": f"Elastic IP -> {view.slave_id}; epoch {view.epoch} -> "
        f"{view.epoch + 1}; {view.master_id} tagged {FENCED}",
        "report": "RTO, RPO, steps, what is left; post-mortem bundle",
    }
    out = [f"promote slave {view.slave_id} to master (epoch {view.epoch} -> {view.epoch + 1})"]
    for index, step in enumerate(STEPS, 1):
        mark = "done" if journal and journal.done(step) else "    "
        out.append(f"  {index}. {mark} {step:24} {known[step]}")
    return out


def promote(
    settings: Settings,
    flags: Flags,
    progress: Progress,
    confirm: Callable[[list[str]], bool] | None = None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Report | None, list[str]]:
    """Promote the slave (or resume a promotion cut short); returns the report and the plan.

    ``confirm`` sees the plan and says yes or no (None: yes). ``dry_run`` returns the plan only.
    """
    started = dt.datetime.now(dt.UTC)
    ec2 = aws.ec2_client(settings)
    state = inventory.describe_pair(settings, ec2)
    ctx = Context(settings, ec2, state, flags, progress, clock, sleep)
    journal = Journal.open_for(settings, state)
    if journal and journal.data.get("done"):
        if state.slave is None:  # nothing left to promote: this promotion was the last
            return _report(journal, already=True), []
        journal = None  # a slave again (inv rebuild-slave): a new promotion
    if journal:
        master = next((h for h in state.hosts if h.instance_id == journal.data["master"]), None)
        slave = next((h for h in state.hosts if h.instance_id == journal.data["slave"]), None)
    else:
        master, slave = state.master, state.slave
    if slave is None:
        raise Refusal("AWS has no instance tagged Role=slave: there is no slave to promote")
    if master is None:
        raise Refusal("AWS has no instance tagged Role=master: check the tags (inv status)")
    view = read_view(ctx, master, slave)
    plan = plan_lines(view, journal, flags)
    if dry_run:
        return None, plan
    if not journal:
        refusals = preflight_refusals(view, flags) + freshness_refusals(
            view, flags, settings.stale_after
        )
        if refusals:
            raise Refusal("; ".join(refusals))
        if confirm is not None and not confirm(plan):
            raise Refusal("not confirmed; nothing was changed")
        journal = Journal.new(settings, view, flags, started)
    elif confirm is not None and not confirm(plan):
        raise Refusal("not confirmed; the promotion stays where it stopped")
    _run_steps(ctx, journal, view)
    return _report(journal, already=False), plan


def _run_steps(ctx: Context, journal: Journal, view: View) -> None:
    for step in STEPS:
        if journal.done(step):
            continue
        ctx.progress(f"{step} ...")
        started = ctx.clock()
        if step == "preflight":
            detail: dict[str, Any] = {
                "slave": view.slave_health,
                "image": view.slave_image,
                "secrets": view.secrets_present,
            }
        elif step == "freshness":
            detail = {
                "snapshot": view.snapshot,
                "snapshot_started_at": _iso(view.snapshot_started),
                "last_contact": _iso(view.last_contact),
                "window_seconds": view.window,
                "until": _iso(
                    view.now
                    if view.master_reachable
                    else (view.last_contact or view.snapshot_started)
                ),
            }
        elif step == "report":
            journal.data["done"] = True
            detail = {"postmortem": postmortem(ctx, journal)}
        else:
            detail = STEP_FUNCTIONS[step](ctx, journal, view)
        journal.record(step, started, ctx.clock(), detail)
        ctx.progress(f"{step} done in {journal.data['steps'][step]['seconds']:.2f} s")
        if os.environ.get(KILL_AFTER) == step:  # fault injection for the resume tests
            os.kill(os.getpid(), signal.SIGKILL)
