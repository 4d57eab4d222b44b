"""The settings the AWS tests run with, against a moto server (never the real environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ops.settings import Settings, load
from tests.integration.moto_server import MotoServer

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

PROJECT = "gitlab-dr-test"
REGION = "eu-west-1"
ADMIN = "198.51.100.0/24"
CLIENTS = ("203.0.113.0/24", "2001:db8::/32")
SYNC_PORT = 2222
METRICS_PORT = 9187


def settings_for(server: MotoServer, **overrides: str) -> Settings:
    """Settings for the tests, read from an explicit environment (never the real one), with
    ``ADMIN_CIDR`` and ``CLIENT_CIDRS`` set as inv launch requires."""
    environ = {
        "PROJECT_NAME": PROJECT,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": server.url,
        "CLIENT_CIDRS": ",".join(CLIENTS),
        "ADMIN_CIDR": ADMIN,
        "SYNC_PORT": str(SYNC_PORT),
        "METRICS_PORT": str(METRICS_PORT),
        "INSTANCE_TYPE": "m5.large",
        "DATA_VOLUME_GB": "20",
        "AWS_WAIT_TIMEOUT": "30s",
        **overrides,
    }
    return load(environ=environ, env_file=Path("/nonexistent/gitlab-dr-test.env"))


@dataclass(frozen=True)
class CompanyVpc:
    """A VPC of the company's in moto: one subnet per zone, private unless made public."""

    vpc_id: str
    subnets: tuple[str, str]
    cidrs: tuple[str, str]

    def env(self) -> dict[str, str]:
        """The settings that name it."""
        return {"VPC_ID": self.vpc_id, "SUBNET_IDS": ",".join(self.subnets)}


def company_vpc(
    ec2: EC2Client,
    *,
    public: bool = False,
    zones: tuple[str, str] = ("eu-west-1b", "eu-west-1c"),
    cidr: str = "10.40.0.0/16",
) -> CompanyVpc:
    """A new VPC with a subnet in each of ``zones``; ``public``: an internet gateway and a
    route to it from both (else no address is public and nothing routes outside)."""
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    base = cidr.split(".")
    cidrs = (f"{base[0]}.{base[1]}.1.0/24", f"{base[0]}.{base[1]}.2.0/24")
    subnets = tuple(
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=block, AvailabilityZone=zone)["Subnet"][
            "SubnetId"
        ]
        for zone, block in zip(zones, cidrs, strict=True)
    )
    if public:
        gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc_id)
        table = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
        for subnet in subnets:
            ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
            ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    return CompanyVpc(vpc_id, (subnets[0], subnets[1]), cidrs)
