"""The embedded default: AWS and two EC2 hosts, on this machine (``inv sandbox.up``/``down``).

What stands in for what:

- **AWS**: a moto server (``python -m moto.server``, a background process from this venv) on a
  127.0.0.1 port. An AMI is registered in it and ``inv launch``'s code runs against it, so the
  security groups, the two instances (tagged Role=master / Role=slave), their data volumes and
  the Elastic IP exist there, and everything that reads AWS reads them.
- **The two instances**: two containers from ``images/sandbox-host`` (OpenSSH's sshd in front of the
  local Docker engine), each on its own 127.0.0.1 port with its own host key. Both front the
  same engine, so each instance gets its own Compose project name, folders and ports.
- **What is keyed by instance**: in AWS a promotion swaps the Role tags, so the address of an
  instance (``INSTANCE_HOSTS``, its sshd's port for its public address) and its own settings
  (``INSTANCE_OVERRIDES``) are keyed by instance id, never by role; after a promotion
  ``inv status`` still reaches each instance's engine with that instance's settings.
- **The Elastic IP**: a forwarder (``python -m ops.rehearsal.forwarder``) on a 127.0.0.1
  port, sending each client to the GitLab HTTP port of the instance that holds the Elastic IP
  in moto, and resetting clients when that instance is closed to them (in ``gitlab-slave``).
- **GitLab**: the stand-in image (``gitlab-dr/gitlab-standin:local``) as ``GITLAB_IMAGE``.

Every setting goes to ``<dir>/sandbox.env``, so ``ENV_FILE=.sandbox/sandbox.env inv pair`` (or
``status``, ``promote-slave``) is the same code as on AWS with other settings. What was started
is recorded in ``<dir>/state.json`` as it is started; :func:`down` removes all of it (the two
processes, the containers, the stacks and their volumes and networks, the folder) and is
idempotent. Names derive from the folder, so two sandboxes (a developer's and a test's) do not
meet.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from ops import settings as settings_mod
from ops.aws import client as aws
from ops.aws import launch as launch_mod
from ops.dr import topology
from ops.errors import OpsError, SandboxError
from ops.hosts import engine as hosts
from ops.progress import Progress
from ops.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HOST_DIR = ROOT / "images" / "sandbox-host"
HOST_IMAGE = "gitlab-dr/sandbox-host:local"
STANDIN_IMAGE = "gitlab-dr/gitlab-standin:local"
DEFAULT_DIR = ROOT / ".sandbox"
LABEL = "gitlab-dr.sandbox"
"""Label on the sandbox's host containers; its value is the sandbox's folder."""
REGION = "eu-west-1"
USER = "admin"
NAMES = ("a", "b")
"""The two instances, by the role they start in: a is launched as master, b as slave."""
STACK_PORTS = (
    "GITLAB_HTTP_PORT",
    "GITLAB_HTTPS_PORT",
    "GITLAB_SSH_PORT",
    "GITLAB_REGISTRY_PORT",
    "SYNC_PORT",
)
START_TIMEOUT = 30.0


# --- names and settings (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where one sandbox keeps its files, and the names of what it starts (from its folder)."""

    root: Path

    @property
    def tag(self) -> str:
        return hashlib.sha256(str(self.root).encode()).hexdigest()[:8]

    @property
    def project(self) -> str:
        """PROJECT_NAME: the Project tag in moto."""
        return f"gitlab-dr-sandbox-{self.tag}"

    def stack(self, name: str) -> str:
        """The Compose project of instance ``name`` on the shared engine."""
        return f"gdrsb-{self.tag}-{name}"

    def container(self, name: str) -> str:
        """The name of instance ``name``'s sshd container."""
        return f"gdrsb-{self.tag}-host-{name}"

    @property
    def env_file(self) -> Path:
        return self.root / "sandbox.env"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def credentials(self) -> Path:
        return self.root / "aws-credentials"

    @property
    def client_key(self) -> Path:
        return self.root / "keys" / "id_ed25519"

    def host_key(self, name: str) -> Path:
        return self.root / "keys" / f"host-{name}"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def forwarder_status(self) -> Path:
        return self.root / "forwarder.json"

    def home(self, name: str) -> Path:
        return self.root / "instances" / name


@dataclass(frozen=True)
class Instance:
    """One sandbox instance: its id in moto, its sshd port and its stack's ports."""

    name: str
    instance_id: str
    ssh_port: int
    ports: tuple[tuple[str, int], ...]


def _quote(value: str) -> str:
    if "'" in value or "\n" in value:
        raise SandboxError(f"cannot write {value!r} to the sandbox's settings file")
    return f"'{value}'"


def render_env(values: dict[str, str], header: str = "") -> str:
    """A settings file: ``KEY='value'`` lines, after ``header``'s comment lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [f"{key}={_quote(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def sandbox_values(
    layout: Layout,
    *,
    moto_url: str,
    base_image: str,
    gitlab_image: str,
    sync_address_host: str,
    public_url: str = "",
    ami_id: str = "",
    instances: tuple[Instance, ...] = (),
) -> dict[str, str]:
    """Every setting of the sandbox (pure). The per-instance ones are keyed by instance id."""
    values = {
        "PROJECT_NAME": layout.project,
        "GITLAB_IMAGE": gitlab_image,
        "GITLAB_HOSTNAME": "gitlab.sandbox.test",
        "BASE_IMAGE": base_image,
        "SYNC_INTERVAL": "1m",
        "SSH_USER": USER,
        "SSH_KEY_FILE": str(layout.client_key),
        "SSH_KNOWN_HOSTS": str(layout.known_hosts),
        "SSH_CONNECT_TIMEOUT": "5s",
        "MASTER_HOST": "",
        "SLAVE_HOST": "",
        "SLAVE_SYNC_ADDRESS": "",
        "MASTER_OVERRIDES": "",
        "SLAVE_OVERRIDES": "",
        "PUBLIC_URL": public_url,
        "STATE_DIR": str(layout.root / "state"),
        "USE_AWS": "true",
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_SHARED_CREDENTIALS_FILE": str(layout.credentials),
        "AMI_ID": ami_id,
        "INSTANCE_TYPE": "t3.medium",
        "AVAILABILITY_ZONES": "",
        "DATA_VOLUME_GB": "10",
        "CLIENT_CIDRS": "127.0.0.0/8",
        "ADMIN_CIDR": "127.0.0.1/32",
        "AWS_WAIT_TIMEOUT": "30s",
    }
    hosts_words, override_words = [], []
    for inst in instances:
        iid = inst.instance_id
        hosts_words.append(f"{iid}=127.0.0.1:{inst.ssh_port}")
        ports = dict(inst.ports)
        own = {
            "PROJECT_NAME": layout.stack(inst.name),
            "GITLAB_HOME": str(layout.home(inst.name) / "gitlab"),
            "SYNC_HOME": str(layout.home(inst.name) / "gitlab-sync"),
            **{name: str(port) for name, port in ports.items()},
            # Where a master's sidecar reaches this instance's receiver when it is the slave.
            "SLAVE_SYNC_ADDRESS": f"{sync_address_host}:{ports['SYNC_PORT']}",
        }
        override_words += [f"{iid}:{key}={value}" for key, value in own.items()]
    values["INSTANCE_HOSTS"] = " ".join(hosts_words)
    values["INSTANCE_OVERRIDES"] = " ".join(override_words)
    return values


# --- the record of what was started --------------------------------------------------------------


@dataclass
class State:
    """What one sandbox started, saved to ``state.json`` as each thing is started."""

    root: str
    project: str
    started_at: str = ""
    moto_pid: int = 0
    moto_url: str = ""
    forwarder_pid: int = 0
    gitlab_url: str = ""
    ami_id: str = ""
    containers: list[str] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)

    def save(self, layout: Layout) -> None:
        tmp = layout.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        tmp.replace(layout.state_file)

    @classmethod
    def load(cls, layout: Layout) -> State | None:
        try:
            data = json.loads(layout.state_file.read_text())
        except (OSError, ValueError):
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def lines(self) -> list[str]:
        """How to use the sandbox, for a person."""
        env_file = Layout(Path(self.root)).env_file
        out = [
            f"GitLab, through the Elastic IP: {self.gitlab_url}",
            f"AWS (moto): {self.moto_url}",
        ]
        out += [
            f"instance {i['instance_id']} (launched as {i['launched_as']}): ssh://admin@{i['ssh']}"
            for i in self.instances
        ]
        out += [
            f"settings: {env_file}",
            f"next: ENV_FILE={env_file} inv pair   (then inv status, inv promote-slave)",
        ]
        return out

    def to_dict(self) -> dict[str, Any]:
        layout = Layout(Path(self.root))
        return {
            **self.__dict__,
            "env_file": str(layout.env_file),
            "use": f"ENV_FILE={layout.env_file} inv pair",
        }


# --- small helpers ------------------------------------------------------------------------------


def free_port() -> int:
    """A port free on 127.0.0.1 now (bound by the kernel's choice, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _keygen(path: Path, comment: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SandboxError(f"ssh-keygen failed for {path}: {exc}") from exc
    return path


def _public_key(private: Path) -> str:
    kind, data, *_ = Path(f"{private}.pub").read_text().split()
    return f"{kind} {data}"


def tar_files(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar archive of ``name: (data, mode)`` files owned by root (for ``put_archive``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, 0, 0
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _wait(what: str, ready: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.is_file():
                lines = log.read_text(errors="replace").strip().splitlines()
                tail = f" (its log ends: {lines[-1][:200]})" if lines else ""
            raise SandboxError(f"{what} not ready after {timeout:g}s{tail}")
        time.sleep(0.1)


def _ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            return conn.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - http://127.0.0.1 only
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def _alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs and its command line holds ``marker`` (so it is ours, not reused)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return status != "Z" and marker in cmdline


def _stop(pid: int, marker: str, timeout: float = 10.0) -> bool:
    """Stop process ``pid`` (TERM, then KILL) if it is ours; True if it was running."""
    if not _alive(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid, marker):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it when it was our own child
    return True


def _spawn(argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> int:
    """Start a process that outlives us (own session, no terminal), its output in ``log``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    return {name: os.environ[name] for name in keep if name in os.environ}


@contextlib.contextmanager
def _docker(what: str) -> Iterator[None]:
    try:
        yield
    except docker.errors.APIError as exc:
        raise SandboxError(f"{what} failed: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise SandboxError(f"{what} failed: {exc}") from exc


def _engine() -> docker.DockerClient:
    with _docker("connecting to the local Docker engine"):
        return docker.from_env()


def _base_image() -> str:
    try:
        done = subprocess.run(
            [str(ROOT / "scripts" / "base-image.sh")],
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr.strip().splitlines() or ["no message"])[-1]
        raise SandboxError(f"no base image: scripts/base-image.sh failed: {last}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"no base image: scripts/base-image.sh failed: {exc}") from exc
    return done.stdout.strip()


def _bridge_gateway(client: docker.DockerClient) -> str:
    """The engine's bridge address, where containers reach ports published on the host."""
    import ipaddress

    with _docker("reading the bridge network"):
        ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    return str(ipam.get("Gateway") or ipaddress.ip_network(ipam["Subnet"])[1])


# --- up -----------------------------------------------------------------------------------------


def problems(state: State) -> list[str]:
    """What of a recorded sandbox is not running (empty: all of it is)."""
    out = []
    layout = Layout(Path(state.root))
    if not _alive(state.moto_pid, "moto.server"):
        out.append("the moto server is not running")
    if not _alive(state.forwarder_pid, "ops.rehearsal.forwarder"):
        out.append("the forwarder is not running")
    client = _engine()
    for name in NAMES:
        try:
            with _docker(f"looking at {layout.container(name)}"):
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
    return out


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
    layout = Layout(directory.resolve())
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
    )
    state.save(layout)
    try:
        _up(layout, state, progress, gitlab_image)
    except BaseException as exc:
        progress(f"failed ({exc}); removing what was started")
        with contextlib.suppress(OpsError):
            down(layout.root, lambda _line: None)
        if isinstance(exc, OSError | subprocess.SubprocessError):
            raise SandboxError(f"sandbox.up failed: {exc}") from exc
        raise
    return state


def _up(layout: Layout, state: State, progress: Progress, gitlab_image: str) -> None:
    client = _engine()
    base = _images(client, progress, gitlab_image)
    progress("keys: an operator key and a host key for each instance")
    _keygen(layout.client_key, "sandbox-operator")
    for name in NAMES:
        _keygen(layout.host_key(name), f"sandbox-host-{name}")
    _start_moto(layout, state, progress)
    state.gitlab_url = f"http://127.0.0.1:{free_port()}"  # the forwarder's, the Elastic IP's

    def values(instances: tuple[Instance, ...] = ()) -> dict[str, str]:
        return sandbox_values(
            layout,
            moto_url=state.moto_url,
            base_image=base,
            gitlab_image=gitlab_image,
            sync_address_host=gateway,
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
        "".join(
            f"[127.0.0.1]:{inst.ssh_port} {_public_key(layout.host_key(inst.name))}\n"
            for inst in instances
        )
    )
    settings = _write_settings(layout, values(tuple(instances)))
    topo = topology.resolve(settings, topology.read_aws(settings))
    for side in topo.sides:
        hosts.preflight(side.host, side.settings)
        progress(f"{side.role} {side.instance_id}: Docker answers over ssh://{side.host.target}")
    _start_forwarder(layout, state, progress)
    progress("up")


def _images(client: docker.DockerClient, progress: Progress, gitlab_image: str) -> str:
    """Build the host image on the base image (returned); check the others are there."""
    progress("images: base image, the host image (images/sandbox-host), GitLab and sidecar images")
    base = _base_image()
    with _docker(f"building {HOST_IMAGE}"):
        client.images.build(
            path=str(HOST_DIR), tag=HOST_IMAGE, buildargs={"BASE_IMAGE": base}, rm=True
        )
    sync_image = settings_mod.load(environ={}, env_file=Path(os.devnull)).sync_image
    for image in (gitlab_image, sync_image):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise SandboxError(f"image {image} is missing: run make images") from None
    return base


def _start_moto(layout: Layout, state: State, progress: Progress) -> None:
    moto_port = free_port()
    state.moto_url = f"http://127.0.0.1:{moto_port}"
    progress(f"moto: AWS on {state.moto_url}")
    env = {**_base_env(), "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)]
    state.moto_pid = _spawn(argv, layout.root / "moto.log", env, layout.root)
    state.save(layout)
    _wait(
        "the moto server",
        lambda: _http_answers(f"{state.moto_url}/moto-api/"),
        START_TIMEOUT,
        layout.root / "moto.log",
    )
    layout.credentials.write_text(
        "[default]\naws_access_key_id = sandbox\naws_secret_access_key = sandbox\n"
    )
    layout.credentials.chmod(0o600)


def _launch(
    layout: Layout,
    state: State,
    progress: Progress,
    values: Callable[[], dict[str, str]],
) -> dict[str, str]:
    """Register the AMI and run inv launch's code against moto; the instance ids by name."""
    settings = _write_settings(layout, values())
    ec2 = aws.ec2_client(settings)
    with aws.aws_errors("ec2 RegisterImage", "the sandbox's AMI"):
        state.ami_id = ec2.register_image(
            Name=f"{layout.project}-ami",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
        )["ImageId"]
    state.save(layout)
    settings = _write_settings(layout, values())
    progress(f"launch: AMI {state.ami_id}, then inv launch against moto")
    report = launch_mod.launch(settings, ec2=ec2)
    for done in report.done:
        progress(f"launch: {done.text()}")
    if report.pair.master is None or report.pair.slave is None:
        raise SandboxError("inv launch left no master or no slave in moto")
    return {"a": report.pair.master.instance_id, "b": report.pair.slave.instance_id}


def _start_forwarder(layout: Layout, state: State, progress: Progress) -> None:
    port = int(state.gitlab_url.rsplit(":", 1)[1])
    progress(f"forwarder: the Elastic IP's address is {state.gitlab_url}")
    argv = [
        sys.executable,
        "-m",
        "ops.rehearsal.forwarder",
        "--listen",
        f"127.0.0.1:{port}",
        "--status",
        str(layout.forwarder_status),
        "--sandbox",
        str(layout.root),
    ]
    env = {**_base_env(), "ENV_FILE": str(layout.env_file), "PYTHONPATH": str(ROOT)}
    state.forwarder_pid = _spawn(argv, layout.root / "forwarder.log", env, ROOT)
    state.save(layout)
    _wait(
        "the forwarder",
        layout.forwarder_status.is_file,
        START_TIMEOUT,
        layout.root / "forwarder.log",
    )
    decision = json.loads(layout.forwarder_status.read_text())
    progress(f"forwarder: {decision.get('reason')}")


def _write_settings(layout: Layout, values: dict[str, str]) -> Settings:
    header = (
        "gitlab-dr sandbox settings, written by inv sandbox.up (inv sandbox.down removes them).\n"
        f"Use: ENV_FILE={layout.env_file} inv pair | status | promote-slave\n"
        "INSTANCE_HOSTS / INSTANCE_OVERRIDES are keyed by instance id: they follow a promotion."
    )
    layout.env_file.write_text(render_env(values, header))
    layout.env_file.chmod(0o600)
    return settings_mod.load(environ={}, env_file=layout.env_file)


def _start_host(client: docker.DockerClient, layout: Layout, state: State, name: str) -> int:
    """Start instance ``name``'s sshd container; return its 127.0.0.1 port."""
    with _docker(f"starting {layout.container(name)}"):
        container = client.containers.create(
            HOST_IMAGE,
            name=layout.container(name),
            detach=True,
            environment={"SSHD_DOCKER": "socket"},
            labels={LABEL: str(layout.root)},
            ports={"22/tcp": ("127.0.0.1", 0)},
            volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        )
        state.containers.append(layout.container(name))
        state.save(layout)
        container.put_archive(
            "/etc/ssh/keys",
            tar_files(
                {
                    "host_ed25519": (layout.host_key(name).read_bytes(), 0o600),
                    f"authorized_keys_{USER}": (
                        f"{_public_key(layout.client_key)}\n".encode(),
                        0o644,
                    ),
                }
            ),
        )
        container.start()
        container.reload()
        port = int(container.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
    _wait(f"sshd of {layout.container(name)}", lambda: _ssh_banner(port), START_TIMEOUT)
    return port


@contextlib.contextmanager
def running(
    directory: Path, progress: Progress = print, *, gitlab_image: str = STANDIN_IMAGE
) -> Iterator[State]:
    """A sandbox for the length of a ``with`` block (the drill, tests): up, then down."""
    try:
        yield up(directory, progress, gitlab_image=gitlab_image)
    finally:
        down(directory, progress)


# --- down ---------------------------------------------------------------------------------------


def down(directory: Path = DEFAULT_DIR, progress: Progress = print) -> list[str]:
    """Remove everything the sandbox in ``directory`` started; return what was removed.

    Idempotent: what is already gone is skipped. Found by the record and by the names and
    labels derived from the folder, so a lost ``state.json`` leaves no container behind.
    """
    layout = Layout(directory.resolve())
    state = State.load(layout)
    removed: list[str] = []

    def note(line: str) -> None:
        removed.append(line)
        progress(line)

    if state is not None:
        if _stop(state.forwarder_pid, "ops.rehearsal.forwarder"):
            note(f"stopped the forwarder (pid {state.forwarder_pid})")
        if _stop(state.moto_pid, "moto.server"):
            note(f"stopped the moto server (pid {state.moto_pid})")
        _close_ssh(layout, state)
    for pid, marker in _strays(layout):
        if _stop(pid, marker):
            what = "the forwarder" if marker == "ops.rehearsal.forwarder" else "the moto server"
            note(f"stopped {what}, left running (pid {pid})")
    client = _engine()
    for name in NAMES:
        note_all = _remove_stack(client, layout.stack(name))
        for line in note_all:
            note(line)
    with _docker("listing the sandbox's host containers"):
        found = client.containers.list(all=True, filters={"label": f"{LABEL}={layout.root}"})
    for container in found:
        with _docker(f"removing {container.name}"), contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
        note(f"removed host container {container.name}")
    if layout.root.exists():
        _remove_tree(client, layout.root)
        note(f"removed {layout.root}")
    if not removed:
        progress(f"nothing to remove: no sandbox in {layout.root}")
    return removed


def _strays(layout: Layout) -> list[tuple[int, str]]:
    """The sandbox's processes that its record does not name (a lost or partial state.json):
    its forwarder by ``--sandbox <folder>``, its moto server by its working folder."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            words = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        argv = [w.decode(errors="replace") for w in words]
        if "ops.rehearsal.forwarder" in argv and str(layout.root) in argv:
            found.append((int(proc.name), "ops.rehearsal.forwarder"))
        elif "moto.server" in argv and cwd in (str(layout.root), f"{layout.root} (deleted)"):
            found.append((int(proc.name), "moto.server"))
    return found


def _close_ssh(layout: Layout, state: State) -> None:
    """End the shared SSH connections (ControlMaster) to the sandbox's hosts, if any."""
    if not layout.env_file.is_file():
        return
    try:
        settings = settings_mod.load(environ={}, env_file=layout.env_file)
    except OpsError:
        return
    for inst in state.instances:
        try:
            host = hosts.parse_host("sandbox", str(inst["ssh"]), USER, "state.json")
            argv = hosts.ssh_argv(host, settings, [])
        except OpsError:
            continue
        argv[argv.index("-T")] = "-O"
        argv.insert(argv.index("-O") + 1, "exit")
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(argv, capture_output=True, timeout=10, check=False)


def _remove_stack(client: docker.DockerClient, project: str) -> list[str]:
    label = f"com.docker.compose.project={project}"
    out = []
    with _docker(f"removing the stack {project}"):
        for container in client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
            out.append(f"removed container {container.name}")
        for network in client.networks.list(filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
            out.append(f"removed network {network.name}")
        for volume in client.volumes.list(filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
            out.append(f"removed volume {volume.name}")
    return out


def _remove_tree(client: docker.DockerClient, root: Path) -> None:
    """Remove ``root``; files the containers made under other owners go through a container."""
    shutil.rmtree(root, ignore_errors=True)
    if not root.exists():
        return
    base = _base_image()
    with _docker(f"removing {root} through a container"):
        client.containers.run(
            base,
            ["sh", "-c", "rm -rf /sandbox/* /sandbox/.[!.]*"],
            volumes={str(root): {"bind": "/sandbox", "mode": "rw"}},
            remove=True,
        )
    shutil.rmtree(root, ignore_errors=True)
    if root.exists():
        raise SandboxError(f"could not remove {root}")
