"""inv status with AWS (a moto server): instances, groups, the Elastic IP, and dead hosts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
from pathlib import Path

import pytest

from ops.aws.inventory import describe_pair
from ops.aws.launch import launch
from ops.dr import status
from tests.integration.aws.factories import REGION, settings_for
from tests.integration.moto_server import MotoServer

pytestmark = pytest.mark.integration


def test_status_reads_aws_and_reports_unreachable_hosts_as_failed_checks(
    moto: MotoServer, tmp_path: Path
) -> None:
    ec2 = moto.ec2(REGION)
    ami = ec2.register_image(Name="gitlab-dr-test", RootDeviceName="/dev/xvda")["ImageId"]
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "known_hosts").write_text("")
    settings = dataclasses.replace(
        settings_for(moto, AMI_ID=ami),
        master_host="127.0.0.1:1",  # nothing listens on ports 1 and 2: both hosts are down
        slave_host="127.0.0.1:2",
        ssh_key_file=str(key),
        ssh_known_hosts=str(tmp_path / "known_hosts"),
        ssh_connect_timeout=2.0,
    )
    launch(settings)

    started = dt.datetime.now(dt.UTC)
    report = status.collect(settings)
    took = (dt.datetime.now(dt.UTC) - started).total_seconds()

    assert report.aws is not None
    roles = {h["role"]: h for h in report.aws["hosts"]}
    assert set(roles) == {"master", "slave"}
    assert "gitlab-open" in roles["master"]["security_groups"]
    assert "gitlab-slave" in roles["slave"]["security_groups"]
    assert report.aws["eip_holder"] == "master"
    found = {c.name: c for c in report.checks}
    assert found["elastic ip"].ok and found["aws master instance"].ok
    assert not found["master host"].ok and "unreachable" in found["master host"].detail
    assert not found["slave host"].ok
    assert not report.ok
    assert took < 30, f"status took {took:.0f} s with both hosts down"
    text = "\n".join(status.render(report))
    assert "FAIL master host" in text and "elastic ip: master" in text


def test_status_shows_a_stopped_pair_and_then_a_promoted_one_without_a_crash(
    moto: MotoServer, tmp_path: Path
) -> None:
    ec2 = moto.ec2(REGION)
    ami = ec2.register_image(Name="gitlab-dr-test", RootDeviceName="/dev/xvda")["ImageId"]
    settings = dataclasses.replace(
        settings_for(moto, AMI_ID=ami), state_dir=str(tmp_path), ssh_connect_timeout=2.0
    )
    launch(settings)
    state = describe_pair(settings, ec2)
    assert state.master is not None and state.slave is not None
    master, slave = state.master.instance_id, state.slave.instance_id

    ec2.stop_instances(InstanceIds=[master, slave])
    stopped = status.collect(settings)  # no host is tried: AWS says neither runs
    found = {c.name: c for c in stopped.checks}
    assert not stopped.ok
    assert found["master host"].detail.startswith(f"instance {master} is stopp")
    assert found["slave host"].detail.startswith(f"instance {slave} is stopp")
    assert not found["aws master instance"].ok and not found["aws slave instance"].ok
    assert "master -  MISSING: instance" in "\n".join(status.render(stopped))

    # As a promotion leaves it: the old slave is master, the old master fenced and stopped.
    ec2.start_instances(InstanceIds=[slave])
    ec2.create_tags(Resources=[slave], Tags=[{"Key": "Role", "Value": "master"}])
    ec2.create_tags(Resources=[master], Tags=[{"Key": "Role", "Value": "fenced"}])
    promoted = dataclasses.replace(settings, master_host="127.0.0.1:1")  # its host is down
    data = status.collect(promoted).to_dict()
    found_json = {c["name"]: c for c in data["checks"]}
    assert data["ok"] is False
    assert found_json["slave host"] == {
        "name": "slave host",
        "ok": False,
        "critical": True,
        "detail": "SLAVE_HOST is not set and AWS has no running instance tagged Role=slave",
        "hint": "start it, or give the master a new slave (inv rebuild-slave)",
    }
    assert f"fenced {master}" in found_json
    assert {h["instance_id"]: h["role"] for h in data["aws"]["hosts"]} == {
        slave: "master",
        master: "fenced",
    }
