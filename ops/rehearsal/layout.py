"""The sandbox's names, files and settings (pure), and the record of what it started.

A sandbox is known by its folder: :class:`SandboxLayout` derives every path and name from it,
so two sandboxes (a developer's and a test's) never meet. :func:`sandbox_values` is every
setting the sandbox writes to ``sandbox.env``; :class:`State` is ``state.json``.

Each instance's data lives as on an AMI's host: one filesystem (``instances/<name>/mnt``, as
``/srv`` there) holding the subvolumes ``gitlab`` (GITLAB_HOME) and ``gitlab-sync``
(SYNC_HOME). With ``SANDBOX_FILESYSTEM=btrfs`` (the default) that filesystem is btrfs in a
sparse loop file beside it (:class:`~ops.rehearsal.loopfs.LoopBtrfs`); with ``plain`` the two
are plain folders of the host's own filesystem, and the sync takes its fallback.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.errors import SandboxError
from ops.rehearsal.loopfs import LoopBtrfs

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / ".sandbox"
LABEL = "gitlab-dr.sandbox"
"""Label on the sandbox's host containers; its value is the sandbox's folder."""
REGION = "eu-west-1"
DNS_ZONE = "sandbox.test"
"""The hosted zone the sandbox makes in moto when SANDBOX_DNS=name."""
HOSTNAME = f"gitlab.{DNS_ZONE}"
"""The sandbox's GITLAB_HOSTNAME, and its DNS record's name with SANDBOX_DNS=name."""
USER = "admin"
NAMES = ("a", "b")
"""The two instances, by the role they start in: a is launched as master, b as slave."""
STACK_PORTS = (
    "GITLAB_HTTP_PORT",
    "GITLAB_HTTPS_PORT",
    "GITLAB_SSH_PORT",
    "GITLAB_REGISTRY_PORT",
    "SYNC_PORT",
    "METRICS_PORT",
)
SUBVOLUMES = ("gitlab", "gitlab-sync")
"""GITLAB_HOME and SYNC_HOME on each instance's filesystem, named as the AMI names them."""
FILESYSTEM_SIZE = "8G"
"""Each instance's loop file: sparse, so it takes on disk only what the drill writes."""


@dataclass(frozen=True)
class SandboxLayout:
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

    @property
    def prometheus(self) -> Path:
        """Prometheus' folder: its configuration, rules, data and log."""
        return self.root / "prometheus"

    def home(self, name: str) -> Path:
        return self.root / "instances" / name

    def filesystem(self, name: str) -> LoopBtrfs:
        """Instance ``name``'s btrfs in a loop file (``btrfs.img`` in its home)."""
        return LoopBtrfs(self.home(name))

    def data(self, name: str) -> Path:
        """Where instance ``name``'s GITLAB_HOME and SYNC_HOME live, as under ``/srv`` on an
        AMI's host: its btrfs's mount point (a plain folder when the sandbox runs on plain
        folders)."""
        return self.filesystem(name).mountpoint


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
    layout: SandboxLayout,
    *,
    moto_url: str,
    base_image: str,
    gitlab_image: str,
    sync_image: str = "gitlab-dr/gitlab-rsync:local",
    sync_address_host: str,
    filesystem: str = "btrfs",
    dns: str = "off",
    public_url: str = "",
    ami_id: str = "",
    instances: tuple[Instance, ...] = (),
) -> dict[str, str]:
    """Every setting of the sandbox (pure). The per-instance ones are keyed by instance id."""
    values = {
        "PROJECT_NAME": layout.project,
        "GITLAB_IMAGE": gitlab_image,
        "SYNC_IMAGE": sync_image,
        "GITLAB_HOSTNAME": HOSTNAME,
        "BASE_IMAGE": base_image,
        "SYNC_INTERVAL": "20s",
        # No throwaway GitLab on a schedule: the drill and the tests verify when they choose
        # (a test of the schedule sets its own VERIFY_EVERY).
        "VERIFY_EVERY": "0",
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
        # The "instances" are local containers: /metrics on loopback, not moto's private IPs.
        "METRICS_BIND": "127.0.0.1",
        "AWS_WAIT_TIMEOUT": "30s",
        "SANDBOX_FILESYSTEM": filesystem,
        "SANDBOX_DNS": dns,
    }
    if dns == "name":  # no Elastic IP: clients find GitLab by a record in moto's zone
        values.update(
            USE_ELASTIC_IP="false",
            DNS_ZONE=DNS_ZONE,
            DNS_NAME=HOSTNAME,
            DNS_TTL="5",
        )
    hosts_words, override_words = [], []
    for inst in instances:
        iid = inst.instance_id
        hosts_words.append(f"{iid}=127.0.0.1:{inst.ssh_port}")
        ports = dict(inst.ports)
        own = {
            "PROJECT_NAME": layout.stack(inst.name),
            "GITLAB_HOME": str(layout.data(inst.name) / SUBVOLUMES[0]),
            "SYNC_HOME": str(layout.data(inst.name) / SUBVOLUMES[1]),
            **{name: str(port) for name, port in ports.items()},
            # Where a master's sidecar reaches this instance's receiver when it is the slave.
            "SLAVE_SYNC_ADDRESS": f"{sync_address_host}:{ports['SYNC_PORT']}",
        }
        override_words += [f"{iid}:{key}={value}" for key, value in own.items()]
    values["INSTANCE_HOSTS"] = " ".join(hosts_words)
    values["INSTANCE_OVERRIDES"] = " ".join(override_words)
    return values


@dataclass
class State:
    """What one sandbox started, saved to ``state.json`` as each thing is started."""

    root: str
    project: str
    started_at: str = ""
    filesystem: str = ""
    dns: str = "off"  # SANDBOX_DNS: "name" when clients find GitLab by its Route 53 record
    moto_pid: int = 0
    moto_url: str = ""
    forwarder_pid: int = 0
    prometheus_pid: int = 0
    prometheus_url: str = ""
    gitlab_url: str = ""
    registry_address: str = ""  # the Elastic IP's container registry (the forwarder's), host:port
    ami_id: str = ""
    containers: list[str] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)

    def save(self, layout: SandboxLayout) -> None:
        tmp = layout.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        tmp.replace(layout.state_file)

    @classmethod
    def load(cls, layout: SandboxLayout) -> State | None:
        try:
            data = json.loads(layout.state_file.read_text())
        except (OSError, ValueError):
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def instance_name(self, instance_id: str) -> str | None:
        """The sandbox's name (a or b) of instance ``instance_id``; None if not one of its own."""
        return next(
            (str(i["name"]) for i in self.instances if i.get("instance_id") == instance_id), None
        )

    def lines(self) -> list[str]:
        """How to use the sandbox, for a person."""
        env_file = SandboxLayout(Path(self.root)).env_file
        out = [
            f"GitLab, through the Elastic IP: {self.gitlab_url}",
            f"its container registry, through the Elastic IP: {self.registry_address}",
            f"AWS (moto): {self.moto_url}",
            f"Prometheus (both sidecars, the alert rules): {self.prometheus_url}",
        ]
        out += [
            f"instance {i['instance_id']} (launched as {i['launched_as']}): ssh://admin@{i['ssh']}"
            for i in self.instances
        ]
        if self.filesystem:
            kind = "btrfs in loop files" if self.filesystem == "btrfs" else "plain folders"
            out.append(f"their data: {kind}, in {Path(self.root) / 'instances'}/<a|b>/mnt")
        out += [
            f"settings: {env_file}",
            f"next: ENV_FILE={env_file} inv pair   (then inv status, inv promote-slave)",
        ]
        return out

    def to_dict(self) -> dict[str, Any]:
        layout = SandboxLayout(Path(self.root))
        return {
            **self.__dict__,
            "env_file": str(layout.env_file),
            "use": f"ENV_FILE={layout.env_file} inv pair",
        }
