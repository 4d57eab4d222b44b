"""boto3 in one place: the clients, the translation of AWS failures, waiters, tags.

Every client is built here (:func:`ec2_client`, :func:`route53_client`, :func:`kms_client`) with
the standard retry mode, the region from the settings and the endpoint from ``AWS_ENDPOINT_URL``
(a moto server in the sandbox and the tests).
Every call that can fail runs inside :func:`aws_errors`, which turns botocore's exceptions into
one :class:`~ops.errors.AwsError` sentence naming the call, the resource and the cause.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    WaiterError,
)

from ops.errors import AwsError, OpsError, SettingError
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import ResourceTypeType
    from mypy_boto3_ec2.type_defs import FilterTypeDef, TagSpecificationTypeDef, WaiterConfigTypeDef
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_route53 import Route53Client

MAX_ATTEMPTS = 5
"""Attempts per call, the first included (botocore's standard mode backs off between them)."""

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60


@functools.cache
def _loader() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


def boto_session(region: str, credentials_file: str = "") -> boto3.session.Session:
    """A new boto3 session (credentials resolved afresh) sharing one cache of service models;
    ``credentials_file``, when given, is read instead of ``~/.aws/credentials``."""
    core = botocore.session.Session()
    core.register_component("data_loader", _loader())
    if credentials_file:
        core.set_config_variable("credentials_file", credentials_file)
    return boto3.session.Session(botocore_session=core, region_name=region)


@functools.cache
def known_regions() -> frozenset[str]:
    """Every EC2 region of every partition this botocore knows (read offline, from its data)."""
    session = boto_session("us-east-1")
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("ec2", partition_name=partition)
    )


def check_region(region: str, known: frozenset[str] | None = None) -> str:
    """``region`` if EC2 has it, else a :class:`SettingError` (moto answers for any name)."""
    known = known_regions() if known is None else known
    if region not in known:
        raise SettingError(
            f"AWS_REGION {region} is not an AWS region this boto3 knows "
            f"(upgrade boto3 if the region is new); known regions include eu-west-1 and us-east-1"
        )
    return region


def client_config(region: str, max_attempts: int = MAX_ATTEMPTS) -> Config:
    """The botocore configuration every client uses: standard retries, bounded timeouts."""
    return Config(
        region_name=region,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        user_agent_extra="gitlab-dr",
    )


@dataclass(frozen=True)
class _Where:
    """The session and the options every client of the pair is made with."""

    session: boto3.session.Session
    endpoint_url: str | None
    config: Config


def _where(settings: Settings, max_attempts: int) -> _Where:
    region = check_region(settings.aws_region)
    # boto3 reads AWS_ENDPOINT_URL from the environment itself; the setting may also come from
    # the .env file, which boto3 does not read, so it is passed explicitly when it is set.
    return _Where(
        boto_session(region, settings.aws_shared_credentials_file),
        settings.aws_endpoint_url or None,
        client_config(region, max_attempts),
    )


def ec2_client(settings: Settings, max_attempts: int = MAX_ATTEMPTS) -> EC2Client:
    """An EC2 client for the pair's region (and ``AWS_ENDPOINT_URL`` when it is set)."""
    where = _where(settings, max_attempts)
    return where.session.client("ec2", endpoint_url=where.endpoint_url, config=where.config)


def route53_client(settings: Settings, max_attempts: int = MAX_ATTEMPTS) -> Route53Client:
    """A Route 53 client, as :func:`ec2_client` (Route 53 is global: the region only signs)."""
    where = _where(settings, max_attempts)
    return where.session.client("route53", endpoint_url=where.endpoint_url, config=where.config)


def kms_client(settings: Settings, max_attempts: int = MAX_ATTEMPTS) -> KMSClient:
    """A KMS client for the pair's region, as :func:`ec2_client`."""
    where = _where(settings, max_attempts)
    return where.session.client("kms", endpoint_url=where.endpoint_url, config=where.config)


def _cause(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "Unknown")
        message = error.get("Message", "").strip()
        return f"{code}: {message}" if message else code
    if isinstance(exc, NoCredentialsError):
        return (
            "no AWS credentials were found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or run on a host with an instance role)"
        )
    if isinstance(exc, EndpointConnectionError):
        return f"could not reach the endpoint {exc.kwargs.get('endpoint_url', '')}".rstrip()
    if isinstance(exc, NoRegionError):
        return "no region was given (set AWS_REGION)"
    if isinstance(exc, WaiterError):
        last = exc.last_response.get("Error", {}) if exc.last_response else {}
        detail = f" (last error {last.get('Code')}: {last.get('Message')})" if last else ""
        return f"{exc.kwargs.get('reason', exc)}{detail}"
    return str(exc)


@contextmanager
def aws_errors(call: str, resource: str) -> Iterator[None]:
    """Turn a botocore failure inside the block into one :class:`AwsError` sentence.

    ``call`` is the service and operation (``"ec2 RunInstances"``); ``resource`` says what it
    was about (``"the slave instance"``). The original exception is kept as the cause.
    """
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise AwsError(f"{call} for {resource} failed: {_cause(exc)}") from exc


@contextmanager
def known_refusals(
    call: str, resource: str, codes: Collection[str], refusal: Callable[[str], OpsError]
) -> Iterator[None]:
    """As :func:`aws_errors`, but an AWS error whose code is one of ``codes`` (``"X*"``: any
    code starting with X) is raised as ``refusal(code)``, the user's sentence for an answer
    that means a setting names something that does not exist."""
    try:
        with aws_errors(call, resource):
            yield
    except AwsError as exc:
        code = error_code(exc)
        known = any(code.startswith(c[:-1]) if c.endswith("*") else code == c for c in codes)
        if not known:
            raise
        raise refusal(code) from exc.__cause__


def error_code(exc: BaseException) -> str:
    """The AWS error code behind an :class:`AwsError` (or a ``ClientError``), or ``""``."""
    cause = exc.__cause__ if isinstance(exc, AwsError) else exc
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code", ""))
    return ""


def waiter_config(timeout: float, max_delay: float = 15.0) -> WaiterConfigTypeDef:
    """A waiter's delay and attempts from a deadline in seconds (about 40 polls, 1 s to 15 s)."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    delay = max(1, min(round(max_delay), round(timeout / 40)))
    return {"Delay": delay, "MaxAttempts": max(1, math.ceil(timeout / delay))}


def tag_spec(resource_type: ResourceTypeType, tags: Mapping[str, str]) -> TagSpecificationTypeDef:
    """A ``TagSpecifications`` item, so a resource is tagged in the call that creates it."""
    return {
        "ResourceType": resource_type,
        "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
    }


def tags_of(item: Mapping[str, object]) -> dict[str, str]:
    """The ``Tags`` of a described resource as a dict."""
    raw = item.get("Tags") or []
    if not isinstance(raw, list):
        return {}
    return {str(t["Key"]): str(t["Value"]) for t in raw if isinstance(t, dict)}


def tag_filter(key: str, *values: str) -> FilterTypeDef:
    """A ``tag:KEY`` filter for describe calls."""
    return {"Name": f"tag:{key}", "Values": list(values)}
