"""The customer-managed KMS key of ``KMS_KEY_ID``, checked before anything is encrypted with it.

EBS takes any key id, alias or ARN in ``CreateVolume`` and checks it later, asynchronously: a
volume made with an unknown or disabled key fails after the call has succeeded. So
:func:`check_key` asks KMS first (``DescribeKey``): the key must exist, be enabled, and be a
symmetric encryption key (the only kind EBS uses). Empty ``KMS_KEY_ID``: AWS's own EBS key, and
no KMS call at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ops.aws.client import known_refusals
from ops.errors import SettingError
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

NOTHING_CREATED = "nothing was created"


@dataclass(frozen=True)
class Key:
    """The KMS key the volumes are encrypted with, as KMS describes it."""

    requested: str
    """KMS_KEY_ID as set: an id, an ARN or an alias."""
    key_id: str
    arn: str
    """What is given to EBS: the key itself, whatever an alias points at later."""
    manager: str
    """``CUSTOMER`` or ``AWS``."""


def check_key(settings: Settings, kms: KMSClient) -> Key | None:
    """The key of ``KMS_KEY_ID`` if it exists, is enabled and can encrypt EBS volumes; None when
    ``KMS_KEY_ID`` is empty. Anything else is one :class:`SettingError` sentence."""
    wanted = settings.kms_key_id
    if not wanted:
        return None
    region = settings.aws_region
    with known_refusals(
        "kms DescribeKey",
        f"KMS_KEY_ID {wanted}",
        ("NotFoundException", "InvalidArnException"),
        lambda code: SettingError(
            f"KMS_KEY_ID {wanted} is not a KMS key of {region} (kms DescribeKey: {code}): "
            "create one (aws kms create-key) or leave KMS_KEY_ID empty for AWS's own EBS key; "
            f"{NOTHING_CREATED}"
        ),
    ):
        metadata = kms.describe_key(KeyId=wanted)["KeyMetadata"]
    state = metadata.get("KeyState", "Unknown")
    if state != "Enabled":
        raise SettingError(
            f"KMS_KEY_ID {wanted} is {state}, not Enabled: EBS cannot encrypt with it "
            f"(aws kms enable-key, or cancel its deletion); {NOTHING_CREATED}"
        )
    usage = metadata.get("KeyUsage", "ENCRYPT_DECRYPT")
    spec = metadata.get("KeySpec", "SYMMETRIC_DEFAULT")
    if usage != "ENCRYPT_DECRYPT" or spec != "SYMMETRIC_DEFAULT":
        raise SettingError(
            f"KMS_KEY_ID {wanted} is a {spec} key for {usage}: EBS encrypts only with "
            f"symmetric encryption keys (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT); {NOTHING_CREATED}"
        )
    return Key(
        requested=wanted,
        key_id=metadata["KeyId"],
        arn=metadata.get("Arn", metadata["KeyId"]),
        manager=metadata.get("KeyManager", "CUSTOMER"),
    )
