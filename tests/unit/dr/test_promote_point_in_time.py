"""Promotion from a chosen snapshot: the view's windows, the plan, the journal, the report and
a resumed promotion's choice (no AWS, no hosts)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any, cast

import pytest

from gitlab_sync.config import iso
from ops.dr.journal import Journal
from ops.dr.promote import CHOICE, choose_snapshot, kept_choice
from ops.dr.promotion_report import report_of
from ops.dr.promotion_steps import TABLE, freshness, plan_lines
from ops.dr.promotion_view import Flags
from ops.dr.snapshots import Choice, choose
from ops.errors import Refusal
from tests.unit.dr.snapshot_lists import FIFTEEN, HALF_HOUR, NEWEST, listing
from tests.unit.pairs import NOW, promotion_view, settings_of


def _choice(name: str = HALF_HOUR) -> Choice:
    return choose(listing(), name, "", NOW)


def _chosen_view(name: str = HALF_HOUR) -> Any:
    # The slave's newest snapshot began 30 s ago (as the recorded list's newest did); the
    # master was last heard 12 s ago.
    return promotion_view(choice=_choice(name))


def test_a_chosen_snapshot_is_what_gitlab_starts_from_and_its_window_includes_the_choice() -> None:
    plain, view = promotion_view(), _chosen_view()
    assert view.snapshot == HALF_HOUR and view.newest == plain.newest == "S"
    assert view.snapshot_started == dt.datetime(2026, 11, 25, 11, 30, tzinfo=dt.UTC)
    assert plain.window == 18.0  # newest's pass start (30 s ago) to the last contact (12 s ago)
    assert view.choice_window == 1770.0  # 11:30:00 to the newest's 11:59:30
    assert view.window == 1788.0  # the two: from the chosen instant to the last contact
    assert view.until == plain.until  # the master's last contact: the choice does not move it


def test_the_freshness_step_records_the_choice_beside_the_window() -> None:
    detail = freshness(cast(Any, None), cast(Any, None), _chosen_view())
    assert detail["snapshot"] == HALF_HOUR
    assert detail["snapshot_started_at"] == "2026-11-25T11:30:00.000000Z"
    assert detail["newest"] == NEWEST and detail["chosen"] == f"--snapshot {HALF_HOUR}"
    assert detail["choice_lost_seconds"] == 1770.0 and detail["window_seconds"] == 1788.0
    assert "newest" not in freshness(cast(Any, None), cast(Any, None), promotion_view())


def test_the_plan_says_what_the_choice_loses_and_whether_it_was_verified() -> None:
    lines = plan_lines(_chosen_view(), None, Flags(snapshot=HALF_HOUR))
    (fresh,) = [line for line in lines if " freshness " in line]
    assert f"start from snapshot {HALF_HOUR} (not the newest, {NEWEST})" in fresh
    assert "1770 s, are not in it" in fresh
    assert f"{HALF_HOUR} is 30 min old, verified at 2026-11-25T11:31:10.000000Z: ok" in fresh
    assert "writes lost in all: 1788 s" in fresh
    unverified = plan_lines(_chosen_view(FIFTEEN), None, Flags(snapshot=FIFTEEN))
    assert "never verified" in next(line for line in unverified if " freshness " in line)
    plain = plan_lines(promotion_view(), None, Flags())
    assert "newest snapshot S (30 s old)" in next(line for line in plain if " freshness " in line)


def _journal(tmp_path: Path, choice: Choice | None) -> Journal:
    settings = dataclasses.replace(settings_of(), state_dir=str(tmp_path))
    journal = Journal.new(settings, epoch=1, master="i-m", slave="i-s", planned=False, started=NOW)
    if choice is not None:
        journal.data[CHOICE] = choice.to_json()
    started = NOW + dt.timedelta(seconds=5)
    journal.record("preflight", 0.0, 1.0, {}, at=started)
    view = promotion_view(choice=choice)
    journal.record("freshness", 1.0, 1.1, TABLE[1].run(cast(Any, None), journal, view), at=started)
    restored = {
        "snapshot": choice.snapshot.name if choice else "S",
        "snapshot_started_at": iso(view.snapshot_started) if view.snapshot_started else None,
        "restore_method": "snapshot",
        "restore_seconds": 0.02,
    }
    journal.record("start-slave-gitlab", 2.0, 3.0, restored, at=started)
    return journal


def test_the_report_says_what_the_choice_lost_and_whether_it_was_verified(tmp_path: Path) -> None:
    report = report_of(_journal(tmp_path, _choice()))
    assert report.choice == (
        f"promoted from snapshot {HALF_HOUR} (not the newest, {NEWEST}): the writes between "
        "2026-11-25T11:30:00.000000Z and 2026-11-25T11:59:30.000000Z, 1770 s, are not in it; "
        f"{HALF_HOUR} was verified at 2026-11-25T11:31:10.000000Z: ok (3 checks passed)"
    )
    assert report.choice in report.lines() and report.rpo_seconds == 1788.0
    assert report.to_dict()["choice"] == report.choice
    unverified = report_of(_journal(tmp_path / "b", _choice(FIFTEEN)))
    assert unverified.choice is not None and unverified.choice.endswith(
        f"; {FIFTEEN} was never verified"
    )
    assert report_of(_journal(tmp_path / "c", None)).choice is None


def test_a_resumed_promotion_keeps_the_snapshot_its_journal_recorded() -> None:
    recorded = _choice().to_json()
    assert kept_choice(recorded, None) == _choice()
    assert kept_choice(recorded, _choice()) == _choice()
    assert kept_choice(None, None) is None


def test_a_resumed_promotion_refuses_a_different_snapshot_in_one_line() -> None:
    with pytest.raises(Refusal) as other:
        kept_choice(_choice().to_json(), _choice(FIFTEEN))
    assert str(other.value) == (
        f"the promotion under way starts from snapshot {HALF_HOUR}, not {FIFTEEN}; run it "
        f"again without --snapshot/--before, or with --snapshot {HALF_HOUR}"
    )
    with pytest.raises(Refusal) as newest:
        kept_choice(None, _choice())
    assert str(newest.value) == (
        f"the promotion under way starts from the newest snapshot, not {HALF_HOUR}; "
        "run it again without --snapshot/--before"
    )


def test_without_a_flag_no_list_is_read_and_a_resume_with_the_same_name_reads_none(
    tmp_path: Path,
) -> None:
    # The slave's "instance" is None: reading its list would fail. Neither case reads it.
    settings = settings_of()
    slave = cast(Any, None)
    assert choose_snapshot(settings, Flags(), None, slave, NOW) is None
    journal = _journal(tmp_path, _choice())
    kept = choose_snapshot(settings, Flags(snapshot=HALF_HOUR), journal, slave, NOW)
    assert kept == _choice()
    assert choose_snapshot(settings, Flags(), journal, slave, NOW) == _choice()
