"""The slave's receiver refuses whatever a peer sends it in one short line, never a traceback."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import pytest

from gitlab_sync import receiver
from gitlab_sync.config import Pairing, Paths, Peer, Tunables, save_pairing

LONG = "x" * 10_000
SHORT_LINE = 200  # what a refusal may take on the master's screen, at most


@pytest.fixture
def slave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(b"")))
    paths = Paths(state=tmp_path / "state", source=tmp_path / "source", sync=tmp_path / "sync")
    save_pairing(paths, Pairing(role="slave", peer=Peer("master"), peer_key="ssh-ed25519 AAAA"))
    return paths


def _refusal(paths: Paths, command: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Serve ``command``; it must be refused with exit 1 and one line: that line."""
    assert receiver.serve({"SSH_ORIGINAL_COMMAND": command}, paths, Tunables()) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err[:500]
    assert "Traceback" not in err
    assert lines[0].startswith("gitlab-sync receiver: refused: ")
    assert len(lines[0]) <= SHORT_LINE, lines[0][:500]
    return lines[0]


def _recorded(paths: Paths) -> dict[str, str]:
    data: dict[str, str] = json.loads(paths.receiver.read_text())
    return data


@pytest.mark.parametrize(
    "command",
    [
        "gitlab-sync-recv hello 1 'unbalanced",
        'gitlab-sync-recv rsync 1 p1 --server "-logDtpre.iLsfxC . incoming/',
        "gitlab-sync-recv hello 1 trailing\\",
    ],
)
def test_an_unbalanced_quote_is_refused_in_one_line(
    slave: Paths, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refusal(slave, command, capsys)
    assert "not a gitlab-sync command" in line
    assert _recorded(slave)["error"] == line.removeprefix("gitlab-sync receiver: ")


@pytest.mark.parametrize(
    "command",
    [
        f"gitlab-sync-recv {LONG} 1 p1",
        f"gitlab-sync-recv rsync 1 p1 --server -{'Q' * 10_000} . incoming/",
        f"gitlab-sync-recv rsync 1 p1 --server --{LONG} . incoming/",
        f"gitlab-sync-recv rsync 1 p1 --server {LONG} . incoming/",
        f"gitlab-sync-recv label 1 p1 {LONG}",
        f"gitlab-sync-recv hello {'9' * 10_000}",
        f"{LONG} hello 1",
        f"gitlab-sync-recv hello 1 '{LONG}",
    ],
    ids=[
        "verb",
        "short-option",
        "long-option",
        "operand",
        "label",
        "epoch",
        "program",
        "quote",
    ],
)
def test_a_ten_thousand_character_command_gets_a_short_line(
    slave: Paths, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refusal(slave, command, capsys)
    recorded = _recorded(slave)
    assert recorded["error"] == line.removeprefix("gitlab-sync receiver: ")
    assert len(recorded["command"]) <= SHORT_LINE


def test_what_is_echoed_of_a_long_word_is_cut_with_an_ellipsis(
    slave: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refusal(slave, f"gitlab-sync-recv frobnicate{LONG} 1 p1", capsys)
    assert "unknown verb 'frobnicatexxx" in line and line.endswith("...")


def test_a_short_unknown_verb_is_echoed_whole(
    slave: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refusal(slave, "gitlab-sync-recv frobnicate 1 p1", capsys)
    assert line == "gitlab-sync receiver: refused: unknown verb 'frobnicate'"


def test_an_epoch_of_other_digits_than_ascii_is_refused_in_one_line(
    slave: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refusal(slave, "gitlab-sync-recv hello \u00b2", capsys)  # "2".isdigit(), int() fails
    assert "not a gitlab-sync command" in line


NAME = "20261125T120000.000000Z"


@pytest.mark.parametrize(
    ("word", "why"),
    [
        ("base=../../etc", "is not a snapshot name"),
        (f"base={LONG}", "is not a snapshot name"),
        ("base=", "is not a snapshot name"),
        (f"base={NAME}", "not btrfs snapshots"),  # a folder area: .incoming starts empty
    ],
    ids=["path", "long", "empty", "fallback-area"],
)
def test_a_pass_of_what_changed_is_refused_unless_it_can_continue_from_its_base(
    slave: Paths, word: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = f"gitlab-sync-recv rsync 1 p1 {word} --server -logDtpre.iLsfxC . incoming/"
    line = _refusal(slave, command, capsys)
    assert "base=" in line and why in line
    assert not (slave.sync / ".incoming").exists()  # nothing begun
    assert _recorded(slave)["error"] == line.removeprefix("gitlab-sync receiver: ")


def test_hello_says_the_slaves_layout(slave: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    slave.sync.mkdir()
    assert (
        receiver.serve({"SSH_ORIGINAL_COMMAND": "gitlab-sync-recv hello 1"}, slave, Tunables()) == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert answer["role"] == "slave" and answer["current"] is None
    assert answer["layout"]["method"] == "fallback"
    assert answer["layout"]["sync"]["path"] == str(slave.sync)
