"""gitlab-dr's Invoke tasks: thin wrappers that parse flags, call ``ops`` and print.

Run ``inv --list`` for the tasks and ``inv --help TASK`` for one. Settings come from ``.env``
(or the file named by ``ENV_FILE``) and the environment; see ``.env.example``.
"""

from __future__ import annotations

import functools
import json as json_mod
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from ops import settings as settings_mod
from ops.aws import ami as ami_mod
from ops.aws import launch as launch_mod
from ops.errors import OpsError, Refusal

F = TypeVar("F", bound=Callable[..., Any])


def edge(func: F) -> F:
    """Turn an ``ops`` error into a one-line message and an exit code (3 for a refusal)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Refusal as exc:
            raise Exit(f"refused: {exc}", 3) from exc
        except OpsError as exc:
            raise Exit(f"error: {exc}", 1) from exc

    return wrapper  # type: ignore[return-value]


def load_settings() -> settings_mod.Settings:
    """The validated settings (a bad one stops the task with a one-line error)."""
    try:
        return settings_mod.load()
    except OpsError as exc:
        raise Exit(f"error: {exc}", 2) from exc


def progress(task_name: str, json: bool = False) -> Callable[[str], None]:
    """A task's progress lines, prefixed with its name: on stdout, or on stderr when stdout
    carries JSON for a script to read."""
    import sys

    def say(line: str) -> None:
        print(f"{task_name}: {line}", file=sys.stderr if json else sys.stdout, flush=True)

    return say


@task
@edge
def settings(c: Any, json: bool = False) -> None:
    """Check the settings and print them (from .env or $ENV_FILE, and the environment)."""
    import dataclasses
    import json as json_mod

    values = dataclasses.asdict(load_settings())
    if json:
        print(json_mod.dumps(values, indent=2))
        return
    for key, value in values.items():
        print(f"{key.upper():22} {value}")


@task(help={"dry-run": "print the plan and change nothing", "json": "print JSON for machines"})
@edge
def launch(c: Any, dry_run: bool = False, json: bool = False) -> None:
    """Create or find the pair in AWS: security groups, two instances, data volumes, Elastic IP.

    Idempotent by tags: a second run creates nothing, and a run cut short is finished.
    """
    report = launch_mod.launch(load_settings(), dry_run=dry_run)
    if json:
        print(json_mod.dumps(report.to_dict(), indent=2))
        return
    print("\n".join(report.lines()))


@task(
    help={
        "var-file": "Packer variables file (default: packer/gitlab.pkrvars.hcl if it exists)",
        "dry-run": "print the packer command lines and run nothing",
    }
)
@edge
def build_ami(c: Any, var_file: str = "", dry_run: bool = False) -> None:
    """Build the hosts' AMI with Packer: Debian 12, Docker, Compose, the GitLab image pulled.

    Needs Packer 1.7+ and AWS credentials (AWS_PROFILE, ~/.aws, ...). Streams Packer's progress,
    then prints the AMI id and the AMI_ID= line to put in .env.
    """
    path = Path(var_file) if var_file else None
    if dry_run:
        for argv in ami_mod.plan(load_settings(), path).commands:
            print(shlex.join(argv))
        return
    ami_id = ami_mod.build_ami(load_settings(), path, on_line=print)
    print(f"AMI built: {ami_id}")
    print("Put this line in .env:")
    print(f"AMI_ID={ami_id}")


@task(
    help={
        "timeout": "seconds to wait for the first complete pass (default 600)",
        "json": "print the result as JSON",
    }
)
@edge
def pair(c: Any, timeout: float = 600.0, json: bool = False) -> None:
    """Pair master and slave: deploy both stacks, exchange keys, start sync and GitLab.

    First checks both hosts' layout: says which one runs the fallback (no btrfs snapshots), and
    refuses (exit 3) when btrfs is set up wrongly on either. The slave's GitLab is only
    created. Waits for the first complete pass, with progress, then prints the pair's status.
    Safe to run again: it repairs what is missing, nothing else.
    """
    from ops.dr import pair as pair_mod
    from ops.dr import status as status_mod

    loaded = load_settings()
    result = pair_mod.pair(loaded, progress=progress("pair", json), timeout=timeout)
    if json:
        print(json_mod.dumps(result.to_dict(), indent=2))
        return
    print("\n".join(status_mod.render(status_mod.collect(loaded))))


@task(help={"json": "print the report as JSON"})
@edge
def status(c: Any, json: bool = False) -> None:
    """The pair at a glance: AWS, containers, sync, and checks (exit 1 if a critical one fails).

    A monitor can run it: an unreachable host is a failed check, not a crash.
    """
    from ops.dr import status as status_mod

    report = status_mod.collect(load_settings())
    if json:
        print(json_mod.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(status_mod.render(report)))
    if report.failed:
        raise Exit(
            f"status: {len(report.failed)} critical check(s) failed: {', '.join(report.failed)}", 1
        )


@task(
    help={
        "planned": "a planned switchover: GitLab stopped on the master and a final pass first",
        "dry-run": "print the plan with what is known of each step; change nothing",
        "yes": "do not ask for confirmation",
        "accept-data-loss": "go on with a stale snapshot or one without gitlab-secrets.json",
        "allow-image-mismatch": "go on when the GitLab images differ",
        "skip-health-check": "go on when the slave's sidecar is not healthy",
        "snapshot": "start from this snapshot (a name from inv snapshots) rather than the newest",
        "before": "start from the newest snapshot taken at or before TIME: ISO 8601 with a zone "
        "(2026-11-25T11:30:00Z) or an age (30m ago, 2h ago, 1d ago)",
        "json": "print the report as JSON",
    }
)
@edge
def promote_slave(
    c: Any,
    planned: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    accept_data_loss: bool = False,
    allow_image_mismatch: bool = False,
    skip_health_check: bool = False,
    snapshot: str = "",
    before: str = "",
    json: bool = False,
) -> None:
    """Promote the slave to master: the disaster-recovery procedure, every step recorded.

    Preflight, freshness, stop the master's sync, fence the master, start GitLab on the slave
    from its newest complete snapshot, open the slave, move the Elastic IP, bump the epoch,
    report RTO and RPO. Killed at any step, run it again: it resumes. Run after success, it
    changes nothing. Refusals exit 3 and name the flag that goes on anyway.

    --snapshot or --before starts from an older snapshot, when the master's data was damaged
    rather than lost: the plan and the report say what the writes after it were. A resumed
    promotion keeps the snapshot it began with.
    """
    import sys

    from ops.dr import promote as promote_mod

    flags = promote_mod.Flags(
        planned, accept_data_loss, allow_image_mismatch, skip_health_check, snapshot, before
    )
    confirm = promote_mod.confirm_on_terminal(yes, out=sys.stderr if json else sys.stdout)
    report, plan = promote_mod.promote(
        load_settings(), flags, progress("promote", json), confirm, dry_run=dry_run
    )
    if report is None:
        print("\n".join([*plan, "dry run: nothing was changed"]))
    else:
        print(json_mod.dumps(report.to_dict(), indent=2) if json else "\n".join(report.lines()))


@task(help={"json": "print the list as JSON (the sidecar's gitlab-sync snapshots --json)"})
@edge
def snapshots(c: Any, json: bool = False) -> None:
    """The slave's point-in-time snapshots, newest first, and which were verified.

    For each: name, instant, age, size, how it was made (one instant, or the fallback's live
    files) and whether it was verified. Promote from one of them with inv promote-slave
    --snapshot NAME (or --before TIME).
    """
    from ops.dr import snapshots as snapshots_mod

    listing = snapshots_mod.collect(load_settings())
    shown = snapshots_mod.render(listing)
    print(json_mod.dumps(listing.to_json(), indent=2) if json else "\n".join(shown))


@task(
    help={
        "snapshot": "the snapshot to verify (default: current); inv snapshots lists them",
        "json": "print the result as JSON (progress goes to stderr)",
        "timeout": "seconds to wait for the throwaway GitLab to be ready (default READY_TIMEOUT)",
    }
)
@edge
def verify_slave(c: Any, snapshot: str = "", json: bool = False, timeout: float = -1.0) -> None:
    """Prove a snapshot on the slave: a throwaway GitLab on a writable copy of it, no network.

    Runs the drill's checks (readiness, PostgreSQL out of recovery, every repository fsck-clean
    with its refs resolving, uploads and registry links), records the result in the snapshot's
    metadata (inv snapshots, inv status show it), and throws the copy away. Exit 1 when the
    snapshot fails a check.
    """
    from ops.dr import verify_slave as verify_mod

    outcome = verify_mod.verify(
        load_settings(), snapshot, None if timeout < 0 else timeout, progress("verify", json)
    )
    print(json_mod.dumps(outcome.to_json(), indent=2) if json else "\n".join(outcome.render()))
    if not outcome.ok:
        failures = "; ".join(outcome.verification.failures())
        raise Exit(f"verify-slave: snapshot {outcome.snapshot} failed: {failures}", 1)


@task(
    help={
        "reuse": "take this repaired instance (the fenced old master) instead of a new one",
        "timeout": "seconds to wait for the first complete pass (default 600)",
    }
)
@edge
def rebuild_slave(c: Any, reuse: str = "", timeout: float = 600.0) -> None:
    """Give the master a new slave after a promotion: a fresh instance, or --reuse a repaired one.

    The instance is launched from the AMI (or retagged), paired, and the first pass awaited;
    afterwards inv status is green and a second promotion works.
    """
    from ops.dr import rebuild as rebuild_mod
    from ops.dr import status as status_mod

    loaded = load_settings()
    rebuild_mod.rebuild_slave(
        loaded,
        progress=progress("rebuild"),
        reuse=reuse,
        timeout=timeout,
    )
    print("\n".join(status_mod.render(status_mod.collect(loaded))))


@task(
    help={
        "directory": "the sandbox's folder (default .sandbox in the project)",
        "gitlab-image": "GitLab image for both instances (default the stand-in)",
        "json": "print what was started as JSON",
    }
)
@edge
def sandbox_up(
    c: Any,
    directory: str = "",
    gitlab_image: str = "gitlab-dr/gitlab-standin:local",
    json: bool = False,
) -> None:
    """Start the local sandbox: moto for AWS, two sshd "instances", the Elastic IP's forwarder.

    Registers an AMI and runs inv launch against moto, then writes every setting to
    <directory>/sandbox.env: ENV_FILE=.sandbox/sandbox.env inv pair | status | promote-slave.
    Already up: changes nothing. inv sandbox.down removes all of it.
    """
    from ops.rehearsal import sandbox as sandbox_mod

    where = Path(directory) if directory else sandbox_mod.DEFAULT_DIR
    state = sandbox_mod.up(where, progress("sandbox", json), gitlab_image=gitlab_image)
    print(json_mod.dumps(state.to_dict(), indent=2) if json else "\n".join(state.lines()))


@task(
    help={
        "directory": "the sandbox's folder (default .sandbox in the project)",
        "json": "print what was removed as JSON",
    }
)
@edge
def sandbox_down(c: Any, directory: str = "", json: bool = False) -> None:
    """Remove the sandbox: its processes, containers, stacks, volumes and files (idempotent)."""
    from ops.rehearsal import sandbox as sandbox_mod

    where = Path(directory) if directory else sandbox_mod.DEFAULT_DIR
    removed = sandbox_mod.down(where, progress("sandbox", json))
    if json:
        print(json_mod.dumps({"removed": removed}, indent=2))


@task(
    help={
        "load-seconds": "how long the load runs at most before the master dies (default 20)",
        "seed": "seed for the moment the master dies (default: random)",
        "keep": "leave the sandbox up afterwards (inv sandbox.down removes it)",
        "directory": "the sandbox's folder (default .sandbox)",
        "json": "print the report as one JSON object",
    }
)
@edge
def drill(
    c: Any,
    load_seconds: float = 20.0,
    seed: int = -1,
    keep: bool = False,
    directory: str = ".sandbox",
    json: bool = False,
) -> None:
    """The disaster-recovery rehearsal in the local sandbox; exits 1 if a verification fails.

    Sandbox up, pair, a load of pushes, rows and uploads, the master killed at a random
    moment, promote-slave, every write acknowledged before the snapshot checked through the
    Elastic IP, the old master revived and shown to reach nothing, rebuild-slave, the new pair
    syncing. Prints RTO, RPO, each step's time and each verification.
    """
    from ops.rehearsal import drill as drill_mod

    report = drill_mod.drill(
        Path(directory),
        progress=progress("drill", json),
        load_seconds=load_seconds,
        seed=None if seed < 0 else seed,
        keep=keep,
    )
    print(json_mod.dumps(report.to_dict(), indent=2) if json else "\n".join(report.lines()))
    if not report.ok:
        failed = [v.name for v in report.verifications if not v.ok]
        raise Exit(f"drill: {len(failed)} verification(s) failed: {', '.join(failed)}", 1)


@task(help={"json": "print only the policy document (for aws iam create-policy)"})
@edge
def iam_policy(c: Any, json: bool = False) -> None:
    """The IAM policy the operator needs, derived from the AWS calls the code makes.

    For build-ami (with what Packer documents), launch, pair, status, promote-slave and
    rebuild-slave; scoped to DNS_ZONE's record and KMS_KEY_ID's key when they are set.
    """
    from ops.aws import iam

    policy = iam.operator_policy(load_settings())
    print(json_mod.dumps(policy.document(), indent=2) if json else "\n".join(policy.lines()))


ns = Collection(
    settings,
    launch,
    build_ami,
    pair,
    status,
    snapshots,
    verify_slave,
    promote_slave,
    rebuild_slave,
    drill,
    iam_policy,
)
ns.add_collection(Collection("sandbox", up=sandbox_up, down=sandbox_down))
