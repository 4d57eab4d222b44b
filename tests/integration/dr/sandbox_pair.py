"""What the promotion tests read of their sandbox: AWS's view of the pair, a command's output in
one of an instance's containers, and the slave's snapshot list."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import docker
from docker.models.containers import Container

from ops import settings as settings_mod
from ops.aws import client as aws
from ops.aws import inventory
from ops.hosts.engine import labelled
from ops.rehearsal.layout import SandboxLayout, State
from tests.integration.tasks_cli import inv

STANDIN = os.environ.get("STANDIN_IMAGE", "gitlab-dr/gitlab-standin:local")


def pair_state(env_file: Path) -> inventory.PairState:
    settings = settings_mod.load({}, env_file=env_file)
    return inventory.describe_pair(settings, aws.ec2_client(settings))


def service_container(
    env_file: Path, instance_id: str, service: str, *, stopped: bool = True
) -> Container:
    """``service``'s container on the sandbox's ``instance_id`` (a stopped one too, unless
    ``stopped`` is False)."""
    layout = SandboxLayout(env_file.parent)
    state = State.load(layout)
    assert state is not None
    name = state.instance_name(instance_id)
    assert name is not None, instance_id
    labels = [
        f"com.docker.compose.project={layout.stack(name)}",
        f"com.docker.compose.service={service}",
    ]
    (container,) = labelled(docker.from_env(), *labels, stopped=stopped)
    return container


def service_status(env_file: Path, instance_id: str, service: str) -> str:
    """The state (running, exited...) of ``service``'s container on the sandbox's
    ``instance_id``."""
    return str(service_container(env_file, instance_id, service).status)


def in_container(env_file: Path, instance_id: str, service: str, command: str) -> tuple[int, str]:
    """``sh -c command`` in ``service``'s container of the sandbox's ``instance_id``: its exit
    code and output."""
    container = service_container(env_file, instance_id, service, stopped=False)
    done = container.exec_run(["sh", "-c", command])
    assert isinstance(done.output, bytes)
    code = -1 if done.exit_code is None else int(done.exit_code)
    return code, done.output.decode(errors="replace")


def snapshot_listing(env_file: Path) -> dict[str, Any]:
    """``inv snapshots --json``, parsed."""
    done = inv("snapshots", "--json", env_file=env_file)
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def refused_promotion(env_file: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """``inv promote-slave --yes ARGS`` refused: exit 3, one line, nothing changed in AWS."""
    before = pair_state(env_file)
    done = inv("promote-slave", "--yes", *args, env_file=env_file, extra_env=env, timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    after = pair_state(env_file)
    assert [(h.instance_id, h.role, h.security_groups) for h in after.hosts] == [
        (h.instance_id, h.role, h.security_groups) for h in before.hosts
    ]
    assert after.eip_holder == before.eip_holder
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refused: "), done.stderr
    return lines[0]
