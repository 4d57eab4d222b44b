"""``gitlab-sync fence EPOCH``: promotion's one call that moves the slave's receiver to the new
epoch. From then on the receiver refuses the old master's epoch; the epoch never goes back."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Literal

import pytest

from gitlab_sync import cli, receiver
from gitlab_sync.config import (
    Pairing,
    Paths,
    Peer,
    SyncError,
    Tunables,
    load_pairing,
    save_pairing,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0Zm8m1Z4HfGv5b7Qm8Y2w1w3u2q0eH0Q1l2g3h4i5j master"


def _paths(tmp_path: Path, role: Literal["master", "slave"] | None, epoch: int = 1) -> Paths:
    paths = Paths(state=tmp_path / "state", source=tmp_path / "source", sync=tmp_path / "sync")
    for folder in (paths.state, paths.source, paths.sync):
        folder.mkdir(parents=True, exist_ok=True)
    if role is not None:
        save_pairing(
            paths, Pairing(role=role, peer=Peer("master", 2222), peer_key=KEY, epoch=epoch)
        )
    return paths


def _hello(paths: Paths, epoch: int, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(b"")))
    command = f"gitlab-sync-recv hello {epoch}"
    return receiver.serve({"SSH_ORIGINAL_COMMAND": command}, paths, Tunables())


def test_a_fenced_receiver_refuses_the_old_epoch_and_keeps_its_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _paths(tmp_path, "slave", epoch=1)
    done = cli.fence(paths, 2)
    assert done == {"role": "slave", "was": 1, "epoch": 2, "fenced": True}
    pairing = load_pairing(paths)
    assert pairing is not None
    assert (pairing.role, pairing.peer, pairing.peer_key, pairing.epoch) == (
        "slave",
        Peer("master", 2222),
        KEY,
        2,
    )
    capsys.readouterr()
    assert _hello(paths, 1, monkeypatch) == 1
    assert "sender epoch 1 is not this slave's epoch 2 (fenced)" in capsys.readouterr().err
    assert _hello(paths, 2, monkeypatch) == 0


def test_fencing_again_or_to_an_older_epoch_changes_nothing(tmp_path: Path) -> None:
    paths = _paths(tmp_path, "slave", epoch=3)
    assert cli.fence(paths, 3) == {"role": "slave", "was": 3, "epoch": 3, "fenced": True}
    assert cli.fence(paths, 2) == {"role": "slave", "was": 3, "epoch": 3, "fenced": True}
    pairing = load_pairing(paths)
    assert pairing is not None and pairing.epoch == 3


@pytest.mark.parametrize("role", ["master", None])
def test_a_sidecar_that_is_not_receiving_is_left_alone(
    tmp_path: Path, role: Literal["master"] | None
) -> None:
    paths = _paths(tmp_path, role)
    before = paths.pairing.read_bytes() if role else None
    done = cli.fence(paths, 2)
    assert done["fenced"] is False and done["role"] == role
    assert (paths.pairing.read_bytes() if role else None) == before
    assert role or not paths.pairing.exists()


def test_the_verb_prints_json_and_refuses_a_bad_epoch_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _paths(tmp_path, "slave", epoch=1)
    monkeypatch.setattr(Paths, "from_env", staticmethod(lambda: paths))
    assert cli.main(["fence", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 2
    assert cli.main(["fence", "4"]) == 0
    assert capsys.readouterr().out.strip() == (
        "the receiver now refuses senders of epochs before 4 (was 2)"
    )
    with pytest.raises(SyncError, match="the epoch must be 1 or more"):
        cli.fence(paths, 0)
