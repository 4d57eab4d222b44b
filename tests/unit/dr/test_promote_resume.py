"""Start, resume or stop: the decision over a journal and the pair's state, and the report of
a promotion that was resumed (no AWS, no hosts)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from gitlab_sync.config import iso
from ops.dr.journal import Journal
from ops.dr.promote import decide
from ops.dr.promotion_report import report_of
from tests.unit.pairs import NOW, A, B, instance, pair, promoted, state_of


def _journal(done: bool = False, steps: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "from_epoch": 1,
        "to_epoch": 2,
        "master": A,
        "slave": B,
        "started_at": iso(NOW),
        "steps": steps or {},
        "done": done,
    }


def test_without_a_journal_the_tagged_slave_is_promoted() -> None:
    decision = decide(None, pair(master=A, slave=B, holder=A))
    assert decision.action == "start"
    assert (decision.master, decision.slave) == (pair(A, B).master, pair(A, B).slave)


def test_an_unfinished_promotion_resumes_with_its_own_instances_even_after_the_tags_swapped() -> (
    None
):
    # Killed after move-address-and-tags: B is tagged master now, A fenced; the journal says
    # B is the slave being promoted.
    decision = decide(_journal(steps={"preflight": {}, "freshness": {}}), promoted(B, A))
    assert decision.action == "resume"
    assert decision.slave is not None and decision.slave.instance_id == B
    assert decision.master is not None and decision.master.instance_id == A
    assert decision.reason == (
        f"resuming the promotion of {B} begun at {iso(NOW)} (2 of 9 steps done)"
    )


def test_a_finished_promotion_with_no_slave_since_is_already_promoted() -> None:
    decision = decide(_journal(done=True), promoted(B, A))
    assert decision.action == "already"
    assert decision.reason == f"already promoted: {B} is master at epoch 2; nothing to do"


def test_a_finished_promotion_and_a_new_slave_start_a_new_promotion() -> None:
    rebuilt = state_of(
        instance(B, "master", ("gitlab-open",), epoch=2),
        instance(A, "slave", ("gitlab-slave",), epoch=2),
    )
    decision = decide(_journal(done=True), rebuilt)
    assert decision.action == "start"
    assert decision.slave is not None and decision.slave.instance_id == A


def test_promote_refuses_without_a_slave_or_a_master() -> None:
    no_slave = decide(None, state_of(instance(A, "master", ("gitlab-open",))))
    assert no_slave.action == "refuse"
    assert no_slave.reason == "AWS has no instance tagged Role=slave: there is no slave to promote"
    no_master = decide(None, state_of(instance(B, "slave", ("gitlab-slave",))))
    assert no_master.action == "refuse"
    assert no_master.reason == "AWS has no instance tagged Role=master: check the tags (inv status)"
    gone = decide(_journal(), state_of(instance(A, "master")))
    assert gone.action == "refuse" and "no slave to promote" in gone.reason


def _at(seconds: float) -> str:
    return iso(NOW + dt.timedelta(seconds=seconds))


def test_the_rto_of_a_resumed_promotion_counts_from_its_first_start(tmp_path: Path) -> None:
    # First run: preflight and freshness, then killed; the operator comes back 5 minutes later
    # and the second run does the rest. The step seconds sum to 30 s; users waited 330 s.
    steps = {
        "preflight": {"seconds": 1.0, "ended_at": _at(1)},
        "freshness": {"seconds": 1.0, "ended_at": _at(2)},
        "stop-master-sync": {"seconds": 3.0, "ended_at": _at(305)},
        "fence-master": {"seconds": 2.0, "ended_at": _at(307)},
        "start-slave-gitlab": {
            "seconds": 18.0,
            "ended_at": _at(325),
            "snapshot": "S",
            "restore_method": "snapshot",
            "restore_seconds": 0.021,
        },
        "open-slave": {"seconds": 1.0, "ended_at": _at(326)},
        "move-address-and-tags": {"seconds": 4.0, "ended_at": _at(330), "ready_at": _at(330)},
    }
    journal = Journal(tmp_path / "gitlab-dr-epoch1.json", _journal(steps=steps))
    report = report_of(journal)
    assert report.rto_seconds == 330.0
    assert [name for name, _s, _d in report.steps] == list(steps)
    assert "RTO 330.0 s" in report.lines()[-4]
    assert report.lines()[-5] == "restored snapshot S by a writable btrfs snapshot in 0.02 s"
    assert report.to_dict()["restore"] == report.lines()[-5]


def test_there_is_no_rto_before_gitlab_answered_ready(tmp_path: Path) -> None:
    steps = {"preflight": {"seconds": 1.0, "ended_at": _at(1)}}
    assert report_of(Journal(tmp_path / "j.json", _journal(steps=steps))).rto_seconds is None
