"""The AMI's snapshot is encrypted with KMS_KEY_ID's key when it is set: the template variable
comes from the setting, and the key is checked before Packer starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import botocore.session
import pytest
from botocore.stub import Stubber

from ops.aws import ami
from ops.errors import SettingError
from ops.settings import Settings, load
from tests.unit.aws.fake_packer import FakePacker

KEY = "0123abcd-0123-4567-89ab-0123456789ab"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(ami, "DEFAULT_VAR_FILE", tmp_path / "absent.pkrvars.hcl")
    return load(environ={"KMS_KEY_ID": KEY}, env_file=tmp_path / "none.env")


def test_kms_key_id_is_given_to_the_template_only_when_it_is_set(settings: Settings) -> None:
    assert f"-var=kms_key_id={KEY}" in ami.plan(settings).build
    plain = dataclasses.replace(settings, kms_key_id="")
    assert not any(word.startswith("-var=kms_key_id") for word in ami.plan(plain).build)
    declared = ami.template_variables(ami.TEMPLATE.read_text())
    assert set(ami.OPTIONAL_SETTING_VARIABLES) <= {n for n, default in declared.items() if default}


def test_a_variables_file_may_not_set_the_key_that_kms_key_id_sets(
    settings: Settings, tmp_path: Path
) -> None:
    var_file = tmp_path / "v.pkrvars.hcl"
    var_file.write_text('kms_key_id = "alias/other"\n')
    with pytest.raises(SettingError) as caught:
        ami.plan(settings, var_file)
    assert str(caught.value) == (
        f"{var_file} sets kms_key_id, which comes from the settings (KMS_KEY_ID); remove it "
        "from that file"
    )
    assert ami.plan(dataclasses.replace(settings, kms_key_id=""), var_file).var_file == var_file


def kms(code: str = "", state: str = "Enabled") -> tuple[object, Stubber]:
    client = botocore.session.get_session().create_client(
        "kms", region_name="eu-west-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    stub = Stubber(client)
    if code:
        stub.add_client_error("describe_key", service_error_code=code)
    else:
        metadata = {"KeyId": KEY, "Arn": f"arn:aws:kms:eu-west-1:111122223333:key/{KEY}",
                    "KeyState": state, "KeyUsage": "ENCRYPT_DECRYPT",
                    "KeySpec": "SYMMETRIC_DEFAULT"}  # fmt: skip
        stub.add_response("describe_key", {"KeyMetadata": metadata}, {"KeyId": KEY})
    return client, stub


@pytest.mark.parametrize(
    ("code", "state", "said"),
    [
        ("NotFoundException", "", f"KMS_KEY_ID {KEY} is not a KMS key of eu-west-1"),
        ("", "PendingDeletion", f"KMS_KEY_ID {KEY} is PendingDeletion, not Enabled"),
    ],
)
def test_an_unknown_or_disabled_key_stops_the_build_before_packer_init(
    settings: Settings, tmp_path: Path, code: str, state: str, said: str
) -> None:
    packer = FakePacker(tmp_path / "packer")
    client, stub = kms(code, state)
    with stub, pytest.raises(SettingError) as caught:
        ami.build_ami(
            settings,
            None,
            print,
            which=packer.which,
            environ=packer.environ,
            kms=client,  # type: ignore[arg-type]  # botocore's client is boto3's
        )
    assert str(caught.value).startswith(said)
    assert packer.calls() == ["-machine-readable version"]


def test_an_enabled_key_lets_the_build_run_with_it(settings: Settings, tmp_path: Path) -> None:
    packer = FakePacker(tmp_path / "packer")
    client, stub = kms()
    with stub:
        ami.build_ami(
            settings,
            None,
            print,
            which=packer.which,
            environ=packer.environ,
            kms=client,  # type: ignore[arg-type]  # botocore's client is boto3's
        )
    assert f"-var=kms_key_id={KEY}" in packer.calls()[-1]
