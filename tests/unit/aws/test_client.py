"""The AWS edge as pure logic: regions, waiters, and failures turned into sentences."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from ops.aws.client import aws_errors, check_region, error_code, waiter_config
from ops.errors import AwsError, SettingError


def test_check_region_knows_real_regions_only() -> None:
    assert check_region("eu-west-1") == "eu-west-1"
    with pytest.raises(SettingError, match=r"^AWS_REGION eu-nowhere-9 is not an AWS region"):
        check_region("eu-nowhere-9")


@pytest.mark.parametrize(
    ("timeout", "delay", "attempts"),
    [(600, 15, 40), (30, 1, 30), (0.5, 1, 1), (120, 3, 40)],
)
def test_waiter_config_spreads_about_forty_polls_over_the_timeout(
    timeout: float, delay: int, attempts: int
) -> None:
    assert waiter_config(timeout) == {"Delay": delay, "MaxAttempts": attempts}


def test_aws_errors_turn_a_client_error_into_one_sentence_with_the_cause_attached() -> None:
    cause = ClientError(
        {"Error": {"Code": "InvalidAMIID.NotFound", "Message": "The image id does not exist"}},
        "RunInstances",
    )
    with pytest.raises(AwsError) as caught, aws_errors("ec2 RunInstances", "the slave instance"):
        raise cause
    assert str(caught.value) == (
        "ec2 RunInstances for the slave instance failed: InvalidAMIID.NotFound: "
        "The image id does not exist"
    )
    assert caught.value.__cause__ is cause
    assert error_code(caught.value) == "InvalidAMIID.NotFound"


def test_aws_errors_name_missing_credentials_and_unreachable_endpoints() -> None:
    with pytest.raises(AwsError) as no_creds, aws_errors("ec2 DescribeImages", "AMI ami-1"):
        raise NoCredentialsError()
    assert "no AWS credentials were found" in str(no_creds.value)
    with pytest.raises(AwsError) as unreachable, aws_errors("ec2 DescribeImages", "AMI ami-1"):
        raise EndpointConnectionError(endpoint_url="https://ec2.eu-west-1.amazonaws.com/")
    assert str(unreachable.value) == (
        "ec2 DescribeImages for AMI ami-1 failed: could not reach the endpoint "
        "https://ec2.eu-west-1.amazonaws.com/"
    )
