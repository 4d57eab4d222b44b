"""The embedded default: AWS and two EC2 hosts, on this machine (``inv sandbox.up``/``down``).

What stands in for what:

- **AWS**: a moto server (``python -m moto.server``, a background process from this venv) on a
  127.0.0.1 port. An AMI is registered in it and ``inv launch``'s code runs against it, so the
  security groups, the two instances (tagged Role=master / Role=slave), their data volumes and
  the Elastic IP exist there, and everything that reads AWS reads them.
- **The two instances**: two sshd instances (:mod:`ops.rehearsal.instance`: containers from
  ``images/sandbox-host`` in front of the local Docker engine), each on its own 127.0.0.1 port
  with its own host key. Both front the same engine, so each instance gets its own Compose
  project name, folders and ports.
- **What is keyed by instance**: in AWS a promotion swaps the Role tags, so the address of an
  instance (``INSTANCE_HOSTS``, its sshd's port for its public address) and its own settings
  (``INSTANCE_OVERRIDES``) are keyed by instance id, never by role; after a promotion
  ``inv status`` still reaches each instance's engine with that instance's settings.
- **The Elastic IP**: a forwarder (``python -m ops.rehearsal.forwarder``) on a 127.0.0.1
  port, sending each client to the GitLab HTTP port of the instance that holds the Elastic IP
  in moto, and resetting clients when that instance is closed to them (in ``gitlab-slave``).
- **GitLab**: the stand-in image (``gitlab-dr/gitlab-standin:local``) as ``GITLAB_IMAGE``.
- **Their data volumes**: a btrfs filesystem in a sparse loop file for each instance, with the
  subvolumes ``gitlab`` and ``gitlab-sync`` (GITLAB_HOME, SYNC_HOME), as the AMI formats an
  instance's EBS data volume, so the sync runs its snapshots path; ``SANDBOX_FILESYSTEM=plain``
  puts them in plain folders instead (the fallback path, and no root needed for it).

Every setting goes to ``<dir>/sandbox.env``, so ``ENV_FILE=.sandbox/sandbox.env inv pair`` (or
``status``, ``promote-slave``) is the same code as on AWS with other settings. What was started
is recorded in ``<dir>/state.json`` as it is started (:mod:`ops.rehearsal.layout`);
:func:`down` (:mod:`ops.rehearsal.teardown`) removes all of it and is idempotent. Names derive
from the folder, so two sandboxes (a developer's and a test's) do not meet.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors

from gitlab_sync.waits import wait_until
from ops import settings as settings_mod
from ops.aws import client as aws
from ops.aws import launch as launch_mod
from ops.aws.writer import Ec2Writer, Route53Writer
from ops.dr import topology
from ops.errors import SandboxError
from ops.hosts import ssh as hosts
from ops.progress import Progress
from ops.rehearsal import prometheus, teardown, volumes
from ops.rehearsal.instance import (
    SshdInstance,
    build_host_image,
    keygen,
    known_hosts_line,
    tar_files,
)
from ops.rehearsal.layout import (
    DEFAULT_DIR,
    DNS_ZONE,
    HOSTNAME,
    LABEL,
    NAMES,
    ROOT,
    STACK_PORTS,
    Instance,
    SandboxLayout,
    State,
    render_env,
    sandbox_values,
)
from ops.rehearsal.local import base_image, docker_errors, local_engine
from ops.rehearsal.processes import FORWARDER, MOTO, alive, base_env, free_port, http_answers, spawn
from ops.rehearsal.teardown import down
from ops.settings import Settings

__all__ = [
    "DEFAULT_DIR",
    "STANDIN_IMAGE",
    "State",
    "down",
    "problems",
    "running",
    "tar_files",
    "up",
]

STANDIN_IMAGE = "gitlab-dr/gitlab-standin:local"
START_TIMEOUT = 30.0


def problems(state: State) -> list[str]:
    """What of a recorded sandbox is not running (empty: all of it is)."""
    out = []
    layout = SandboxLayout(Path(state.root))
    if not alive(state.moto_pid, MOTO):
        out.append("the moto server is not running")
    if not alive(state.forwarder_pid, FORWARDER):
        out.append("the forwarder is not running")
    if not alive(state.prometheus_pid, prometheus.MARKER):
        out.append("Prometheus is not running")
    client = local_engine()
    for name in NAMES:
        try:
            with docker_errors(f"looking at {layout.container(name)}"):
                container = client.containers.get(layout.container(name))
        except SandboxError as exc:
            if not isinstance(exc.__cause__, docker.errors.NotFound):
                raise
            out.append(f"host container {layout.container(name)} is gone")
            continue
        if container.status != "running":
            out.append(f"host container {layout.container(name)} is {container.status}")
    if not layout.env_file.is_file():
        out.append(f"{layout.env_file} is missing")
    return out + volumes.unmounted(layout, state.filesystem)


def up(
    directory: Path = DEFAULT_DIR,
    progress: Progress = print,
    *,
    gitlab_image: str = STANDIN_IMAGE,
) -> State:
    """Start the sandbox in ``directory`` (see the module's docstring) and return its record.

    Already up: changes nothing. Partly up, or a failure on the way: a :class:`SandboxError`
    (what was started on the way is removed first).
    """
    layout = SandboxLayout(directory.resolve())
    filesystem = _from_environment("SANDBOX_FILESYSTEM").sandbox_filesystem
    dns = _from_environment("SANDBOX_DNS").sandbox_dns
    existing = State.load(layout)
    if existing is not None:
        found = problems(existing)
        if not found:
            progress(f"already up in {layout.root}")
            return existing
        raise SandboxError(
            f"the sandbox in {layout.root} is partly up ({'; '.join(found)}): "
            "run inv sandbox.down first"
        )
    if layout.root.exists() and any(layout.root.iterdir()):
        raise SandboxError(f"{layout.root} holds files of an earlier sandbox: inv sandbox.down")
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(layout.root, 0o700)
    state = State(
        str(layout.root),
        layout.project,
        started_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        filesystem=filesystem,
        dns=dns,
    )
    state.save(layout)
    try:
        _up(layout, state, progress, gitlab_image)
    except BaseException as exc:
        progress(f"failed ({exc}); removing what was started")
        for line in teardown.remove_all(layout.root, lambda _line: None).left:
            progress(line)
        if isinstance(exc, OSError | subprocess.SubprocessError):
            raise SandboxError(f"sandbox.up failed: {exc}") from exc
        raise
    return state


@contextlib.contextmanager
def running(
    directory: Path, progress: Progress = print, *, gitlab_image: str = STANDIN_IMAGE
) -> Iterator[State]:
    """A sandbox for the length of a ``with`` block (the drill, tests): up, then down."""
    try:
        yield up(directory, progress, gitlab_image=gitlab_image)
    finally:
        down(directory, progress)


def _up(layout: SandboxLayout, state: State, progress: Progress, gitlab_image: str) -> None:
    client = local_engine()
    base = _images(client, progress, gitlab_image)
    progress("keys: an operator key and a host key for each instance")
    keygen(layout.client_key, "sandbox-operator")
    for name in NAMES:
        keygen(layout.host_key(name), f"sandbox-host-{name}")
    volumes.make(layout, state.filesystem, progress)
    _start_moto(layout, state, progress)
    state.gitlab_url = f"http://127.0.0.1:{free_port()}"  # the forwarder's, the Elastic IP's
    state.registry_address = f"127.0.0.1:{free_port()}"  # the same forwarder's, the registry's

    def values(instances: tuple[Instance, ...] = ()) -> dict[str, str]:
        return sandbox_values(
            layout,
            moto_url=state.moto_url,
            base_image=base,
            gitlab_image=gitlab_image,
            sync_image=sync_image(),
            sync_address_host=gateway,
            filesystem=state.filesystem,
            dns=state.dns,
            public_url=state.gitlab_url,
            ami_id=state.ami_id,
            instances=instances,
        )

    gateway = _bridge_gateway(client)
    ids = _launch(layout, state, progress, values)
    instances = []
    for name in NAMES:
        port = _start_host(client, layout, state, name)
        progress(f"instance {ids[name]}: sshd container {layout.container(name)} on {port}")
        ports = tuple((key, free_port()) for key in STACK_PORTS)
        instances.append(Instance(name, ids[name], port, ports))
        state.instances.append(
            {
                "name": name,
                "instance_id": ids[name],
                "launched_as": "master" if name == "a" else "slave",
                "ssh": f"127.0.0.1:{port}",
                "stack": layout.stack(name),
                "ports": dict(ports),
            }
        )
        state.save(layout)
    layout.known_hosts.write_text(
        "".join(known_hosts_line(i.ssh_port, layout.host_key(i.name)) for i in instances)
    )
    settings = _write_settings(layout, values(tuple(instances)))
    topo = topology.resolve(settings, topology.read_aws(settings))
    for side in topo.sides:
        hosts.preflight(side.host, side.settings)
        progress(f"{side.role} {side.instance_id}: Docker answers over ssh://{side.host.target}")
    _start_forwarder(layout, state, progress)
    _start_prometheus(layout, state, progress, instances)
    progress("up")


def _bridge_gateway(client: docker.DockerClient) -> str:
    """The engine's bridge address, where containers reach ports published on the host."""
    with docker_errors("reading the bridge network"):
        ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    return str(ipam.get("Gateway") or ipaddress.ip_network(ipam["Subnet"])[1])


def _from_environment(name: str) -> Settings:
    """The default settings but setting ``name``, taken from the environment when set there: the
    sandbox's own choices are never read from a developer's .env (it describes their pair)."""
    environ = {k: v for k, v in os.environ.items() if k == name}
    return settings_mod.load(environ=environ, env_file=Path(os.devnull))


def sync_image() -> str:
    """The sidecar image the sandbox's stacks run: SYNC_IMAGE from the environment (a test's own
    tag), else the default."""
    image: str = _from_environment("SYNC_IMAGE").sync_image
    return image


def _images(client: docker.DockerClient, progress: Progress, gitlab_image: str) -> str:
    """Build the host image on the base image (returned); check the others are there."""
    progress("images: base image, the host image (images/sandbox-host), GitLab and sidecar images")
    base = base_image()
    build_host_image(client, base)
    for image in (gitlab_image, sync_image()):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise SandboxError(f"image {image} is missing: run make images") from None
    return base


def _log_tail(log: Path) -> Callable[[], str]:
    """What a background process's log ends with (for a wait's message)."""

    def tail() -> str:
        lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
        return f"its log ends: {lines[-1][:200]}" if lines else ""

    return tail


def _start_moto(layout: SandboxLayout, state: State, progress: Progress) -> None:
    moto_port = free_port()
    state.moto_url = f"http://127.0.0.1:{moto_port}"
    progress(f"moto: AWS on {state.moto_url}")
    env = {**base_env(), "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
    argv = [sys.executable, "-m", MOTO, "-H", "127.0.0.1", "-p", str(moto_port)]
    state.moto_pid = spawn(argv, layout.root / "moto.log", env, layout.root)
    state.save(layout)
    wait_until(
        lambda: http_answers(f"{state.moto_url}/moto-api/"),
        timeout=START_TIMEOUT,
        what="the moto server",
        interval=0.1,
        error=SandboxError,
        detail=_log_tail(layout.root / "moto.log"),
    )
    layout.credentials.write_text(
        "[default]\naws_access_key_id = sandbox\naws_secret_access_key = sandbox\n"
    )
    layout.credentials.chmod(0o600)


def _launch(
    layout: SandboxLayout,
    state: State,
    progress: Progress,
    values: Callable[[], dict[str, str]],
) -> dict[str, str]:
    """Register the AMI and run inv launch's code against moto; the instance ids by name."""
    settings = _write_settings(layout, values())
    ec2 = aws.ec2_client(settings)
    if state.dns == "name":
        _make_zone(settings, progress)
    state.ami_id = Ec2Writer(settings, ec2).register_ami(
        f"{layout.project}-ami", "the sandbox's AMI", root_device="/dev/xvda", root_size_gb=8
    )
    state.save(layout)
    settings = _write_settings(layout, values())
    progress(f"launch: AMI {state.ami_id}, then inv launch against moto")
    report = launch_mod.launch(settings, ec2=ec2)
    for done in report.done:
        progress(f"launch: {done.text()}")
    if report.pair.master is None or report.pair.slave is None:
        raise SandboxError("inv launch left no master or no slave in moto")
    return {"a": report.pair.master.instance_id, "b": report.pair.slave.instance_id}


def _make_zone(settings: Settings, progress: Progress) -> None:
    """The hosted zone a company would have made: inv launch creates GitLab's record in it."""
    zone = Route53Writer(aws.route53_client(settings)).create_zone(DNS_ZONE, settings.project_name)
    progress(f"dns: hosted zone {DNS_ZONE} ({zone}) in moto; no Elastic IP")


def _start_forwarder(layout: SandboxLayout, state: State, progress: Progress) -> None:
    port = int(state.gitlab_url.rsplit(":", 1)[1])
    door = f"{HOSTNAME}'s" if state.dns == "name" else "the Elastic IP's"
    progress(f"forwarder: {door} address is {state.gitlab_url}")
    argv = [
        sys.executable,
        "-m",
        FORWARDER,
        "--listen",
        f"127.0.0.1:{port}",
        "--status",
        str(layout.forwarder_status),
        "--sandbox",
        str(layout.root),
        "--also",
        f"registry={state.registry_address}",
    ]
    env = {**base_env(), "ENV_FILE": str(layout.env_file), "PYTHONPATH": str(ROOT)}
    state.forwarder_pid = spawn(argv, layout.root / "forwarder.log", env, ROOT)
    state.save(layout)
    wait_until(
        layout.forwarder_status.is_file,
        timeout=START_TIMEOUT,
        what="the forwarder",
        interval=0.1,
        error=SandboxError,
        detail=_log_tail(layout.root / "forwarder.log"),
    )
    decision = json.loads(layout.forwarder_status.read_text())
    progress(f"forwarder: {decision.get('reason')}")


def _start_prometheus(
    layout: SandboxLayout, state: State, progress: Progress, instances: list[Instance]
) -> None:
    """Prometheus scraping both instances' sidecars (published on 127.0.0.1), by instance name."""
    targets = {i.name: f"127.0.0.1:{dict(i.ports)['METRICS_PORT']}" for i in instances}
    found = prometheus.start(layout.prometheus, targets, prometheus.SANDBOX_LAG_ALERT)
    state.prometheus_pid, state.prometheus_url = found.pid, found.url
    state.save(layout)
    progress(f"prometheus: {found.url}, scraping {', '.join(sorted(targets.values()))}")


def _write_settings(layout: SandboxLayout, values: dict[str, str]) -> Settings:
    header = (
        "gitlab-dr sandbox settings, written by inv sandbox.up (inv sandbox.down removes them).\n"
        f"Use: ENV_FILE={layout.env_file} inv pair | status | promote-slave\n"
        "INSTANCE_HOSTS / INSTANCE_OVERRIDES are keyed by instance id: they follow a promotion."
    )
    layout.env_file.write_text(render_env(values, header))
    layout.env_file.chmod(0o600)
    return settings_mod.load(environ={}, env_file=layout.env_file)


def _start_host(client: docker.DockerClient, layout: SandboxLayout, state: State, name: str) -> int:
    """Start instance ``name``'s sshd container; return its 127.0.0.1 port."""
    state.containers.append(layout.container(name))
    state.save(layout)
    host = (
        SshdInstance(client)
        .with_name(layout.container(name))
        .with_label(LABEL, str(layout.root))
        .with_keys(layout.host_key(name), layout.client_key)
        .start(START_TIMEOUT)
    )
    return host.port
