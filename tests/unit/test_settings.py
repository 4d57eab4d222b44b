"""Settings: one validated place, one-line errors that name the setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ops import settings
from ops.errors import SettingError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_load_without_any_file(tmp_path: Path) -> None:
    loaded = settings.load({}, env_file=tmp_path / "none")
    assert loaded.gitlab_image.startswith("gitlab/gitlab-ce:")
    assert loaded.sync_interval == 300
    assert loaded.client_cidrs == ()
    assert loaded.admin_cidr == ""


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("SYNC_PORT=2300\nSNAPSHOT_KEEP_MAX=5\n")
    loaded = settings.load({"SYNC_PORT": "2400"}, env_file=env_file)
    assert (loaded.sync_port, loaded.snapshot_keep_max) == (2400, 5)


def test_env_file_variable_names_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "sandbox.env"
    env_file.write_text("PROJECT_NAME=sandbox\n")
    assert settings.load({"ENV_FILE": str(env_file)}).project_name == "sandbox"
    with pytest.raises(SettingError, match=r"ENV_FILE names .*missing\.env"):
        settings.load({"ENV_FILE": str(tmp_path / "missing.env")})


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("GITLAB_HOME", "srv/gitlab", "GITLAB_HOME: expected an absolute path, got 'srv/gitlab'"),
        ("SYNC_PORT", "70000", "SYNC_PORT: expected a port number from 1 to 65535"),
        ("GITLAB_IMAGE", "gitlab/gitlab-ce:latest", "GITLAB_IMAGE: expected a pinned tag"),
        ("GITLAB_IMAGE", "gitlab/gitlab-ce", "GITLAB_IMAGE: expected an image reference pinned"),
        ("SYNC_INTERVAL", "soon", "SYNC_INTERVAL: expected a duration like 90s"),
        ("ADMIN_CIDR", "0.0.0.0/0", "ADMIN_CIDR: expected the operator's own network"),
        ("CLIENT_CIDRS", "10.0.0.0/8,nonsense", "CLIENT_CIDRS: expected CIDR blocks"),
        ("AMI_ID", "ami-XYZ", "AMI_ID: expected an AMI id like ami-0123456789abcdef0"),
        ("AWS_REGION", "europe", "AWS_REGION: expected an AWS region like eu-west-1"),
        (
            "AVAILABILITY_ZONES",
            "eu-west-1a,eu-west-1a",
            "AVAILABILITY_ZONES: expected two different",
        ),
        ("SNAPSHOT_KEEP_MAX", "-1", "SNAPSHOT_KEEP_MAX: expected a whole number of at least 0"),
        ("SNAPSHOT_KEEP_HOURLY", "2 days", "SNAPSHOT_KEEP_HOURLY: expected a duration like 90s"),
        ("VPC_ID", "default", "VPC_ID: expected a VPC id like vpc-0123456789abcdef0"),
        ("SUBNET_IDS", "subnet-0123456789abcdef0", "SUBNET_IDS: expected two different subnet"),
        ("SUBNET_IDS", "subnet-0a1b2c3d,subnet-0a1b2c3d", "SUBNET_IDS: expected two different"),
        ("KMS_KEY_ID", "my-key", "KMS_KEY_ID: expected a KMS key id, key ARN, alias/NAME"),
        ("DNS_ZONE", "not a zone!", "DNS_ZONE: expected a hosted zone id like Z0123456789"),
        ("DNS_NAME", "gitlab..example.com", "DNS_NAME: expected a DNS name like gitlab.example"),
        ("DNS_TTL", "0", "DNS_TTL: expected a whole number of at least 1"),
        ("SSH_BASTION", "bastion.example.com", "SSH_BASTION: expected user@host or user@host:port"),
        ("USE_ELASTIC_IP", "maybe", "USE_ELASTIC_IP: expected true or false"),
    ],
)
def test_a_malformed_setting_is_one_line_naming_it(
    tmp_path: Path, name: str, value: str, words: str
) -> None:
    with pytest.raises(SettingError) as error:
        settings.load({name: value}, env_file=tmp_path / "none")
    assert words in str(error.value)
    assert "\n" not in str(error.value)


def test_an_empty_required_setting_is_named_when_needed(tmp_path: Path) -> None:
    loaded = settings.load({}, env_file=tmp_path / "none")
    with pytest.raises(SettingError, match=r"^AMI_ID is not set \(AMI built by inv build-ami\)$"):
        loaded.require("AMI_ID")


def test_every_missing_required_setting_is_named_in_one_line(tmp_path: Path) -> None:
    loaded = settings.load({"ADMIN_CIDR": "203.0.113.0/24"}, env_file=tmp_path / "none")
    loaded.require_all("ADMIN_CIDR")  # set: nothing said
    with pytest.raises(SettingError) as error:
        settings.load({}, env_file=tmp_path / "none").require_all(
            "ADMIN_CIDR", "CLIENT_CIDRS", why="inv launch opens the groups to them"
        )
    said = str(error.value)
    assert said.startswith(
        "ADMIN_CIDR and CLIENT_CIDRS are not set (inv launch opens the groups to them) "
        "(ADMIN_CIDR: The operator's network"
    )
    assert "; CLIENT_CIDRS: Who may reach GitLab" in said
    assert "\n" not in said


def test_settings_are_declared_once_and_the_stack_gets_its_own() -> None:
    names = [spec.name for spec in settings.SPECS]
    assert names == [f.upper() for f in settings.Settings.__dataclass_fields__]
    assert len(names) == len(set(names))
    compose = {spec.name for spec in settings.SPECS if spec.compose}
    assert {"GITLAB_IMAGE", "SYNC_PORT", "SNAPSHOT_KEEP_ALL", "SNAPSHOT_KEEP_MAX"} <= compose
    assert not compose & {"AWS_REGION", "ADMIN_CIDR", "SSH_KEY_FILE"}


@pytest.mark.parametrize("name", ["SNAPSHOT_KEEP", "SNAPSHOT_MAX_AGE"])
def test_the_retired_retention_settings_are_refused_in_one_line_naming_the_tiers(
    tmp_path: Path, name: str
) -> None:
    env_file = tmp_path / "old.env"
    env_file.write_text(f"{name}=24\n")
    for environ, path in (({}, env_file), ({name: "24"}, tmp_path / "none")):
        with pytest.raises(SettingError) as error:
            settings.load(environ, env_file=path)
        said = str(error.value)
        assert said.startswith(f"{name} in ") and "retention is by tiers, SNAPSHOT_KEEP_ALL" in said
        assert "\n" not in said


def test_env_example_documents_every_setting_and_loads() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = re.findall(r"^([A-Z][A-Z0-9_]+)=", text, re.MULTILINE)
    assert sorted(documented) == sorted(spec.name for spec in settings.SPECS)
    settings.load({}, env_file=ROOT / ".env.example")


def test_compose_env_renders_what_the_stack_reads(tmp_path: Path) -> None:
    env = settings.load({"SYNC_INTERVAL": "90s"}, env_file=tmp_path / "none").compose_env()
    assert env["SYNC_INTERVAL"] == "90"
    lines = (ROOT / "compose" / "docker-compose.yml").read_text().splitlines()
    compose = "\n".join(line.split("#")[0] for line in lines)
    for name in re.findall(r"\$\{([A-Z_]+)", compose):
        assert name in env, f"the stack reads {name}, which compose_env does not give"


def test_the_real_aws_settings_read_ids_names_and_keys_as_aws_writes_them(tmp_path: Path) -> None:
    loaded = settings.load(
        {
            "VPC_ID": "vpc-0123456789abcdef0",
            "SUBNET_IDS": "subnet-0123456789abcdef0, subnet-0fedcba9876543210",
            "KMS_KEY_ID": "alias/gitlab-dr",
            "DNS_ZONE": "/hostedzone/Z0123456789ABCDEFGHIJ",
            "DNS_NAME": "GitLab.Example.com.",
            "SSH_BASTION": "admin@bastion.example.com:2200",
        },
        env_file=tmp_path / "none",
    )
    assert loaded.subnet_ids == ("subnet-0123456789abcdef0", "subnet-0fedcba9876543210")
    assert loaded.dns_zone == "Z0123456789ABCDEFGHIJ"
    assert loaded.dns_name == "gitlab.example.com"
    assert settings.load({"DNS_ZONE": "Corp.Example."}, env_file=tmp_path / "n").dns_zone == (
        "corp.example"
    )
    defaults = settings.load({}, env_file=tmp_path / "none")
    assert (defaults.vpc_id, defaults.subnet_ids, defaults.kms_key_id) == ("", (), "")
    assert (defaults.use_elastic_ip, defaults.dns_zone, defaults.dns_ttl) == (True, "", 60)
    for key in (
        "0123abcd-0123-4567-89ab-0123456789ab",
        "mrk-0123456789abcdef0123456789abcdef",
        "arn:aws:kms:eu-west-1:111122223333:key/0123abcd-0123-4567-89ab-0123456789ab",
        "arn:aws:kms:eu-west-1:111122223333:alias/gitlab",
    ):
        assert settings.load({"KMS_KEY_ID": key}, env_file=tmp_path / "n").kms_key_id == key
