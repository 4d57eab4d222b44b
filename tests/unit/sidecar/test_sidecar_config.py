"""The sidecar's inputs: peers, keys, durations, tunables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitlab_sync import keys
from gitlab_sync.config import Pairing, Paths, Peer, SyncError, Tunables, parse_duration
from gitlab_sync.retention import Tiers
from gitlab_sync.status import PassSummary, SidecarStatus

KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKf3m4yD5c7Vg2Qx0j9cT1uYtQx7kHkqz8m0Jt3JHq2b someone@host"
)


@pytest.mark.parametrize(
    ("text", "peer"),
    [
        ("slave", Peer("slave", 2222)),
        ("10.0.0.5:2200", Peer("10.0.0.5", 2200)),
        ("gitlab-slave.internal.example.com", Peer("gitlab-slave.internal.example.com", 2222)),
        ("[fd00::5]:2222", Peer("fd00::5", 2222)),
    ],
)
def test_peers_are_host_and_optional_port(text: str, peer: Peer) -> None:
    assert Peer.parse(text) == peer


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("user:password@slave", "not user:password"),
        ("slave:0", "port"),
        ("slave:http", "port"),
        ("bad host", "not a host name"),
        ("-oProxyCommand=x", "not a host name"),
        ("", "not a host"),
    ],
)
def test_malformed_peers_are_refused(text: str, why: str) -> None:
    with pytest.raises(SyncError, match=why):
        Peer.parse(text)


def test_public_keys_are_checked_and_private_keys_refused() -> None:
    assert keys.check_public_key(f"  {KEY}\n") == KEY
    with pytest.raises(SyncError, match="private key"):
        keys.check_public_key("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n")
    with pytest.raises(SyncError, match="malformed key"):
        keys.check_public_key("ssh-ed25519 tooshort")


def test_slave_trusts_the_master_key_for_the_receiver_only(tmp_path: Path) -> None:
    paths = Paths(state=tmp_path, source=tmp_path / "s", sync=tmp_path / "y")
    keys.write_trust(paths, Pairing("slave", Peer("master"), KEY))
    line = keys.authorized_keys(paths).read_text()
    assert line.startswith('restrict,command="/usr/local/bin/gitlab-sync serve" ssh-ed25519 ')
    assert keys.known_hosts(paths).read_text() == ""
    assert oct(keys.authorized_keys(paths).stat().st_mode & 0o777) == "0o600"


def test_master_pins_the_slave_host_key_with_its_port(tmp_path: Path) -> None:
    paths = Paths(state=tmp_path, source=tmp_path / "s", sync=tmp_path / "y")
    keys.write_trust(paths, Pairing("master", Peer("slave", 2200), KEY))
    assert keys.known_hosts(paths).read_text().startswith("[slave]:2200 ssh-ed25519 ")
    assert keys.authorized_keys(paths).read_text() == ""
    keys.write_trust(paths, None)
    assert keys.known_hosts(paths).read_text() == ""


def test_master_ssh_never_prompts_and_checks_the_host_key(tmp_path: Path) -> None:
    paths = Paths(state=tmp_path, source=tmp_path, sync=tmp_path)
    argv = keys.ssh_argv(paths, Pairing("master", Peer("slave"), KEY))
    assert {"BatchMode=yes", "StrictHostKeyChecking=yes", "IdentitiesOnly=yes"} <= set(argv)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("0.2s", 0.2)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_tunables_come_from_the_environment() -> None:
    tunables = Tunables.from_env(
        {"SYNC_INTERVAL": "2m", "SNAPSHOT_KEEP_HOURLY": "3d", "SYNC_BWLIMIT": "100"}
    )
    assert (tunables.interval, tunables.keep_hourly, tunables.bwlimit) == (120, 259200, 100)
    assert tunables.tiers == Tiers(hourly=259200)  # the other tiers at their defaults
    assert Tiers() == Tiers(every=900, minutely=7200, hourly=172800, daily=691200, most=0)
    with pytest.raises(SyncError, match="bad sidecar setting"):
        Tunables.from_env({"SYNC_INTERVAL": "soon"})
    with pytest.raises(SyncError, match="bad sidecar setting: a whole number of snapshots"):
        Tunables.from_env({"SNAPSHOT_KEEP_MAX": "-1"})


@pytest.mark.parametrize("name", ["SNAPSHOT_KEEP", "SNAPSHOT_MAX_AGE"])
def test_the_retired_retention_settings_are_refused_naming_the_tiers(name: str) -> None:
    with pytest.raises(SyncError) as error:
        Tunables.from_env({name: "24"})
    said = str(error.value)
    assert said.startswith(f"{name}: no longer read: retention is by tiers, SNAPSHOT_KEEP_ALL")
    assert "SNAPSHOT_KEEP_DAILY" in said and "\n" not in said


def test_tunables_an_older_version_saved_still_load(tmp_path: Path) -> None:
    paths = Paths(state=tmp_path, source=tmp_path / "source", sync=tmp_path / "sync")
    (tmp_path / "tunables.json").write_text('{"interval": 60, "keep": 24, "max_age": 604800}')
    assert Tunables.saved(paths) == Tunables(interval=60)


@pytest.mark.parametrize(
    ("stderr", "words"),
    [
        (
            "kex_exchange_identification: read: Connection reset by peer\n"
            "rsync: connection unexpectedly closed\nrsync error: (code 12)",
            "no receiver there",
        ),
        ("ssh: connect to host slave port 2222: Connection refused", "is unreachable"),
        ("root@slave: Permission denied (publickey).", "refused this master's key"),
        ("Host key verification failed.", "not the one paired"),
        (
            "gitlab-sync receiver: refused: sender epoch 1 is not this slave's epoch 2 (fenced)\n"
            "rsync error: (code 12)",
            "sender epoch 1 is not this slave's epoch 2 (fenced)",
        ),
    ],
)
def test_ssh_failures_are_explained_in_one_sentence(stderr: str, words: str) -> None:
    message = keys.explain_ssh_failure("slave:2222", 12, stderr)
    assert words in message and message.startswith("the slave at slave:2222")


def test_status_keeps_the_layout_through_its_json() -> None:
    layout: dict[str, object] = {
        "method": "snapshots",
        "why": "btrfs",
        "problems": [],
        "source": None,
        "sync": None,
    }
    status = SidecarStatus(
        role="slave",
        epoch=2,
        layout=layout,
        last_complete=PassSummary(id="p1", snapshot="s1", extra={"method": "snapshots"}),
    )
    again = SidecarStatus.from_json(json.loads(json.dumps(status.to_json())))
    assert again == status
    assert again.layout["method"] == "snapshots"
    assert SidecarStatus.from_json({"layout": "nonsense"}).layout == {}
    assert SidecarStatus.from_json({}).layout == {}  # a sidecar from before snapshots
