"""Fixtures of the AWS tests: a moto server's EC2 with an AMI, the settings, a launched pair,
and Route 53 and KMS clients on the same server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ops.aws import client as aws
from ops.aws.launch import LaunchReport, launch
from ops.settings import Settings
from tests.integration.aws.factories import ADMIN, CLIENTS, PROJECT, REGION, settings_for
from tests.integration.moto_server import MotoServer

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_route53 import Route53Client


@pytest.fixture
def ec2(moto: MotoServer) -> EC2Client:
    return moto.ec2(REGION)


@pytest.fixture
def route53(moto: MotoServer) -> Route53Client:
    return aws.route53_client(settings_for(moto))


@pytest.fixture
def kms(moto: MotoServer) -> KMSClient:
    return aws.kms_client(settings_for(moto))


@pytest.fixture
def ami(ec2: EC2Client) -> str:
    """An AMI registered in the moto server, as inv build-ami would leave one."""
    return ec2.register_image(
        Name="gitlab-dr-test",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
    )["ImageId"]


@pytest.fixture
def settings(moto: MotoServer, ami: str) -> Settings:
    return settings_for(moto, AMI_ID=ami)


@pytest.fixture
def launched(settings: Settings) -> LaunchReport:
    return launch(settings)


@pytest.fixture
def task_env(moto: MotoServer, ami: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment inv launch reads: an env file for the test, nothing from the real one."""
    env_file = tmp_path / "test.env"
    env_file.write_text(
        "\n".join(
            [
                f"PROJECT_NAME={PROJECT}",
                f"AWS_REGION={REGION}",
                f"AMI_ID={ami}",
                f"CLIENT_CIDRS={','.join(CLIENTS)}",
                f"ADMIN_CIDR={ADMIN}",
                "AWS_WAIT_TIMEOUT=30s",
            ]
        )
        + "\n"
    )
    monkeypatch.setenv("ENV_FILE", str(env_file))
    return ami
