"""Settings: read once from ``.env`` (or the file named by ``ENV_FILE``) and the environment.

Every setting is declared once in :data:`SPECS` with its parser, default and the words used
when it is wrong. ``.env.example`` documents each of them (a unit test keeps the two in step).
The environment wins over the file, so ``FOO=1 inv status`` does what it says.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from gitlab_sync.config import parse_duration
from ops.errors import SettingError


def _str(text: str) -> str:
    if not text.strip():
        raise ValueError("a non-empty value")
    return text.strip()


def _optional_str(text: str) -> str:
    return text.strip()


def _abs_path(text: str) -> str:
    if not text.startswith("/") or "\n" in text:
        raise ValueError("an absolute path")
    return text.rstrip("/") or "/"


def _local_path(text: str) -> str:
    return os.path.expanduser(text.strip()) if text.strip() else ""


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("a port number from 1 to 65535")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError("a whole number of at least 1")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise ValueError("a whole number of at least 0")
    return int(text)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("true or false")


_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$")


def _image(text: str) -> str:
    value = text.strip()
    if not _IMAGE.match(value) or (":" not in value.rsplit("/", 1)[-1] and "@" not in value):
        raise ValueError(
            "an image reference pinned to a tag or digest, like gitlab/gitlab-ce:17.8.1-ce.0"
        )
    if value.endswith(":latest"):
        raise ValueError("a pinned tag, not :latest (master and slave must run the same GitLab)")
    return value


def _cidrs(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise ValueError("one or more CIDR blocks separated by commas, like 203.0.113.0/24")
    try:
        return tuple(str(ipaddress.ip_network(item, strict=False)) for item in items)
    except ValueError:
        raise ValueError("CIDR blocks separated by commas, like 203.0.113.0/24") from None


def _admin_cidr(text: str) -> str:
    cidrs = _cidrs(text)
    if len(cidrs) != 1:
        raise ValueError("one CIDR block, the operator's own network")
    cidr = cidrs[0]
    if cidr in {"0.0.0.0/0", "::/0"}:
        raise ValueError("the operator's own network, not the whole internet")
    return cidr


_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")


def _region(text: str) -> str:
    if not _REGION.match(text.strip()):
        raise ValueError("an AWS region like eu-west-1")
    return text.strip()


def _zones(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if items and (len(items) != 2 or items[0] == items[1]):
        raise ValueError("two different availability zones separated by a comma, or nothing")
    return items


_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")


def _ami(text: str) -> str:
    value = text.strip()
    if value and not _AMI.match(value):
        raise ValueError("an AMI id like ami-0123456789abcdef0 (printed by inv build-ami)")
    return value


def _overrides(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for word in text.split():
        name, sep, value = word.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name) or name.endswith("_OVERRIDES"):
            raise ValueError("KEY=VALUE words separated by spaces, like 'SYNC_PORT=2223'")
        pairs.append((name, value))
    return tuple(pairs)


_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


def _instance_id(text: str) -> str:
    if not _INSTANCE_ID.match(text):
        raise ValueError(f"an instance id like i-0123456789abcdef0, not {text!r}")
    return text


def _instance_hosts(text: str) -> tuple[tuple[str, str], ...]:
    pairs: dict[str, str] = {}
    for word in text.split():
        instance, sep, address = word.partition("=")
        if not sep or not address:
            raise ValueError("INSTANCE_ID=host[:port] words, like 'i-0abc12345=127.0.0.1:32001'")
        if _instance_id(instance) in pairs:
            raise ValueError(f"one address per instance ({instance} is named twice)")
        pairs[instance] = address
    return tuple(pairs.items())


def _instance_overrides(text: str) -> tuple[tuple[str, str, str], ...]:
    items = []
    for word in text.split():
        instance, sep, rest = word.partition(":")
        name, eq, value = rest.partition("=")
        if not sep or not eq or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            raise ValueError(
                "INSTANCE_ID:KEY=VALUE words separated by spaces, like 'i-0abc12345:SYNC_PORT=2223'"
            )
        if name.endswith("_OVERRIDES") or name.startswith("INSTANCE_") or name == "USE_AWS":
            raise ValueError(f"settings of one host, not {name}")
        items.append((_instance_id(instance), name, value))
    return tuple(items)


def _url(text: str) -> str:
    value = text.strip()
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("an http:// or https:// URL")
    return value.rstrip("/")


@dataclass(frozen=True)
class Spec:
    """One setting: its name, how to read it, its default (None: required) and its help."""

    name: str
    parse: Callable[[str], Any]
    default: str | None
    help: str


SPECS: tuple[Spec, ...] = (
    # The pair and its Compose stack
    Spec(
        "PROJECT_NAME",
        _str,
        "gitlab-dr",
        "Compose project name on each host, and the value of the Project tag in AWS.",
    ),
    Spec(
        "GITLAB_IMAGE",
        _image,
        "gitlab/gitlab-ce:17.8.1-ce.0",
        "GitLab image, pinned; the same on master and slave.",
    ),
    Spec("GITLAB_HOSTNAME", _str, "gitlab.example.com", "GitLab's host name (external URL)."),
    Spec(
        "GITLAB_HOME",
        _abs_path,
        "/srv/gitlab",
        "Host folder holding GitLab's config/, data/ and logs/ (on the EBS data volume).",
    ),
    Spec(
        "SYNC_HOME",
        _abs_path,
        "/srv/gitlab-sync",
        "Host folder holding the slave's snapshots (same filesystem as GITLAB_HOME).",
    ),
    Spec("GITLAB_SHM_SIZE", _str, "256m", "Shared memory for the GitLab container."),
    Spec("GITLAB_HTTP_PORT", _port, "80", "Host port for GitLab's HTTP."),
    Spec("GITLAB_HTTPS_PORT", _port, "443", "Host port for GitLab's HTTPS."),
    Spec("GITLAB_SSH_PORT", _port, "2424", "Host port for git over SSH."),
    Spec("GITLAB_REGISTRY_PORT", _port, "5050", "Host port for the container registry."),
    Spec(
        "BASE_IMAGE",
        _str,
        "debian:bookworm-slim",
        "Base image for the images this project builds (make images picks a local one if needed).",
    ),
    Spec(
        "SYNC_IMAGE", _str, "gitlab-dr/gitlab-rsync:local", "Tag of the gitlab-rsync sidecar image."
    ),
    # Sync
    Spec(
        "SYNC_PORT",
        _port,
        "2222",
        "Port of the slave sidecar's SSH receiver (only the master reaches it).",
    ),
    Spec(
        "SYNC_INTERVAL",
        parse_duration,
        "5m",
        "Period of the full pass that catches what inotify misses.",
    ),
    Spec("SYNC_BATCH", parse_duration, "0.2s", "Quiet time that closes a batch of change events."),
    Spec("SYNC_MAX_DELAY", parse_duration, "1s", "Longest a batch waits once it has an event."),
    Spec("SYNC_BWLIMIT", _non_negative_int, "0", "rsync bandwidth limit in KiB/s (0: none)."),
    Spec(
        "SNAPSHOT_KEEP", _positive_int, "24", "How many complete snapshots the slave keeps at most."
    ),
    Spec(
        "SNAPSHOT_MAX_AGE",
        parse_duration,
        "7d",
        "Snapshots older than this are pruned (the newest never is).",
    ),
    Spec(
        "STALE_AFTER",
        parse_duration,
        "15m",
        "A newest complete snapshot older than this is a failed check and blocks promotion.",
    ),
    # Hosts over SSH
    Spec(
        "SSH_USER", _str, "admin", "User for SSH to each host's Docker engine (Debian AMIs: admin)."
    ),
    Spec("SSH_KEY_FILE", _local_path, "~/.ssh/id_ed25519", "Private key for SSH to the hosts."),
    Spec(
        "SSH_KNOWN_HOSTS",
        _local_path,
        "~/.ssh/known_hosts",
        "Known-hosts file the hosts' keys are checked against.",
    ),
    Spec("SSH_CONNECT_TIMEOUT", parse_duration, "10s", "Deadline for reaching a host over SSH."),
    Spec("MASTER_HOST", _optional_str, "", "Address of the master host (empty: read from AWS)."),
    Spec("SLAVE_HOST", _optional_str, "", "Address of the slave host (empty: read from AWS)."),
    Spec(
        "SLAVE_SYNC_ADDRESS",
        _optional_str,
        "",
        "host[:port] where the master's sidecar reaches the slave's receiver "
        "(empty: the slave's private address in AWS and SYNC_PORT).",
    ),
    Spec(
        "MASTER_OVERRIDES",
        _overrides,
        "",
        "Settings that differ on the master, as KEY=VALUE words (the sandbox puts both hosts "
        "on one engine); empty on AWS.",
    ),
    Spec("SLAVE_OVERRIDES", _overrides, "", "The same for the slave."),
    Spec(
        "INSTANCE_HOSTS",
        _instance_hosts,
        "",
        "With USE_AWS: where an instance's SSH is reached when not at its public address, as "
        "INSTANCE_ID=host[:port] words (the sandbox's local ports); empty on AWS.",
    ),
    Spec(
        "INSTANCE_OVERRIDES",
        _instance_overrides,
        "",
        "With USE_AWS: settings that differ on one instance, as INSTANCE_ID:KEY=VALUE words; "
        "they follow the instance when a promotion swaps the roles. Empty on AWS.",
    ),
    Spec(
        "PUBLIC_URL",
        _url,
        "",
        "URL clients use to reach GitLab (empty: http://<Elastic IP>); promotion's RTO ends "
        "when its /-/readiness answers.",
    ),
    Spec(
        "READY_TIMEOUT",
        parse_duration,
        "15m",
        "How long promotion waits for GitLab on the slave to be ready.",
    ),
    Spec(
        "STATE_DIR",
        _local_path,
        ".gitlab-dr",
        "Local folder for promotion journals and post-mortem bundles.",
    ),
    Spec(
        "USE_AWS",
        _bool,
        "true",
        "Read roles, epoch and addresses from AWS; false: MASTER_HOST/SLAVE_HOST and epoch 1.",
    ),
    # AWS
    Spec("AWS_REGION", _region, "eu-west-1", "AWS region of the pair."),
    Spec(
        "AWS_ENDPOINT_URL", _url, "", "Another AWS endpoint (a moto server); empty for AWS itself."
    ),
    Spec(
        "AWS_SHARED_CREDENTIALS_FILE",
        _local_path,
        "",
        "AWS credentials file (the sandbox's fake keys for moto); empty: boto3's usual places.",
    ),
    Spec("AMI_ID", _ami, "", "AMI built by inv build-ami."),
    Spec("INSTANCE_TYPE", _str, "m5.xlarge", "EC2 instance type for master and slave."),
    Spec("KEY_NAME", _optional_str, "", "EC2 key pair for admin SSH (empty: none)."),
    Spec(
        "AVAILABILITY_ZONES",
        _zones,
        "",
        "Two zones for master and slave (empty: the region's first two).",
    ),
    Spec("DATA_VOLUME_GB", _positive_int, "100", "Size of each host's encrypted EBS data volume."),
    Spec(
        "CLIENT_CIDRS",
        _cidrs,
        "10.0.0.0/8",
        "Who may reach GitLab (HTTP, HTTPS, git SSH, registry).",
    ),
    Spec("ADMIN_CIDR", _admin_cidr, "192.0.2.0/24", "The operator's network, allowed admin SSH."),
    Spec(
        "AWS_WAIT_TIMEOUT",
        parse_duration,
        "10m",
        "Deadline for each AWS wait (an instance running, a volume attached).",
    ),
)


@dataclass(frozen=True)
class Settings:
    """The validated settings; field names are the lower-case setting names."""

    project_name: str
    gitlab_image: str
    gitlab_hostname: str
    gitlab_home: str
    sync_home: str
    gitlab_shm_size: str
    gitlab_http_port: int
    gitlab_https_port: int
    gitlab_ssh_port: int
    gitlab_registry_port: int
    base_image: str
    sync_image: str
    sync_port: int
    sync_interval: float
    sync_batch: float
    sync_max_delay: float
    sync_bwlimit: int
    snapshot_keep: int
    snapshot_max_age: float
    stale_after: float
    ssh_user: str
    ssh_key_file: str
    ssh_known_hosts: str
    ssh_connect_timeout: float
    master_host: str
    slave_host: str
    slave_sync_address: str
    master_overrides: tuple[tuple[str, str], ...]
    slave_overrides: tuple[tuple[str, str], ...]
    instance_hosts: tuple[tuple[str, str], ...]
    instance_overrides: tuple[tuple[str, str, str], ...]
    public_url: str
    ready_timeout: float
    state_dir: str
    use_aws: bool
    aws_region: str
    aws_endpoint_url: str
    aws_shared_credentials_file: str
    ami_id: str
    instance_type: str
    key_name: str
    availability_zones: tuple[str, ...]
    data_volume_gb: int
    client_cidrs: tuple[str, ...]
    admin_cidr: str
    aws_wait_timeout: float

    def require(self, name: str) -> Any:
        """The value of setting ``name``, or a :class:`SettingError` if it is empty."""
        value = getattr(self, name.lower())
        if value in ("", ()):
            spec = next(s for s in SPECS if s.name == name)
            raise SettingError(f"{name} is not set ({spec.help.rstrip('.')})")
        return value

    def for_role(self, role: str) -> Settings:
        """These settings as they apply on the ``role`` host (its overrides validated)."""
        overrides = self.master_overrides if role == "master" else self.slave_overrides
        return self._with(f"{role.upper()}_OVERRIDES", overrides)

    def for_instance(self, instance_id: str) -> Settings:
        """These settings as they apply on instance ``instance_id`` (INSTANCE_OVERRIDES)."""
        mine = tuple(
            (name, raw) for iid, name, raw in self.instance_overrides if iid == instance_id
        )
        return self._with(f"INSTANCE_OVERRIDES: {instance_id}", mine)

    def instance_address(self, instance_id: str) -> str:
        """``host[:port]`` from INSTANCE_HOSTS for ``instance_id``, or ``""``."""
        return dict(self.instance_hosts).get(instance_id, "")

    def _with(self, where: str, overrides: tuple[tuple[str, str], ...]) -> Settings:
        values = {}
        for name, raw in overrides:
            spec = next((s for s in SPECS if s.name == name), None)
            if spec is None:
                raise SettingError(f"{where}: {name} is not a setting")
            try:
                values[name.lower()] = spec.parse(raw)
            except ValueError as exc:
                raise SettingError(f"{where}: {name}: expected {exc}, got {raw!r}") from None
        return dataclasses.replace(self, **values)

    def compose_env(self) -> dict[str, str]:
        """The variables the Compose stack reads, as strings."""
        names = (
            "PROJECT_NAME",
            "GITLAB_IMAGE",
            "GITLAB_HOSTNAME",
            "GITLAB_HOME",
            "SYNC_HOME",
            "GITLAB_SHM_SIZE",
            "GITLAB_HTTP_PORT",
            "GITLAB_HTTPS_PORT",
            "GITLAB_SSH_PORT",
            "GITLAB_REGISTRY_PORT",
            "BASE_IMAGE",
            "SYNC_IMAGE",
            "SYNC_PORT",
            "SYNC_INTERVAL",
            "SYNC_BATCH",
            "SYNC_MAX_DELAY",
            "SYNC_BWLIMIT",
            "SNAPSHOT_KEEP",
            "SNAPSHOT_MAX_AGE",
        )
        return {name: _render(getattr(self, name.lower())) for name in names}


def _render(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


if [s.name.lower() for s in SPECS] != [f.name for f in fields(Settings)]:
    raise RuntimeError("ops.settings: SPECS and Settings must list the same settings in order")


def env_file_path(environ: Mapping[str, str] | None = None) -> Path:
    """The settings file: ``$ENV_FILE`` if set, else ``.env`` in the current directory."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("ENV_FILE") or ".env")


def load(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Read, validate and return the settings; a bad one raises :class:`SettingError`."""
    environ = os.environ if environ is None else environ
    path = env_file if env_file is not None else env_file_path(environ)
    if "ENV_FILE" in environ and env_file is None and not path.is_file():
        raise SettingError(f"ENV_FILE names {path}, which is not a readable file")
    from_file = (
        {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    )
    values: dict[str, Any] = {}
    for spec in SPECS:
        raw = environ.get(spec.name, from_file.get(spec.name, spec.default))
        if raw is None:
            raise SettingError(f"{spec.name} is not set: {spec.help}")
        try:
            values[spec.name.lower()] = spec.parse(raw)
        except ValueError as exc:
            raise SettingError(f"{spec.name}: expected {exc}, got {raw!r}") from None
    return Settings(**values)
