"""Ec2Writer is the one writer of EC2 and Route53Writer of Route 53: no other module calls an
EC2, Route 53 or KMS write, and their writes are safe to repeat."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name
from botocore.stub import Stubber

from ops.aws.writer import Ec2Writer, Route53Writer
from ops.errors import AwsError
from tests.unit.aws.factories import settings

ROOT = Path(__file__).resolve().parents[3]
WRITER = ROOT / "ops" / "aws" / "writer.py"
READS = ("describe_", "get_", "list_", "search_")
"""EC2 operations that only read; every other EC2 operation changes something."""


@functools.cache
def ec2_writes() -> frozenset[str]:
    """Every EC2 operation that changes something, by its boto3 method name."""
    model = botocore.session.get_session().get_service_model("ec2")
    names = (xform_name(name) for name in model.operation_names)
    return frozenset(name for name in names if not name.startswith(READS))


KMS_USES = frozenset(
    {"encrypt", "decrypt", "re_encrypt", "sign", "verify", "verify_mac", "generate_mac",
     "generate_random", "generate_data_key", "generate_data_key_without_plaintext",
     "generate_data_key_pair", "generate_data_key_pair_without_plaintext", "encapsulate",
     "decapsulate", "derive_shared_secret"}
)  # fmt: skip
"""KMS operations that use a key and change nothing in AWS (``load.verify`` is no KMS call)."""
OTHER_READS = {"route53": frozenset({"test_dns_answer"}), "kms": KMS_USES}


@functools.cache
def writes_of(service: str) -> frozenset[str]:
    """Every operation of ``service`` that changes something, by its boto3 method name."""
    model = botocore.session.get_session().get_service_model(service)
    names = (xform_name(name) for name in model.operation_names)
    reads = OTHER_READS.get(service, frozenset())
    return frozenset(n for n in names if not n.startswith(READS) and n not in reads)


def writes_in(path: Path, writes: frozenset[str] | None = None) -> list[str]:
    """``file:line name`` for each call of a write method (EC2's unless ``writes`` says) in the
    module at ``path``."""
    names = ec2_writes() if writes is None else writes
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.func.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in names
    ]


def test_the_scan_knows_ec2_writes_and_finds_them_in_the_writer() -> None:
    assert {"run_instances", "create_tags", "associate_address", "register_image"} <= ec2_writes()
    assert "describe_instances" not in ec2_writes()
    found = {line.rsplit(" ", 1)[1] for line in writes_in(WRITER)}
    assert {"run_instances", "create_tags", "modify_instance_attribute"} <= found


def test_no_writer_method_is_named_like_an_ec2_operation() -> None:
    # Else the scan below could not tell ``writer.attach_volume`` from ``ec2.attach_volume``.
    methods = {name for name in vars(Ec2Writer) if not name.startswith("_")}
    model = botocore.session.get_session().get_service_model("ec2")
    assert methods & {xform_name(name) for name in model.operation_names} == set()


def test_no_module_but_the_writer_calls_an_ec2_write() -> None:
    modules = [*sorted((ROOT / "ops").rglob("*.py")), ROOT / "tasks.py"]
    assert len(modules) > 20
    offenders = [line for path in modules if path != WRITER for line in writes_in(path)]
    assert offenders == [], "EC2 writes outside ops/aws/writer.py (use Ec2Writer)"


def test_the_scan_knows_route53_and_kms_writes_and_finds_the_record_upsert() -> None:
    assert {"change_resource_record_sets", "create_hosted_zone"} <= writes_of("route53")
    assert {"create_key", "schedule_key_deletion", "create_grant"} <= writes_of("kms")
    assert not {"list_resource_record_sets", "describe_key", "verify"} & (
        writes_of("route53") | writes_of("kms")
    )
    found = {line.rsplit(" ", 1)[1] for line in writes_in(WRITER, writes_of("route53"))}
    assert found == {"change_resource_record_sets", "create_hosted_zone"}  # the sandbox's zone


def test_no_writer_method_is_named_like_a_route53_or_kms_operation() -> None:
    methods = {name for cls in (Ec2Writer, Route53Writer) for name in vars(cls)}
    session = botocore.session.get_session()
    for service in ("route53", "kms"):
        model = session.get_service_model(service)
        assert methods & {xform_name(name) for name in model.operation_names} == set()


@pytest.mark.parametrize("service", ["route53", "kms"])
def test_no_module_but_the_writer_calls_a_route53_or_kms_write(service: str) -> None:
    modules = [*sorted((ROOT / "ops").rglob("*.py")), ROOT / "tasks.py"]
    offenders = [
        line for path in modules if path != WRITER for line in writes_in(path, writes_of(service))
    ]
    assert offenders == [], f"{service} writes outside ops/aws/writer.py (use its writer)"


# --- writes that are safe to repeat ----------------------------------------------------------


def stubbed() -> tuple[Ec2Writer, Stubber]:
    client = botocore.session.get_session().create_client(
        "ec2",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return Ec2Writer(settings(), client), Stubber(client)  # type: ignore[arg-type]  # botocore's client is boto3's


PERMISSION = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "::"}]}


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("authorize_security_group_ingress", "InvalidPermission.Duplicate"),
        ("revoke_security_group_ingress", "InvalidPermission.NotFound"),
    ],
)
def test_a_rule_already_there_or_already_gone_is_no_error(method: str, code: str) -> None:
    writer, stub = stubbed()
    stub.add_client_error(method, service_error_code=code)
    with stub:
        if method.startswith("authorize"):
            result = writer.authorize_ingress("sg-1", PERMISSION, "tcp 22 on gitlab-open")  # type: ignore[arg-type]  # a literal permission
        else:
            result = writer.revoke_ingress("sg-1", "tcp 22 on gitlab-open", rule_id="sgr-1")
    assert result == "sg-1"
    stub.assert_no_pending_responses()


def test_another_authorize_failure_is_one_sentence_naming_the_rule() -> None:
    writer, stub = stubbed()
    stub.add_client_error(
        "authorize_security_group_ingress",
        service_error_code="RulesPerSecurityGroupLimitExceeded",
        service_message="too many rules",
    )
    with stub, pytest.raises(AwsError) as caught:
        writer.authorize_ingress("sg-1", PERMISSION, "tcp 22 on gitlab-open")  # type: ignore[arg-type]  # a literal permission
    assert str(caught.value) == (
        "ec2 AuthorizeSecurityGroupIngress for tcp 22 on gitlab-open failed: "
        "RulesPerSecurityGroupLimitExceeded: too many rules"
    )
