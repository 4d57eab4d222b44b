"""``inv snapshots`` and the choice of a snapshot by name or time (no AWS, no hosts)."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from ops.dr import snapshots
from ops.errors import Refusal, SidecarError
from tests.unit.dr.snapshot_lists import DAY, FIFTEEN, HALF_HOUR, NEWEST, RECORDED, listing
from tests.unit.pairs import NOW


def test_the_sidecars_list_is_read_newest_first_with_its_verifications() -> None:
    shuffled = copy.deepcopy(RECORDED)
    shuffled["snapshots"].reverse()
    found = listing(shuffled)
    assert [s.name for s in found.snapshots] == [NEWEST, FIFTEEN, HALF_HOUR, DAY]
    assert found.current == NEWEST and found.newest_verified == HALF_HOUR
    half = found.named(HALF_HOUR)
    assert half is not None and half.verified is not None and half.verified.ok
    assert half.bytes is None and half.instant == dt.datetime(2026, 11, 25, 11, 30, tzinfo=dt.UTC)
    assert found.to_json() == RECORDED


def test_a_list_that_is_not_the_sidecars_shape_is_an_error() -> None:
    with pytest.raises(SidecarError, match="did not print a list of snapshots"):
        snapshots.Listing.from_json({"current": None})
    broken = copy.deepcopy(RECORDED)
    del broken["snapshots"][1]["instant"]
    with pytest.raises(SidecarError, match="without a name or instant"):
        snapshots.Listing.from_json(broken)


def test_the_list_renders_one_line_a_snapshot_with_how_it_was_made_and_verified() -> None:
    lines = snapshots.render(listing())
    assert lines[0] == (
        f"4 snapshot(s) on the slave (snapshots); current {NEWEST}, newest verified {HALF_HOUR}"
    )
    rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in lines}
    assert rows[NEWEST].startswith(f"* {NEWEST}") and "30 s" in rows[NEWEST]
    assert "52.4 MB" in rows[NEWEST] and "one instant" in rows[NEWEST]
    assert rows[NEWEST].endswith(" no")
    assert rows[HALF_HOUR].endswith("ok at 2026-11-25T11:31:10.000000Z")
    assert "fallback" in rows[DAY] and "FAILED at" in rows[DAY] and "24.0 h" in rows[DAY]
    assert lines[-1].startswith("promote from one: inv promote-slave --snapshot NAME")


def test_an_empty_list_renders_one_line() -> None:
    empty = snapshots.Listing(None, None, "fallback", ())
    assert snapshots.render(empty) == [
        "0 snapshot(s) on the slave (fallback); current none, newest verified none"
    ]


def test_a_snapshot_is_chosen_by_its_name_and_says_what_it_loses() -> None:
    choice = snapshots.choose(listing(), HALF_HOUR, "", NOW)
    assert choice.snapshot.name == HALF_HOUR and choice.newest.name == NEWEST
    assert choice.lost_seconds == 1770.0
    assert choice.loss() == (
        f"snapshot {HALF_HOUR} (not the newest, {NEWEST}): the writes between "
        "2026-11-25T11:30:00.000000Z and 2026-11-25T11:59:30.000000Z, 1770 s, are not in it"
    )
    assert snapshots.Choice.from_json(choice.to_json()) == choice


def test_choosing_the_newest_by_name_loses_nothing_more() -> None:
    choice = snapshots.choose(listing(), NEWEST, "", NOW)
    assert choice.is_newest and choice.lost_seconds == 0.0
    assert "is the newest: nothing more lost" in choice.loss()


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("2026-11-25T11:45:00Z", FIFTEEN),  # exactly an instant: that one (<=)
        ("2026-11-25T11:44:59.999999Z", HALF_HOUR),
        ("2026-11-25T12:44:00+01:00", HALF_HOUR),  # 11:44 UTC
        ("2026-11-25 11:59:31+00:00", NEWEST),
        ("30m ago", HALF_HOUR),  # 11:30:00
        ("29m ago", HALF_HOUR),
        ("10m ago", FIFTEEN),
        ("2h ago", DAY),
        ("1d ago", DAY),
        ("90s ago", FIFTEEN),
        ("0s ago", NEWEST),
    ],
)
def test_before_picks_the_newest_snapshot_at_or_before_the_time(text: str, name: str) -> None:
    assert snapshots.choose(listing(), "", text, NOW).snapshot.name == name


def test_an_unknown_name_is_refused_in_one_line_naming_the_range() -> None:
    with pytest.raises(Refusal) as refused:
        snapshots.choose(listing(), "20261125T110000.000000Z", "", NOW)
    assert str(refused.value) == (
        "the slave has no snapshot 20261125T110000.000000Z (it keeps 4, from "
        f"{DAY} to {NEWEST}); inv snapshots lists them"
    )


def test_a_time_before_the_oldest_snapshot_is_refused() -> None:
    with pytest.raises(Refusal) as refused:
        snapshots.choose(listing(), "", "2d ago", NOW)
    assert str(refused.value) == (
        "--before 2d ago (2026-11-23T12:00:00.000000Z) is before the oldest snapshot, "
        f"{DAY} (2026-11-24T12:00:00.000000Z): the slave keeps nothing that old"
    )


def test_a_time_in_the_future_is_refused() -> None:
    with pytest.raises(Refusal, match=r"is in the future; now is 2026-11-25T12:00:00.000000Z"):
        snapshots.choose(listing(), "", "2026-11-25T12:00:01Z", NOW)


@pytest.mark.parametrize(
    "text", ["yesterday", "30 minutes ago", "30x ago", "ago", "2026-13-01T00:00:00Z", ""]
)
def test_a_malformed_time_is_refused_with_examples(text: str) -> None:
    with pytest.raises(Refusal) as refused:
        snapshots.parse_time(text, NOW)
    assert str(refused.value) == f"--before {text!r} is not a time: give {snapshots.EXAMPLES}"


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(Refusal, match="has no zone: add Z or"):
        snapshots.parse_time("2026-11-25T11:00:00", NOW)


def test_both_flags_or_no_snapshot_at_all_are_refused() -> None:
    with pytest.raises(Refusal, match="give --snapshot or --before, not both"):
        snapshots.choose(listing(), NEWEST, "30m ago", NOW)
    with pytest.raises(Refusal, match="no complete snapshot to choose from"):
        snapshots.choose(snapshots.Listing(None, None, "snapshots", ()), NEWEST, "", NOW)
