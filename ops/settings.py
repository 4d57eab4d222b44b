"""Settings: read once from ``.env`` (or the file named by ``ENV_FILE``) and the environment.

Every setting is declared once, as a field of :class:`Settings` with its parser, default and the
words used when it is wrong. ``.env.example`` documents each of them (a unit test keeps the
two in step). The environment wins over the file, so ``FOO=1 inv status`` does what it says.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from gitlab_sync.config import RETIRED, RETIRED_WHY, parse_duration
from ops import parsing
from ops.errors import SettingError


def setting(parse: Callable[[str], Any], default: str, help: str, *, compose: bool = False) -> Any:
    """Declare a setting on :class:`Settings`: how its text is read, its default, its help (the
    words of ``.env.example`` and of the error when it is wrong), and whether the Compose stack
    reads it (:meth:`Settings.compose_env`)."""
    return field(metadata={"parse": parse, "default": default, "help": help, "compose": compose})


SANDBOX_FILESYSTEMS = ("btrfs", "plain")
SANDBOX_DNS_CHOICES = ("off", "name")


def _sandbox_filesystem(text: str) -> str:
    value = text.strip().lower()
    if value not in SANDBOX_FILESYSTEMS:
        raise ValueError(" or ".join(SANDBOX_FILESYSTEMS))
    return value


def _sandbox_dns(text: str) -> str:
    value = text.strip().lower()
    if value not in SANDBOX_DNS_CHOICES:
        raise ValueError(" or ".join(SANDBOX_DNS_CHOICES))
    return value


@dataclass(frozen=True)
class Settings:
    """The validated settings, each declared once here; field names are the lower-case
    setting names. An empty default means "not set": a task that needs it calls
    :meth:`require`, which stops it with one line naming the setting."""

    # The pair and its Compose stack
    project_name: str = setting(
        parsing.nonempty,
        "gitlab-dr",
        "Compose project name on each host, and the value of the Project tag in AWS.",
        compose=True,
    )
    gitlab_image: str = setting(
        parsing.image,
        "gitlab/gitlab-ce:17.8.1-ce.0",
        "GitLab image, pinned; the same on master and slave.",
        compose=True,
    )
    gitlab_hostname: str = setting(
        parsing.nonempty, "gitlab.example.com", "GitLab's host name (external URL).", compose=True
    )
    gitlab_home: str = setting(
        parsing.abs_path,
        "/srv/gitlab",
        "Host folder holding GitLab's config/, data/ and logs/: a btrfs subvolume of the data "
        "volume, which the AMI makes (on another filesystem: the fallback, no snapshots).",
        compose=True,
    )
    sync_home: str = setting(
        parsing.abs_path,
        "/srv/gitlab-sync",
        "Host folder holding the slave's snapshots: a btrfs subvolume beside GITLAB_HOME, on the "
        "same filesystem (the AMI makes both; on another filesystem: the fallback).",
        compose=True,
    )
    gitlab_shm_size: str = setting(
        parsing.nonempty, "256m", "Shared memory for the GitLab container.", compose=True
    )
    gitlab_http_port: int = setting(
        parsing.port, "80", "Host port for GitLab's HTTP.", compose=True
    )
    gitlab_https_port: int = setting(
        parsing.port, "443", "Host port for GitLab's HTTPS.", compose=True
    )
    gitlab_ssh_port: int = setting(
        parsing.port, "2424", "Host port for git over SSH.", compose=True
    )
    gitlab_registry_port: int = setting(
        parsing.port, "5050", "Host port for the container registry.", compose=True
    )
    base_image: str = setting(
        parsing.nonempty,
        "debian:bookworm-slim",
        "Base image for the images this project builds (make images picks a local one if needed).",
        compose=True,
    )
    sync_image: str = setting(
        parsing.nonempty,
        "gitlab-dr/gitlab-rsync:local",
        "Tag of the gitlab-rsync sidecar image.",
        compose=True,
    )
    # Sync
    sync_port: int = setting(
        parsing.port,
        "2222",
        "Port of the slave sidecar's SSH receiver (only the master reaches it).",
        compose=True,
    )
    sync_interval: float = setting(
        parse_duration,
        "5m",
        "Period of the full pass that catches what inotify misses.",
        compose=True,
    )
    sync_batch: float = setting(
        parse_duration, "0.2s", "Quiet time that closes a batch of change events.", compose=True
    )
    sync_max_delay: float = setting(
        parse_duration, "1s", "Longest a batch waits once it has an event.", compose=True
    )
    sync_bwlimit: int = setting(
        parsing.non_negative_int, "0", "rsync bandwidth limit in KiB/s (0: none).", compose=True
    )
    snapshot_keep_all: float = setting(
        parse_duration,
        "15m",
        "Retention: the slave keeps every snapshot younger than this.",
        compose=True,
    )
    snapshot_keep_minutely: float = setting(
        parse_duration,
        "2h",
        "Retention: and the newest of each minute younger than this (0: none).",
        compose=True,
    )
    snapshot_keep_hourly: float = setting(
        parse_duration,
        "2d",
        "Retention: and the newest of each hour younger than this (0: none).",
        compose=True,
    )
    snapshot_keep_daily: float = setting(
        parse_duration,
        "8d",
        "Retention: and the newest of each UTC day younger than this (0: none); none older, "
        "but the newest and the newest verified.",
        compose=True,
    )
    snapshot_keep_max: int = setting(
        parsing.non_negative_int,
        "0",
        "At most this many snapshots whatever the tiers keep, the oldest pruned first (0: no "
        "limit).",
        compose=True,
    )
    stale_after: float = setting(
        parse_duration,
        "15m",
        "A newest complete snapshot older than this is a failed check and blocks promotion.",
    )
    verified_max_age: float = setting(
        parse_duration,
        "24h",
        "inv status warns when no snapshot is verified (inv verify-slave), or the newest "
        "verified one is older than this.",
    )
    # Monitoring
    metrics_bind: str = setting(
        parsing.ip_address,
        "",
        "Host address /metrics (Prometheus) is published on (empty: on an AWS instance its "
        "private address, elsewhere 127.0.0.1), never a public one.",
        compose=True,
    )
    metrics_port: int = setting(
        parsing.port,
        "9187",
        "Host port of the sidecar's /metrics (inv launch opens it to ADMIN_CIDR alone).",
        compose=True,
    )
    metrics_textfile_dir: str = setting(
        parsing.optional_abs_path,
        "",
        "Host folder where the sidecar writes gitlab_dr.prom for node_exporter's textfile "
        "collector (empty: none).",
        compose=True,
    )
    # Hosts over SSH
    ssh_user: str = setting(
        parsing.nonempty, "admin", "User for SSH to each host's Docker engine (Debian AMIs: admin)."
    )
    ssh_key_file: str = setting(
        parsing.local_path, "~/.ssh/id_ed25519", "Private key for SSH to the hosts."
    )
    ssh_known_hosts: str = setting(
        parsing.local_path,
        "~/.ssh/known_hosts",
        "Known-hosts file the hosts' keys are checked against.",
    )
    ssh_connect_timeout: float = setting(
        parse_duration, "10s", "Deadline for reaching a host over SSH."
    )
    ssh_bastion: str = setting(
        parsing.ssh_jump,
        "",
        "SSH jump host user@host[:port] the hosts are reached through (hosts in private "
        "subnets); empty: none.",
    )
    master_host: str = setting(
        parsing.anything, "", "Address of the master host (empty: read from AWS)."
    )
    slave_host: str = setting(
        parsing.anything, "", "Address of the slave host (empty: read from AWS)."
    )
    slave_sync_address: str = setting(
        parsing.anything,
        "",
        "host[:port] where the master's sidecar reaches the slave's receiver (empty: the slave's "
        "private address in AWS and SYNC_PORT).",
    )
    master_overrides: tuple[tuple[str, str], ...] = setting(
        parsing.overrides,
        "",
        "Settings that differ on the master, as KEY=VALUE words (the sandbox puts both hosts on "
        "one engine); empty on AWS.",
    )
    slave_overrides: tuple[tuple[str, str], ...] = setting(
        parsing.overrides, "", "The same for the slave."
    )
    instance_hosts: tuple[tuple[str, str], ...] = setting(
        parsing.instance_hosts,
        "",
        "With USE_AWS: where an instance's SSH is reached when not at its public address, as "
        "INSTANCE_ID=host[:port] words (the sandbox's local ports); empty on AWS.",
    )
    instance_overrides: tuple[tuple[str, str, str], ...] = setting(
        parsing.instance_overrides,
        "",
        "With USE_AWS: settings that differ on one instance, as INSTANCE_ID:KEY=VALUE words; they "
        "follow the instance when a promotion swaps the roles. Empty on AWS.",
    )
    public_url: str = setting(
        parsing.url,
        "",
        "URL clients use to reach GitLab (empty: http://<Elastic IP>); promotion's RTO ends when "
        "its /-/readiness answers.",
    )
    ready_timeout: float = setting(
        parse_duration,
        "15m",
        "How long promotion (and a verification's throwaway GitLab) waits for GitLab to be ready.",
        compose=True,
    )
    verify_every: float = setting(
        parse_duration,
        "6h",
        "How often the slave's gitlab-verify service proves its current snapshot with a "
        "throwaway GitLab (inv verify-slave's checks); 0: never. Off on the fallback, where a "
        "copy of the snapshot is not O(1).",
        compose=True,
    )
    state_dir: str = setting(
        parsing.local_path,
        ".gitlab-dr",
        "Local folder for promotion journals and post-mortem bundles.",
    )
    use_aws: bool = setting(
        parsing.yes_no,
        "true",
        "Read roles, epoch and addresses from AWS; false: MASTER_HOST/SLAVE_HOST and epoch 1.",
    )
    # AWS
    aws_region: str = setting(parsing.region, "eu-west-1", "AWS region of the pair.")
    aws_endpoint_url: str = setting(
        parsing.url, "", "Another AWS endpoint (a moto server); empty for AWS itself."
    )
    aws_shared_credentials_file: str = setting(
        parsing.local_path,
        "",
        "AWS credentials file (the sandbox's fake keys for moto); empty: boto3's usual places.",
    )
    ami_id: str = setting(parsing.ami, "", "AMI built by inv build-ami.")
    instance_type: str = setting(
        parsing.nonempty, "m5.xlarge", "EC2 instance type for master and slave."
    )
    key_name: str = setting(parsing.anything, "", "EC2 key pair for admin SSH (empty: none).")
    availability_zones: tuple[str, ...] = setting(
        parsing.zones, "", "Two zones for master and slave (empty: the region's first two)."
    )
    vpc_id: str = setting(
        parsing.vpc_id,
        "",
        "An existing VPC for the pair, with SUBNET_IDS (empty: the region's default VPC).",
    )
    subnet_ids: tuple[str, ...] = setting(
        parsing.subnet_ids,
        "",
        "One subnet of VPC_ID in each of two zones, the master's first; private subnets work "
        "(empty: the default VPC's default subnets).",
    )
    data_volume_gb: int = setting(
        parsing.positive_int, "100", "Size of each host's encrypted EBS data volume."
    )
    kms_key_id: str = setting(
        parsing.kms_key,
        "",
        "Customer-managed KMS key encrypting the data volumes and the AMI's snapshots (key id, "
        "ARN or alias/NAME); empty: AWS's own EBS key.",
    )
    use_elastic_ip: bool = setting(
        parsing.yes_no,
        "true",
        "Give GitLab an Elastic IP that promotion moves; false: no public address (a private "
        "GitLab, reached by its DNS record at the master's private address).",
    )
    dns_zone: str = setting(
        parsing.hosted_zone,
        "",
        "Route 53 hosted zone (id or name) for GitLab's A record, which promotion moves; empty: "
        "no record.",
    )
    dns_name: str = setting(
        parsing.dns_name, "", "Name of GitLab's A record in DNS_ZONE (empty: GITLAB_HOSTNAME)."
    )
    dns_ttl: int = setting(
        parsing.positive_int,
        "60",
        "TTL of the record in seconds: how long clients may keep the old address after a "
        "promotion.",
    )
    client_cidrs: tuple[str, ...] = setting(
        parsing.cidrs, "", "Who may reach GitLab (HTTP, HTTPS, git SSH, registry)."
    )
    admin_cidr: str = setting(parsing.admin_cidr, "", "The operator's network, allowed admin SSH.")
    aws_wait_timeout: float = setting(
        parse_duration,
        "10m",
        "Deadline for each AWS wait (an instance running, a volume attached).",
    )
    price_file: str = setting(
        parsing.local_path,
        "",
        "Price table for the monthly cost inv launch --dry-run shows (empty: ops/aws/prices.json).",
    )
    # The sandbox
    sandbox_filesystem: str = setting(
        _sandbox_filesystem,
        "btrfs",
        "What inv sandbox.up keeps each instance's GITLAB_HOME and SYNC_HOME on: btrfs (a "
        "filesystem in a sparse loop file, as the AMI lays out the data volume; needs root) or "
        "plain (plain folders: the fallback, no snapshots). Read from the environment only.",
    )
    sandbox_dns: str = setting(
        _sandbox_dns,
        "off",
        "How the sandbox's clients find GitLab: off (the Elastic IP) or name (no Elastic IP: a "
        "Route 53 record in moto's zone sandbox.test, pointing at the master's private address, "
        "that inv launch creates and inv promote-slave moves; the forwarder follows the "
        "record). Read from the environment only.",
    )

    def require(self, name: str) -> Any:
        """The value of setting ``name``, or a :class:`SettingError` line if it is empty."""
        self.require_all(name)
        return getattr(self, name.lower())

    def require_all(self, *names: str, why: str = "") -> None:
        """Stop with one :class:`SettingError` line naming every one of ``names`` that is empty,
        each with its help; ``why`` says what needs them."""
        missing = [name for name in names if getattr(self, name.lower()) in ("", ())]
        if not missing:
            return
        help_of = {spec.name: spec.help.rstrip(".") for spec in SPECS}
        names_said = " and ".join(missing) if len(missing) < 3 else ", ".join(missing)
        verb = "is" if len(missing) == 1 else "are"
        helps = [help_of[name] for name in missing]
        if len(missing) > 1:
            helps = [f"{name}: {help_of[name]}" for name in missing]
        raise SettingError(
            f"{names_said} {verb} not set" + (f" ({why})" if why else "") + f" ({'; '.join(helps)})"
        )

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
        by_name = {spec.name: spec for spec in SPECS}
        values = {}
        for name, raw in overrides:
            if name not in by_name:
                raise SettingError(f"{where}: {name} is not a setting")
            values[name.lower()] = by_name[name].read(raw, where=f"{where}: ")
        return dataclasses.replace(self, **values)

    def compose_env(self) -> dict[str, str]:
        """The variables the Compose stack reads, as strings."""
        return {s.name: _render(getattr(self, s.name.lower())) for s in SPECS if s.compose}


def _render(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Spec:
    """One setting as :class:`Settings` declares it: its name, parser, default and help."""

    name: str
    parse: Callable[[str], Any]
    default: str
    help: str
    compose: bool

    def read(self, raw: str, where: str = "") -> Any:
        """The value of ``raw``, or one :class:`SettingError` line naming the setting."""
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise SettingError(f"{where}{self.name}: expected {exc}, got {raw!r}") from None


SPECS: tuple[Spec, ...] = tuple(
    Spec(
        f.name.upper(),
        f.metadata["parse"],
        f.metadata["default"],
        f.metadata["help"],
        f.metadata["compose"],
    )
    for f in fields(Settings)
)
"""Every setting, in the order :class:`Settings` declares them (``.env.example``'s order)."""


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
    retired = [name for name in RETIRED if name in environ or name in from_file]
    if retired:  # refused, not ignored: an old SNAPSHOT_KEEP=24 kept 24 s of history
        raise SettingError(f"{' and '.join(retired)} in {path} or the environment: {RETIRED_WHY}")
    values = {
        spec.name.lower(): spec.read(environ.get(spec.name, from_file.get(spec.name, spec.default)))
        for spec in SPECS
    }
    return Settings(**values)
