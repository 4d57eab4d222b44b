"""Promotion's steps, from one table (:data:`TABLE`): each step's name, its plan text (what
``--dry-run`` prints) and its function.

A step's function does its work, idempotently, and returns what it found; the caller records
that in the journal. Every write to EC2 goes through :class:`~ops.aws.writer.Ec2Writer`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

import docker.errors
import requests.exceptions

from gitlab_sync.config import iso
from gitlab_sync.layout import Layout
from ops.aws import dns, inventory
from ops.aws.client import aws_errors, route53_client
from ops.aws.inventory import FENCED, OPEN_GROUP, SLAVE_GROUP, PairState
from ops.aws.writer import Ec2Writer
from ops.dr import layouts, readiness, sidecar, topology
from ops.dr.journal import Journal
from ops.dr.promotion_view import Flags, View
from ops.dr.snapshots import JOURNAL_KEY, age_text
from ops.errors import AwsError, OpsError, SettingError, SidecarError
from ops.hosts.engine import Engine
from ops.hosts.ssh import last_line
from ops.progress import Progress
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


@dataclass
class Context:
    """What every step works with: settings, AWS, the pair as read, the operator's flags."""

    settings: Settings
    ec2: EC2Client
    state: PairState
    flags: Flags
    progress: Progress
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    engines: dict[str, Engine] = field(default_factory=dict)
    """The hosts' engines opened so far, by instance id (:func:`_engine`; :func:`close_engines`)."""

    @property
    def writer(self) -> Ec2Writer:
        return Ec2Writer(self.settings, self.ec2)


@contextlib.contextmanager
def _engine(ctx: Context, journal: Journal, role: inventory.Role) -> Iterator[Engine]:
    """The engine of the journal's ``role`` instance (as it was when the promotion began),
    opened once and kept in ``ctx.engines`` for the steps that follow: one relay per host for
    the whole promotion. One that a step's error went through is closed and forgotten (its
    transport may be what failed), so a later step opens it anew.

    The slave's, opened before GitLab is started, begins reading GitLab's configuration hash
    (:meth:`Engine.expect`) while the receiver is fenced and the snapshot restored.
    """
    instance_id = journal.data[role]
    engine = ctx.engines.get(instance_id)
    if engine is None:
        instance = next((h for h in ctx.state.hosts if h.instance_id == instance_id), None)
        if instance is None:
            raise AwsError(f"the promotion's {role} {instance_id} is not in AWS any more")
        side = topology.instance_side(
            role, ctx.settings, instance_id, instance.public_ip, instance.private_ip
        )
        engine = ctx.engines[instance_id] = Engine.open(side.host, side.settings)
        if role == "slave" and not journal.done("start-slave-gitlab"):
            engine.expect(sidecar.GITLAB)
    try:
        yield engine
    except OpsError:
        ctx.engines.pop(instance_id, None)
        engine.close()
        raise


def close_engines(ctx: Context) -> None:
    """Close every engine :func:`_engine` kept (the promotion is over, or stopped)."""
    while ctx.engines:
        ctx.engines.popitem()[1].close()


# --- the steps' functions -----------------------------------------------------------------------


def preflight(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    """What preflight found (its refusals come before the journal exists)."""
    return {"slave": view.slave_health, "image": view.slave_image, "secrets": view.secrets_present}


def freshness(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    """The snapshot to start from and the window of writes it may miss (with a chosen snapshot,
    the newest too, and the seconds between them the choice loses)."""
    detail = {
        "snapshot": view.snapshot,
        "snapshot_started_at": iso(view.snapshot_started) if view.snapshot_started else None,
        "last_contact": iso(view.last_contact) if view.last_contact else None,
        "window_seconds": view.window,
        "until": iso(view.until) if view.until else None,
    }
    if view.choice is not None:
        detail |= {
            "chosen": view.choice.asked,
            "newest": view.choice.newest.name,
            "newest_started_at": iso(view.choice.newest.instant),
            "choice_lost_seconds": view.choice_window,
        }
    return detail


def stop_master_sync(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    if not view.master_reachable:
        return {"skipped": f"master unreachable: {view.master_error}"}
    with _engine(ctx, journal, "master") as master:
        detail: dict[str, Any] = {}
        if ctx.flags.planned:
            ctx.progress("master: stopping GitLab for the final pass")
            master.stop(sidecar.GITLAB, timeout=120)
            sidecar.run(master, "stop")
            final = sidecar.run_json(master, "pass", "--final", timeout=3600)
            detail["final_pass"] = final.get("snapshot")
            ctx.progress(f"master: final pass complete, snapshot {final.get('snapshot')}")
        sidecar.run(master, "stop")
        detail["sync"] = "stopped"
        return detail


def fence_master(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
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


def fence_receiver(slave: Engine, epoch: int) -> str:
    """Move the slave's receiver to the new epoch, so that nothing lands (or is pruned) while
    GitLab starts on its snapshot, and the old master, should it come back and send, is refused
    by the receiver itself for its old epoch (fencing by epoch, observable in its pass's error)
    rather than finding no receiver. One exec (``gitlab-sync fence``), which never moves the
    epoch back. ``inv rebuild-slave`` later makes this sidecar the sender."""
    try:
        done = sidecar.run_json(slave, "fence", str(epoch))
    except SidecarError as exc:
        if "invalid choice: 'fence'" not in str(exc):
            raise
        done = _fence_by_add(slave, epoch)  # a sidecar image from before the verb
    if not done.get("fenced"):
        return "slave: its sidecar is not receiving; nothing to fence"
    if done.get("was") == done.get("epoch"):
        return f"slave: the receiver already refuses senders of epochs before {done['epoch']}"
    return f"slave: the receiver now refuses senders of epochs before {done['epoch']}"


def _fence_by_add(slave: Engine, epoch: int) -> dict[str, Any]:
    """What ``gitlab-sync fence`` does, for a sidecar without it: the pairing read, then made
    again with the new epoch (two execs)."""
    pairing = sidecar.run_json(slave, "ls")
    if not pairing or pairing.get("role") != "slave":
        return {"fenced": False}
    was = int(pairing["epoch"])
    if was < epoch:
        sidecar.add(slave, str(pairing["peer"]), "slave", str(pairing["peer_key"]), epoch)
    return {"fenced": True, "was": was, "epoch": max(was, epoch)}


def stop_verifier(slave: Engine) -> str:
    """Ask the slave's scheduled verification (``gitlab-verify``) to stop, so that no throwaway
    GitLab competes with the one being promoted for the host's CPU and memory while it starts.
    One signal (SIGTERM), not a wait: the service ends by itself, removing a throwaway GitLab it
    was running and its copy first, while GitLab starts. Docker counts a container killed so as
    stopped by hand, so it stays stopped (restart policy unless-stopped) until ``inv pair`` or
    ``inv rebuild-slave`` deploys it again. A stack without the service, or one that refuses,
    is said and never stops the promotion."""
    try:
        container = slave.container(sidecar.VERIFIER)
        if container.status != "running":
            return f"slave: the scheduled verification is not running ({container.status})"
        container.kill(signal="SIGTERM")
    except (OpsError, docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return f"slave: the scheduled verification was not stopped: {last_line(str(exc))}"
    return (
        "slave: scheduled verification asked to stop (inv pair or inv rebuild-slave starts it "
        "again)"
    )


def restore_mounts(settings: Settings) -> tuple[dict[str, str], str]:
    """The restore one-off's mounts and its target: SYNC_HOME at /sync and the folder that
    holds GITLAB_HOME at /homes, so that the restore can put a new subvolume in GITLAB_HOME's
    place (and the old one aside, beside it) rather than copy into it."""
    home = PurePosixPath(posixpath.normpath(settings.gitlab_home))
    if home.parent == home.parent.parent:
        raise SettingError(
            f"GITLAB_HOME ({home}) must sit in a folder of its own, not at the top of the host's "
            "filesystem: the restore mounts the folder that holds it"
        )
    return {settings.sync_home: "/sync", str(home.parent): "/homes"}, f"/homes/{home.name}"


def start_slave_gitlab(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    with _engine(ctx, journal, "slave") as slave:
        ctx.progress(fence_receiver(slave, int(journal.data["to_epoch"])))
        seen = view.slave.service(sidecar.GITLAB)
        if seen is not None and seen.state == "running":  # it would stay on the old GITLAB_HOME
            ctx.progress(sidecar.stop_slave_gitlab(slave) or "slave: GitLab had stopped by itself")
        settings = slave.settings
        mounts, target = restore_mounts(settings)
        chosen = (journal.data.get(JOURNAL_KEY) or {}).get("name")
        which = f"snapshot {chosen}" if chosen else "the newest snapshot"
        ctx.progress(f"slave: restoring {which} as {settings.gitlab_home}")
        argv = ["restore", target, *(["--snapshot", chosen] if chosen else []), "--json"]
        out = slave.run_once("restore", settings.sync_image, argv, mounts)
        restored = json.loads(out)
        detail = {
            "snapshot": restored["snapshot"],
            "snapshot_started_at": restored["started_at"],
            "restore_method": restored.get("method", "copy"),  # an image from before snapshots
            "restore_seconds": restored.get("seconds", 0.0),
            # an image from before the registry's deletes were finished at restore: none said
            "registry_deletes_finished": restored.get("registry_deletes_finished", []),
        }
        ctx.progress(f"slave: {layouts.restored(detail)}; starting GitLab")
        ctx.progress(stop_verifier(slave))
        began = ctx.clock()
        ctx.progress(f"slave: {slave.start(sidecar.GITLAB)}")
        sidecar.wait_gitlab_healthy(slave, ctx.settings.ready_timeout, ctx.clock, ctx.sleep)
        waited = ctx.clock() - began
        ctx.progress(f"slave: GitLab healthy {waited:.1f} s after its start")
        return {**detail, "gitlab_healthy_seconds": round(waited, 3)}


def open_slave(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    return {"groups": ctx.writer.swap_group(journal.data["slave"], SLAVE_GROUP, OPEN_GROUP)}


def public_url(ctx: Context, state: PairState) -> str:
    """Where clients reach GitLab: PUBLIC_URL, else the Elastic IP (its address, which a move
    keeps, from ``state``), else the DNS record."""
    if ctx.settings.public_url:
        return ctx.settings.public_url
    if state.elastic_ip is not None:
        return f"http://{state.elastic_ip.public_ip}:{ctx.settings.gitlab_http_port}"
    if ctx.settings.dns_zone:
        return f"http://{dns.record_name(ctx.settings)}:{ctx.settings.gitlab_http_port}"
    raise AwsError(
        f"the project {ctx.settings.project_name} has no Elastic IP and no DNS record: "
        "set PUBLIC_URL"
    )


def move_address_and_tags(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    """The Elastic IP (and the DNS record, with DNS_ZONE) to the new master, the tags swapped;
    ``ready_at`` is the moment GitLab answered ready through the public address (where the RTO
    ends)."""
    state = inventory.describe_pair(ctx.settings, ctx.ec2)
    eip = state.elastic_ip
    new_master, old_master = journal.data["slave"], journal.data["master"]
    if eip is None and ctx.settings.use_elastic_ip:
        raise AwsError(f"the project {ctx.settings.project_name} has no Elastic IP to move")
    if eip is not None and eip.instance_id != new_master:
        ctx.writer.move_address(eip.allocation_id, eip.public_ip, new_master)
    epoch = journal.data["to_epoch"]
    ctx.writer.tag_role(new_master, "master", epoch)
    ctx.writer.tag_role(old_master, FENCED, epoch)
    record = ""
    if ctx.settings.dns_zone:
        moved = inventory.describe_pair(ctx.settings, ctx.ec2)
        record = dns.point_at_master(ctx.settings, route53_client(ctx.settings), moved)
        ctx.progress(record)
    url = public_url(ctx, state)
    ctx.progress(f"waiting for GitLab ready at {url}")
    readiness.wait_ready(
        url, ctx.settings.ready_timeout, all_checks=False, clock=ctx.clock, sleep=ctx.sleep
    )
    return {
        "elastic_ip": eip.public_ip if eip else None,
        "dns": record,
        "url": url,
        "epoch": journal.data["to_epoch"],
        "ready_at": iso(ctx.now()),
    }


def restart_sidecar(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    """After a restore by a btrfs snapshot, GITLAB_HOME is a new subvolume, but the new
    master's running gitlab-rsync still has the old one mounted at /source: restarted, it
    mounts the new one, so that ``inv rebuild-slave`` makes it send what GitLab now writes.
    Done once GitLab answers through the public address, so it is not on the RTO's path."""
    method = journal.data["steps"]["start-slave-gitlab"].get("restore_method")
    if method != "snapshot":
        return {"skipped": "the restore copied into GITLAB_HOME: /source is the same folder"}
    with _engine(ctx, journal, "slave") as slave:
        started = sidecar.restart(slave, clock=ctx.clock, sleep=ctx.sleep)
        ctx.progress(f"{slave.host}: gitlab-rsync restarted on the new GITLAB_HOME")
        return {"sidecar": "restarted on the new GITLAB_HOME", "daemon_started_at": started}


def postmortem(ctx: Context, journal: Journal) -> str:
    """Save what can be read of the old master: AWS's console output and status, its logs."""
    folder = Path(ctx.settings.state_dir) / "postmortem" / journal.path.stem
    folder.mkdir(parents=True, exist_ok=True)
    old = journal.data["master"]
    for name, call, what in (
        (
            "console-output.json",
            lambda: ctx.ec2.get_console_output(InstanceId=old),
            "ec2 GetConsoleOutput",
        ),
        (
            "instance-status.json",
            lambda: ctx.ec2.describe_instance_status(InstanceIds=[old], IncludeAllInstances=True),
            "ec2 DescribeInstanceStatus",
        ),
    ):
        data: Any
        try:
            with aws_errors(what, f"instance {old}"):
                data = call()
        except AwsError as exc:  # a bundle records what it could not read, and goes on
            data = {"error": str(exc)}
        (folder / name).write_text(json.dumps(data, indent=2, default=str))
    try:
        with _engine(ctx, journal, "master") as master:
            for service in (sidecar.SERVICE, sidecar.GITLAB):
                (folder / f"{service}.log").write_text(master.logs(service, lines=2000))
    except OpsError as exc:
        (folder / "hosts.txt").write_text(f"the old master's host did not answer: {exc}\n")
    return str(folder)


def report(ctx: Context, journal: Journal, view: View) -> dict[str, Any]:
    """The last step: the promotion is done; the post-mortem bundle is saved."""
    journal.data["done"] = True
    return {"postmortem": postmortem(ctx, journal)}


# --- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step: its name, its plan text from the view and flags, and its function; ``done``
    says what the journal recorded of it, where that tells more than the plan (a resumed
    promotion's plan shows it)."""

    name: str
    plan: Callable[[View, Flags], str]
    run: Callable[[Context, Journal, View], dict[str, Any]]
    done: Callable[[dict[str, Any]], str] | None = None


def _stop_plan(view: View, flags: Flags) -> str:
    if not view.master_reachable:
        return f"skipped: {view.master_error}"
    return "final pass with GitLab stopped" if flags.planned else "stop the master's sync"


def _slave_layout(view: View) -> Layout | None:
    return layouts.parsed(view.slave.sync.layout) if view.slave.sync else None


def _restart_plan(layout: Layout | None) -> str:
    restart = "the slave's gitlab-rsync restarted, to mount the new GITLAB_HOME it will send"
    if layout is None:
        return f"{restart} (after a restore by a btrfs snapshot; nothing after a copy)"
    return restart if layout.method == "snapshots" else "nothing (the restore copies)"


def _restored_name(view: View) -> str:
    """What start-slave-gitlab restores: the snapshot chosen, or the newest."""
    return f"snapshot {view.choice.snapshot.name}" if view.choice else "the newest snapshot"


def _age(view: View) -> str:
    return f"{view.snapshot_age:.0f} s old" if view.snapshot_age is not None else "none"


def _freshness_plan(view: View) -> str:
    """The newest snapshot and the master's last contact; with ``--snapshot``/``--before``, the
    chosen snapshot and what choosing it loses, besides the newest's own window."""
    heard = f"master last heard {iso(view.last_contact) if view.last_contact else 'never'}"
    choice = view.choice
    if choice is None:
        return f"newest snapshot {view.snapshot} ({_age(view)}); {heard}"
    chosen = choice.snapshot
    window = f"{view.window:.0f} s" if view.window is not None else "unknown"
    return (
        f"start from {choice.loss()}; {chosen.name} is "
        f"{age_text((view.now - chosen.instant).total_seconds())} old, "
        f"{chosen.verification()}; newest snapshot {view.newest} ({_age(view)}); {heard}; "
        f"writes lost in all: {window}"
    )


TABLE: tuple[Step, ...] = (
    Step(
        "preflight",
        lambda v, f: (
            f"slave {v.slave_id}: {v.slave_health}; image {v.slave_image}; "
            f"gitlab-secrets.json {'present' if v.secrets_present else 'MISSING'}"
        ),
        preflight,
    ),
    Step("freshness", lambda v, f: _freshness_plan(v), freshness),
    Step("stop-master-sync", _stop_plan, stop_master_sync),
    Step(
        "fence-master",
        lambda v, f: (
            f"{v.master_id}: {OPEN_GROUP} -> {SLAVE_GROUP}"
            + ("; its GitLab stopped, restart policy no" if v.master_reachable else "")
        ),
        fence_master,
    ),
    Step(
        "start-slave-gitlab",
        lambda v, f: (
            "the receiver moved to the new epoch (it refuses the old master); "
            f"{layouts.restore_plan(_slave_layout(v), _restored_name(v))}; start GitLab; "
            "wait until healthy"
        ),
        start_slave_gitlab,
        lambda detail: f"{layouts.restored(detail)}; GitLab healthy",
    ),
    Step("open-slave", lambda v, f: f"{v.slave_id}: {SLAVE_GROUP} -> {OPEN_GROUP}", open_slave),
    Step(
        "move-address-and-tags",
        lambda v, f: (
            f"Elastic IP -> {v.slave_id}; epoch {v.epoch} -> {v.epoch + 1}; "
            f"{v.master_id} tagged {FENCED}"
        ),
        move_address_and_tags,
    ),
    Step("restart-sidecar", lambda v, f: _restart_plan(_slave_layout(v)), restart_sidecar),
    Step("report", lambda v, f: "RTO, RPO, steps, what is left; post-mortem bundle", report),
)

STEPS = tuple(step.name for step in TABLE)
"""The steps' names, in order."""


def plan_lines(view: View, journal: Journal | None, flags: Flags) -> list[str]:
    """The plan, with what is known of each step (``--dry-run`` and the confirmation)."""
    out = [f"promote slave {view.slave_id} to master (epoch {view.epoch} -> {view.epoch + 1})"]
    for index, step in enumerate(TABLE, 1):
        done = journal.data["steps"].get(step.name) if journal else None
        text = step.done(done) if done and step.done else step.plan(view, flags)
        out.append(f"  {index}. {'done' if done else '    '} {step.name:24} {text}")
    return out
