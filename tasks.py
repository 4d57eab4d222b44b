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

from ops import ami as ami_mod
from ops import launch as launch_mod
from ops import settings as settings_mod
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

    The slave's GitLab is only created. Waits for the first complete pass, with progress, then
    prints the pair's status. Safe to run again: it repairs what is missing, nothing else.
    """
    from ops import pair as pair_mod
    from ops import status as status_mod

    loaded = load_settings()
    result = pair_mod.pair(
        loaded, progress=lambda line: print(f"pair: {line}", flush=True), timeout=timeout
    )
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
    from ops import status as status_mod

    report = status_mod.collect(load_settings())
    if json:
        print(json_mod.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(status_mod.render(report)))
    if not report.ok:
        failed = [c.name for c in report.checks if c.critical and not c.ok]
        raise Exit(f"status: {len(failed)} critical check(s) failed: {', '.join(failed)}", 1)


ns = Collection(settings, launch, build_ami, pair, status)
