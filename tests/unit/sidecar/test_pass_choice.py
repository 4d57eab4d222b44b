"""Which passes send what changed and which the whole tree, and the receiver's refusal read back.

The passes themselves run on real pairs (tests/integration/sidecar/test_change_passes.py); here,
the choice a pass makes from what the sender knows, one reason at a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gitlab_sync import frozen_pass, rsync
from gitlab_sync.config import Pairing, Paths, Peer, Tunables
from gitlab_sync.records import PassRecord
from gitlab_sync.sender import Sender
from gitlab_sync.watcher import Changes


@pytest.fixture
def sender(tmp_path: Path) -> Sender:
    paths = Paths(state=tmp_path / "state", source=tmp_path / "source", sync=tmp_path / "sync")
    pairing = Pairing("master", Peer("slave"), "ssh-ed25519 AAAA", running=True)
    found = Sender(paths, pairing, Tunables(), lambda _m: None)
    found.base = "20261201T000000.000000Z"  # a pass was committed
    found._slave_snapshots = True  # its hello said so
    return found


def _reason(sender: Sender, trigger: str = "change", window: Changes | None = None) -> str:
    record = PassRecord(id="p", trigger=trigger, started_at="")
    return frozen_pass._full_reason(sender, record, window)


def test_a_change_triggered_pass_with_a_known_window_sends_what_changed(sender: Sender) -> None:
    assert _reason(sender, window=Changes(paths=frozenset({b"a"}))) == ""
    assert _reason(sender, window=Changes()) == ""  # nothing to send: the base again


@pytest.mark.parametrize(
    ("trigger", "reason"),
    [
        ("timer", "the periodic full pass"),
        ("manual", "a pass run by hand"),
        ("final", "the final pass of a planned switchover"),
    ],
)
def test_timed_manual_and_final_passes_send_the_whole_tree(
    sender: Sender, trigger: str, reason: str
) -> None:
    assert _reason(sender, trigger, Changes()) == reason


def test_without_a_base_the_pass_is_full_and_says_why(sender: Sender) -> None:
    sender.base, sender.no_base = "", "the previous pass failed"
    assert _reason(sender, "timer", Changes()) == "the previous pass failed"


def test_an_unknown_or_doubtful_window_makes_a_full_pass(sender: Sender) -> None:
    assert _reason(sender, window=None) == (
        "the changes since the last pass are unknown (a marker was not seen)"
    )
    doubt = "the inotify event queue overflowed (fs.inotify.max_queued_events)"
    assert _reason(sender, window=Changes(doubt=doubt)) == doubt


def test_a_slave_without_btrfs_snapshots_takes_whole_trees(sender: Sender) -> None:
    sender._slave_snapshots = False
    assert _reason(sender, window=Changes()) == (
        "the slave's sync area is not on btrfs: it takes whole trees only"
    )


def test_the_receivers_refusal_of_the_base_is_read_from_its_line() -> None:
    line = (
        "gitlab-sync receiver: refused: base=20261201T000000.000000Z: the current snapshot "
        "is 20261201T000100.000000Z; send a full pass"
    )
    refused = rsync.result_for(1, "", f"{line}\nrsync error: (code 1) at main.c(1)\n")
    assert frozen_pass.refused_base(refused).startswith("refused: base=20261201T000000")
    other = rsync.result_for(11, "", "gitlab-sync receiver: the slave's sync area is full\n")
    assert frozen_pass.refused_base(other) == ""
