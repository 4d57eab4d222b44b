"""The sandbox's settings and names, without starting anything."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from ops import settings as settings_mod
from ops.aws.ami import data_mount_point
from ops.dr.topology import resolve
from ops.errors import SandboxError, SettingError
from ops.rehearsal import processes, sandbox
from ops.rehearsal.layout import (
    NAMES,
    STACK_PORTS,
    Instance,
    SandboxLayout,
    State,
    render_env,
    sandbox_values,
)
from ops.rehearsal.processes import EPHEMERAL_RANGE, free_port
from tests.unit.pairs import A, B, pair


def _instances() -> tuple[Instance, ...]:
    return (
        Instance("a", A, 32001, tuple((k, 41000 + i) for i, k in enumerate(STACK_PORTS))),
        Instance("b", B, 32002, tuple((k, 42000 + i) for i, k in enumerate(STACK_PORTS))),
    )


def _values(layout: SandboxLayout, filesystem: str = "btrfs", dns: str = "off") -> dict[str, str]:
    return sandbox_values(
        layout,
        moto_url="http://127.0.0.1:5000",
        base_image="gitlab-dr/debian:bookworm",
        gitlab_image="gitlab-dr/gitlab-standin:local",
        sync_address_host="172.17.0.1",
        filesystem=filesystem,
        dns=dns,
        ami_id="ami-0123456789abcdef0",
        instances=_instances(),
    )


def _load(
    layout: SandboxLayout, tmp_path: Path, filesystem: str = "btrfs"
) -> settings_mod.Settings:
    env = tmp_path / "sandbox.env"
    env.write_text(render_env(_values(layout, filesystem)))
    return settings_mod.load({}, env_file=env)


def test_the_sandbox_file_is_valid_settings_keyed_by_instance(tmp_path: Path) -> None:
    layout = SandboxLayout(tmp_path / "sb")
    env = tmp_path / "sandbox.env"
    env.write_text(render_env(_values(layout), "written by a test\nsecond line"))
    loaded = settings_mod.load({}, env_file=env)
    assert loaded.use_aws
    assert loaded.aws_endpoint_url == "http://127.0.0.1:5000"
    assert loaded.aws_shared_credentials_file == str(layout.credentials)
    assert loaded.instance_address(A) == "127.0.0.1:32001"
    a = loaded.for_instance(A)
    assert a.project_name == layout.stack("a")
    assert a.gitlab_home == str(layout.data("a") / "gitlab")
    assert (a.gitlab_http_port, a.sync_port) == (41000, 41004)
    # After a promotion (roles swapped in AWS), b is the master, reached and set up as b.
    topo = resolve(loaded, pair(master=B, slave=A))
    assert (topo.master.host.port, topo.master.settings.project_name) == (32002, layout.stack("b"))
    assert topo.sync_address == "172.17.0.1:41004"
    assert env.read_text().startswith("# written by a test\n# second line\nPROJECT_NAME='")


def test_each_instance_keeps_its_homes_as_the_ami_lays_out_a_data_volume(tmp_path: Path) -> None:
    layout = SandboxLayout(tmp_path / "sb")
    loaded = _load(layout, tmp_path)
    assert loaded.sandbox_filesystem == "btrfs"
    homes = set()
    for name, iid in zip(NAMES, (A, B), strict=True):
        own = loaded.for_instance(iid)
        fs = layout.filesystem(name)
        # The subvolumes of the instance's own loop-file btrfs, side by side at its top, as
        # GITLAB_HOME and SYNC_HOME sit at the top of an AMI host's data volume (so that the
        # restore can put a snapshot beside GITLAB_HOME, and the slave's snapshots beside it).
        assert (own.gitlab_home, own.sync_home) == (
            str(fs.mountpoint / "gitlab"),
            str(fs.mountpoint / "gitlab-sync"),
        )
        assert data_mount_point(own.gitlab_home, own.sync_home) == str(layout.data(name))
        assert fs.image.parent == layout.home(name) and fs.image.name == "btrfs.img"
        homes |= {own.gitlab_home, own.sync_home}
    assert len(homes) == 4


def test_the_plain_sandbox_keeps_the_same_folders_and_says_so(tmp_path: Path) -> None:
    layout = SandboxLayout(tmp_path / "sb")
    loaded = _load(layout, tmp_path, "plain")
    assert loaded.sandbox_filesystem == "plain"
    assert loaded.for_instance(A).gitlab_home == str(layout.data("a") / "gitlab")


def test_the_sandbox_filesystem_is_btrfs_or_plain_and_a_bad_one_is_one_line(
    tmp_path: Path,
) -> None:
    none = tmp_path / "none"
    assert settings_mod.load({}, env_file=none).sandbox_filesystem == "btrfs"
    assert settings_mod.load(
        {"SANDBOX_FILESYSTEM": " Plain "}, env_file=none
    ).sandbox_filesystem == ("plain")
    with pytest.raises(SettingError) as refused:
        settings_mod.load({"SANDBOX_FILESYSTEM": "zfs"}, env_file=none)
    assert str(refused.value) == "SANDBOX_FILESYSTEM: expected btrfs or plain, got 'zfs'"


def test_sandbox_up_refuses_a_bad_filesystem_before_it_makes_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_FILESYSTEM", "ext4")
    lines: list[str] = []
    with pytest.raises(
        SettingError, match=r"^SANDBOX_FILESYSTEM: expected btrfs or plain, got 'ext4'$"
    ):
        sandbox.up(tmp_path / "sb", lines.append)
    assert lines == []
    assert not (tmp_path / "sb").exists()


def test_a_record_says_what_the_instances_keep_their_data_on(tmp_path: Path) -> None:
    state = State(str(tmp_path), "p", filesystem="btrfs")
    state.save(SandboxLayout(tmp_path))
    loaded = State.load(SandboxLayout(tmp_path))
    assert loaded is not None and loaded.filesystem == "btrfs"
    assert f"their data: btrfs in loop files, in {tmp_path / 'instances'}/<a|b>/mnt" in (
        loaded.lines()
    )


def test_every_sandbox_value_is_a_setting(tmp_path: Path) -> None:
    names = {spec.name for spec in settings_mod.SPECS}
    assert set(_values(SandboxLayout(tmp_path))) <= names


def test_two_folders_make_two_sandboxes_that_do_not_share_names(tmp_path: Path) -> None:
    one, two = SandboxLayout(tmp_path / "one"), SandboxLayout(tmp_path / "two")
    assert one.project != two.project
    assert {one.stack("a"), one.stack("b"), one.container("a")}.isdisjoint(
        {two.stack("a"), two.stack("b"), two.container("a")}
    )
    assert SandboxLayout(tmp_path / "one").stack("a") == one.stack("a")


def test_a_value_that_cannot_be_quoted_is_refused() -> None:
    with pytest.raises(SandboxError, match="cannot write"):
        render_env({"GITLAB_HOME": "/srv/it's"})


def test_the_record_names_each_instance_by_its_id_and_knows_no_other(tmp_path: Path) -> None:
    state = State(str(tmp_path), "p", instances=[{"name": "a", "instance_id": A}])
    assert state.instance_name(A) == "a"
    assert state.instance_name(B) is None


def test_sandbox_dns_name_gives_a_private_gitlab_found_by_its_record(tmp_path: Path) -> None:
    layout = SandboxLayout(tmp_path / "sb")
    plain = _load(layout, tmp_path)
    assert (plain.sandbox_dns, plain.use_elastic_ip, plain.dns_zone) == ("off", True, "")
    env = tmp_path / "named.env"
    env.write_text(render_env(_values(layout, dns="name")))
    named = settings_mod.load({}, env_file=env)
    assert (named.sandbox_dns, named.use_elastic_ip) == ("name", False)
    assert (named.dns_zone, named.dns_name, named.dns_ttl) == (
        "sandbox.test",
        "gitlab.sandbox.test",
        5,
    )


def test_the_ports_it_names_are_below_the_range_the_kernel_and_docker_hand_out() -> None:
    """A port named now and bound later (a stack's, at pair or promotion) must not be one that a
    connection or another container can take meanwhile."""
    low = int(EPHEMERAL_RANGE.read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < port < low for port in ports), (low, sorted(ports))
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", ports[0]))  # noqa: S104 - it was free on every address


def test_a_port_named_by_another_process_is_not_named_again_until_it_is_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sandboxes made at the same time (test workers, a drill beside a run) share no port:
    the second process sees what the first named, through the file they share."""
    ranged = tmp_path / "ip_local_port_range"
    ranged.write_text("10100\t60999\n")  # 100 candidates: two random draws of 30 would meet
    monkeypatch.setattr(processes, "EPHEMERAL_RANGE", ranged)
    monkeypatch.setattr(processes, "PORTS_GIVEN", tmp_path / "given")
    monkeypatch.setattr(processes, "_given", set())
    first = {free_port() for _ in range(30)}
    monkeypatch.setattr(processes, "_given", set())  # what a second process starts with
    second = {free_port() for _ in range(30)}
    assert all(10000 <= port < 10100 for port in first | second), sorted(first | second)
    assert len(first) == len(second) == 30 and not first & second, sorted(first & second)

    later = time.time() + processes.PORT_HELD + 1
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(processes, "_given", set())
    again = {free_port() for _ in range(30)}
    assert again & (first | second), "a port named over PORT_HELD ago is never named again"
