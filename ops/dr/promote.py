"""``inv promote-slave``: the hand-written disaster-recovery procedure, as one command.

Steps, in order (:data:`ops.dr.promotion_steps.TABLE`), each idempotent and recorded in a
journal (:mod:`ops.dr.journal`) so that a promotion cut short resumes where it stopped and
never does a step twice:

1. preflight: the slave is healthy, runs the same GitLab image, and its newest snapshot holds
   ``gitlab-secrets.json``;
2. freshness: when that snapshot's pass began, and when the master was last heard from;
3. stop-master-sync: when the master answers (``--planned``: GitLab stopped and a final pass);
4. fence-master: ``gitlab-open`` swapped for ``gitlab-slave``, its GitLab stopped and its
   restart policy set to "no" when the host answers;
5. start-slave-gitlab: the slave's receiver moves to the new epoch, GITLAB_HOME becomes a
   writable btrfs snapshot of the newest snapshot, or of the one ``--snapshot``/``--before``
   chose (a copy of it without btrfs), GitLab starts and becomes healthy;
6. open-slave: ``gitlab-slave`` swapped for ``gitlab-open``;
7. move-address-and-tags: the Elastic IP moves, the epoch goes up, the slave becomes master and
   the old master is tagged ``fenced``; the RTO ends when the public URL answers ready;
8. restart-sidecar: after a restore by a btrfs snapshot, the new master's gitlab-rsync is
   restarted so that it mounts the new GITLAB_HOME (after the RTO's end: GitLab already serves);
9. report: every step's time, the restore's method and time, RTO, RPO, what is left, and a
   post-mortem bundle.

Whether to start, resume or stop is :func:`decide`, pure; the refusals are sentences from the
same checks ``inv status`` runs (:mod:`ops.dr.checks`), judged on an immutable
:class:`~ops.dr.promotion_view.View` of the pair.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from ops.aws import client as aws
from ops.aws import inventory
from ops.aws.inventory import Instance, PairState
from ops.dr import checks, sidecar, snapshots
from ops.dr.journal import Journal
from ops.dr.promotion_report import PromotionReport, already_promoted, report_of
from ops.dr.promotion_steps import STEPS, TABLE, Context, close_engines, plan_lines
from ops.dr.promotion_view import Flags, View, read_view, slave_side
from ops.dr.snapshots import Choice
from ops.dr.topology import Absent
from ops.errors import OpsError, Refusal
from ops.hosts.engine import Engine
from ops.progress import Progress
from ops.settings import Settings

__all__ = ["KILL_AFTER", "STEPS", "Flags", "PromotionReport", "confirm_on_terminal", "promote"]

KILL_AFTER = "GITLAB_DR_KILL_AFTER_STEP"
"""Testing aid: the process SIGKILLs itself right after journaling the step this names."""


# --- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to do, and why (a sentence); the instances to promote from and to."""

    action: Literal["start", "resume", "already", "refuse"]
    reason: str
    master: Instance | None = None
    slave: Instance | None = None


def decide(journal: Mapping[str, Any] | None, state: PairState) -> Decision:
    """Start a promotion, resume the one ``journal`` records, say it is done, or refuse.

    ``journal`` is the data of the journal :meth:`Journal.open_for` chose (None: none).
    """
    if journal and journal.get("done"):
        if state.slave is None:  # nothing left to promote: this promotion was the last
            return Decision("already", already_promoted(journal["slave"], journal["to_epoch"]))
        journal = None  # a slave again (inv rebuild-slave): a new promotion
    if journal:
        master = next((h for h in state.hosts if h.instance_id == journal["master"]), None)
        slave = next((h for h in state.hosts if h.instance_id == journal["slave"]), None)
        done = [step for step in STEPS if step in journal.get("steps", {})]
        reason = (
            f"resuming the promotion of {journal['slave']} begun at {journal.get('started_at')} "
            f"({len(done)} of {len(STEPS)} steps done)"
        )
        action: Literal["start", "resume"] = "resume"
    else:
        master, slave = state.master, state.slave
        reason = "no promotion under way: a new one"
        action = "start"
    if slave is None:
        return Decision(
            "refuse", "AWS has no instance tagged Role=slave: there is no slave to promote"
        )
    if master is None:
        return Decision(
            "refuse", "AWS has no instance tagged Role=master: check the tags (inv status)"
        )
    return Decision(action, reason, master, slave)


def preflight_refusals(view: View, flags: Flags) -> list[str]:
    """Why step 1 refuses, as sentences naming the flag that goes on anyway."""
    out = []
    reached = checks.host_reached(view.slave)
    alive = checks.sidecar_alive(view.slave)
    if not reached.ok:
        out.append(f"the slave's host does not answer ({reached.detail}); nothing to promote on")
    elif not alive.ok and not flags.skip_health_check:
        out.append(f"the slave is not healthy ({alive.detail}); pass --skip-health-check to go on")
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
    """Why step 2 refuses: ``inv status``'s "last complete pass" check fails (a snapshot older
    than STALE_AFTER), unless data loss is accepted or a final pass will run."""
    fresh = checks.last_complete_pass(view.last_complete, view.now, stale_after)
    age = view.snapshot_age
    if fresh.ok or age is None or flags.accept_data_loss:
        return []  # no snapshot at all is preflight's refusal
    if flags.planned and view.master_reachable:
        return []  # the final pass brings it up to date
    return [
        f"the slave's newest snapshot is {age:.0f} s old (STALE_AFTER is {stale_after:g} s); "
        "pass --accept-data-loss to go on"
    ]


# --- the snapshot to start from -----------------------------------------------------------------

CHOICE = snapshots.JOURNAL_KEY


def kept_choice(recorded: Mapping[str, Any] | None, asked: Choice | None) -> Choice | None:
    """A resumed promotion's snapshot: the one its journal recorded; a different one asked for
    (``--snapshot``/``--before`` naming another, or any when it began from the newest) is
    refused, since GitLab may already run on the recorded one."""
    if asked is not None and asked.snapshot.name != (recorded or {}).get("name"):
        began = f"snapshot {recorded['name']}" if recorded else "the newest snapshot"
        again = f", or with --snapshot {recorded['name']}" if recorded else ""
        raise Refusal(
            f"the promotion under way starts from {began}, not {asked.snapshot.name}; "
            f"run it again without --snapshot/--before{again}"
        )
    return Choice.from_json(recorded) if recorded else None


def choose_snapshot(
    settings: Settings,
    flags: Flags,
    journal: Journal | None,
    slave: Instance,
    now: dt.datetime,
) -> Choice | None:
    """The snapshot ``--snapshot``/``--before`` names (None: the newest), from the slave's list;
    a resumed promotion keeps the one its journal recorded. Nothing is read without a flag."""
    recorded = journal.data.get(CHOICE) if journal else None
    asked = None
    same = recorded and flags.snapshot == recorded.get("name") and not flags.before
    if flags.chooses and not same:
        listing = snapshots.read_side(slave_side(settings, slave))
        asked = snapshots.choose(listing, flags.snapshot, flags.before, now)
    if journal is None:
        return asked
    return kept_choice(recorded, asked)


# --- the command --------------------------------------------------------------------------------


def confirm_on_terminal(
    yes: bool,
    out: TextIO,
    stdin: TextIO | None = None,
    ask: Callable[[str], str] = input,
) -> Callable[[list[str]], bool]:
    """A ``confirm`` for :func:`promote`: shows the plan on ``out``, then yes with ``yes``, else
    asks on the terminal (a refusal when there is none)."""

    def confirm(plan: list[str]) -> bool:
        print("\n".join(plan), file=out, flush=True)
        if yes:
            return True
        if not (stdin or sys.stdin).isatty():
            raise Refusal("no terminal to confirm on; pass --yes")
        return ask("Promote the slave? Type yes: ").strip() == "yes"

    return confirm


def promote(
    settings: Settings,
    flags: Flags,
    progress: Progress,
    confirm: Callable[[list[str]], bool] | None = None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> tuple[PromotionReport | None, list[str]]:
    """Promote the slave (or resume a promotion cut short); returns the report and the plan.

    ``confirm`` sees the plan and says yes or no (None: yes). ``dry_run`` returns the plan only.
    """
    started = now()
    ec2 = aws.ec2_client(settings)
    state = inventory.describe_pair(settings, ec2)
    found = Journal.open_for(settings, state)
    decision = decide(found.data if found else None, state)
    if decision.action == "already" and found is not None:
        return report_of(found, already=True), []
    if decision.master is None or decision.slave is None:
        raise Refusal(decision.reason)
    journal = found if decision.action == "resume" else None
    epoch = journal.data["from_epoch"] if journal else state.epoch or 1
    choice = choose_snapshot(settings, flags, journal, decision.slave, now())
    engines = {} if dry_run else open_slave(settings, decision.slave, journal)
    ctx = Context(settings, ec2, state, flags, progress, clock, sleep, now, engines)
    try:
        slave = engines.get(decision.slave.instance_id)
        view = read_view(settings, epoch, decision.master, decision.slave, now(), choice, slave)
        plan = plan_lines(view, journal, flags)
        if dry_run:
            return None, plan
        journal = begin(settings, flags, view, plan, journal, started, choice, confirm)
        if decision.action == "resume":
            progress(decision.reason)
    except BaseException:
        close_engines(ctx)
        raise
    run_steps(ctx, journal, view)
    return report_of(journal), plan


def begin(
    settings: Settings,
    flags: Flags,
    view: View,
    plan: list[str],
    journal: Journal | None,
    started: dt.datetime,
    choice: Choice | None,
    confirm: Callable[[list[str]], bool] | None,
) -> Journal:
    """The journal to run: a new one, once the refusals are passed and the plan confirmed
    (with the snapshot chosen, which a resume must start from too), or ``journal``, the one
    found, once its plan is confirmed again."""
    if journal is not None:
        if confirm is not None and not confirm(plan):
            raise Refusal("not confirmed; the promotion stays where it stopped")
        return journal
    refusals = preflight_refusals(view, flags) + freshness_refusals(
        view, flags, settings.stale_after
    )
    if refusals:
        raise Refusal("; ".join(refusals))
    if confirm is not None and not confirm(plan):
        raise Refusal("not confirmed; nothing was changed")
    journal = Journal.new(
        settings,
        epoch=view.epoch,
        master=view.master_id,
        slave=view.slave_id,
        planned=flags.planned,
        started=started,
    )
    if choice is not None:
        journal.data[CHOICE] = choice.to_json()
        journal.save()
    return journal


def open_slave(settings: Settings, slave: Instance, journal: Journal | None) -> dict[str, Engine]:
    """The slave's engine, opened before the pair is read, by instance id: the view and every
    step share it (one relay), and GitLab's configuration hash (:meth:`Engine.expect`) is read
    in the background from the start (a Compose run of a second or more), unless the journal
    says GitLab already started. Empty when the slave cannot be opened: the view reads it
    again and records why."""
    side = slave_side(settings, slave)
    if isinstance(side, Absent):
        return {}
    try:
        engine = Engine.open(side.host, side.settings)
    except OpsError:
        return {}
    if journal is None or not journal.done("start-slave-gitlab"):
        engine.expect(sidecar.GITLAB)
    return {slave.instance_id: engine}


def run_steps(ctx: Context, journal: Journal, view: View) -> None:
    """Every step of the table not yet in the journal, in order, each recorded when done; the
    steps share one engine (one relay) per host, closed when they end."""
    try:
        for step in TABLE:
            if journal.done(step.name):
                continue
            ctx.progress(f"{step.name} ...")
            started = ctx.clock()
            detail = step.run(ctx, journal, view)
            journal.record(step.name, started, ctx.clock(), detail, at=ctx.now())
            ctx.progress(f"{step.name} done in {journal.data['steps'][step.name]['seconds']:.2f} s")
            if os.environ.get(KILL_AFTER) == step.name:  # fault injection for the resume tests
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        close_engines(ctx)
