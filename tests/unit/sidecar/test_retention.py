"""Retention by tiers, the snapshot list and the verified mark, with a fake clock.

The tier decision (:func:`gitlab_sync.retention.to_prune`) is run as ``Area.commit`` runs it:
after every pass, on what the previous passes left. What remains is checked against instants
worked out by hand, tier by tier, and against one decision on every pass ever made.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from gitlab_sync import cli, cli_data
from gitlab_sync.config import SyncError
from gitlab_sync.retention import NAME_FORMAT, Tiers, cutoff, to_prune
from gitlab_sync.snapshots import Area, snapshot_name
from gitlab_sync.status import SidecarStatus

SECOND = dt.timedelta(seconds=1)
LAG = dt.timedelta(seconds=0.2)  # from a pass's instant to its commit, when retention runs
DAY0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)  # a Monday, 00:00 UTC


def _passes(start: dt.datetime, count: int, every: dt.timedelta, tiers: Tiers) -> list[str]:
    """Names left after ``count`` passes ``every`` apart, pruned after each (the last commit
    at the last pass + LAG)."""
    kept: dict[str, None] = {}  # insertion order is time order
    at = start
    for _ in range(count):
        kept[snapshot_name(at)] = None
        for gone in to_prune(list(kept), at + LAG, tiers):
            del kept[gone]
        at += every
    return list(kept)


def _at(*offsets: float, start: dt.datetime = DAY0) -> set[str]:
    return {snapshot_name(start + dt.timedelta(seconds=s)) for s in offsets}


def test_a_day_of_a_pass_a_second_keeps_the_default_tiers_and_no_more() -> None:
    began = time.process_time()
    kept = _passes(DAY0, 86_400, SECOND, Tiers())
    seconds = time.process_time() - began
    # The last pass is 23:59:59, pruned at +0.2 s: every snapshot of the last 15 minutes,
    # the :59 second of each minute from 22:00 to 23:44, the 59:59 of each hour 00 to 21.
    every = _at(*range(86_400 - 900, 86_400))
    minutely = _at(*(m * 60 + 59 for m in range(22 * 60, 23 * 60 + 45)))
    hourly = _at(*(h * 3600 + 3599 for h in range(22)))
    assert (len(every), len(minutely), len(hourly)) == (900, 105, 22)
    assert set(kept) == every | minutely | hourly, sorted(set(kept) ^ (every | minutely | hourly))
    assert len(kept) == 1027
    # Pruning at each pass leaves what one decision over all 86,400 would.
    every_pass = [snapshot_name(DAY0 + s * SECOND) for s in range(86_400)]
    last = DAY0 + 86_399 * SECOND + LAG
    assert set(every_pass) - set(to_prune(every_pass, last, Tiers())) == set(kept)
    print(f"a day of passes every second: {len(kept)} kept, {seconds:.2f} s of CPU")


def test_four_days_keep_the_newest_of_each_utc_day_within_the_daily_span() -> None:
    tiers = Tiers(every=120, minutely=600, hourly=3 * 3600, daily=3 * 86400)
    start = DAY0 - dt.timedelta(hours=18)  # Sunday 06:00: the days do not start with the run
    count = 4 * 8640  # a pass every 10 s for four days: the last is Thursday 05:59:50
    kept = set(_passes(start, count, dt.timedelta(seconds=10), tiers))
    thursday = DAY0 + dt.timedelta(days=3)
    every = _at(*range(5 * 3600 + 58 * 60, 6 * 3600, 10), start=thursday)  # 05:58:00-05:59:50
    minutely = _at(*(5 * 3600 + m * 60 + 50 for m in range(50, 58)), start=thursday)
    hourly = _at(3 * 3600 + 3590, 4 * 3600 + 3590, start=thursday)  # 03:59:50 and 04:59:50
    daily = _at(*(d * 86400 + 86390 for d in range(3)))  # Monday to Wednesday, 23:59:50
    assert (len(every), len(minutely), len(hourly), len(daily)) == (12, 8, 2, 3)
    assert kept == every | minutely | hourly | daily, sorted(kept ^ (every | minutely | hourly))


def test_the_newest_is_kept_whatever_its_age_and_tiers_of_zero_keep_nothing_else() -> None:
    names = sorted(_at(0, 60, 3600))
    later = DAY0 + dt.timedelta(days=30)
    assert to_prune(names, later, Tiers()) == names[:2]
    assert to_prune(names, DAY0 + dt.timedelta(hours=1), Tiers(0, 0, 0, 0)) == names[:2]
    assert to_prune(names[::-1], later, Tiers()) == names[:2]  # in any order
    assert to_prune([], later, Tiers()) == []


def test_the_newest_verified_is_kept_until_a_newer_one_is_verified() -> None:
    names = sorted(_at(0, 3600, 7200, 86400 * 20))
    later = DAY0 + dt.timedelta(days=20, seconds=1)
    assert to_prune(names, later, Tiers(), protected=[names[1]]) == [names[0], names[2]]
    assert to_prune(names, later, Tiers(), protected=[names[2]]) == names[:2]


def test_the_cap_prunes_the_oldest_first_but_never_the_protected() -> None:
    names = sorted(_at(*range(10)))
    now = DAY0 + dt.timedelta(seconds=10)
    assert to_prune(names, now, Tiers(most=3)) == names[:7]
    assert to_prune(names, now, Tiers(most=3), protected=[names[0]]) == names[1:8]
    assert to_prune(names, now, Tiers(most=0)) == []  # 0: no cap


def test_cutoffs_are_names_and_a_span_past_any_date_keeps_everything() -> None:
    moment = dt.datetime(2026, 11, 25, 1, 2, 3, 456789, tzinfo=dt.UTC)
    assert cutoff(moment, 3600) == (moment - dt.timedelta(hours=1)).strftime(NAME_FORMAT)
    assert cutoff(moment, 0) == snapshot_name(moment)
    zone = dt.timezone(dt.timedelta(hours=2))
    assert cutoff(moment.astimezone(zone), 60) == snapshot_name(moment - dt.timedelta(minutes=1))
    assert cutoff(moment, 1e15) == "" and cutoff(moment, 3e11) == ""
    names = sorted(_at(0, 1))
    assert to_prune(names, moment, Tiers(every=1e15)) == []


# The area: commits on a plain folder (the fallback), with the area's clock faked.


class Clock:
    def __init__(self, start: dt.datetime) -> None:
        self.moment = start

    def __call__(self) -> dt.datetime:
        return self.moment


def _commit(area: Area, clock: Clock, at: dt.datetime, tiers: Tiers, **extra: Any) -> str:
    pass_id = f"p{int(at.timestamp())}"
    area.begin(pass_id, 1, at)
    (area.incoming / "file").write_text(at.isoformat())
    area.mark(pass_id, "received")
    clock.moment = at + LAG
    return str(area.commit(pass_id, tiers, extra=dict(extra))["snapshot"])


@pytest.fixture
def area(tmp_path: Path) -> tuple[Area, Clock]:
    clock = Clock(DAY0)
    return Area(tmp_path / "sync", clock=clock), clock


OK = {"ok": True, "checks": [{"name": "clone", "ok": True}], "summary": "2 of 2 checks passed"}


def test_commits_prune_folders_by_the_tiers_and_keep_the_newest_verified(
    area: tuple[Area, Clock],
) -> None:
    sync, clock = area
    tiers = Tiers(every=300, minutely=1200, hourly=7200, daily=0)
    step = dt.timedelta(seconds=30)
    first = _commit(sync, clock, DAY0, tiers)
    sync.mark_verified(first, OK)
    for i in range(1, 240):  # two hours of a pass every 30 s
        _commit(sync, clock, DAY0 + i * step, tiers)
    # The last pass is 01:59:30: every one since 01:55 (10), the :30 of each minute from 01:40
    # to 01:54 (15), the newest of hour 00, 00:59:30 (1); and the first, verified.
    every = _at(*range(6900, 7200, 30))
    minutely = _at(*(m * 60 + 30 for m in range(100, 115)))
    expected = every | minutely | _at(3570) | {first}
    assert (len(every), len(minutely), len(expected)) == (10, 15, 27)
    assert set(sync.names()) == expected, sorted(set(sync.names()) ^ expected)
    assert sorted(p.name for p in sync.snapshots.glob("*.json")) == sorted(
        f"{n}.json" for n in expected
    )
    assert sync.empty_trash() == 240 - len(expected)
    # A newer snapshot verified: the first is no longer kept, at the next commit.
    assert sync.mark_verified(max(minutely), OK)["ok"] is True
    assert sync.newest_verified() == {"name": max(minutely), "at": "2026-11-23T01:59:30.200000Z"}
    _commit(sync, clock, DAY0 + 240 * step, tiers)
    assert first not in sync.names() and max(minutely) in sync.names()


def test_the_listing_says_instant_age_size_how_made_and_verified(
    area: tuple[Area, Clock],
) -> None:
    sync, clock = area
    tiers = Tiers(every=1e9)
    full = _commit(sync, clock, DAY0, tiers, bytes=4096, files=3)
    sync.begin("p-changes", 1, DAY0 + SECOND, changes_from=full)
    sync.mark("p-changes", "received")
    clock.moment = DAY0 + 2 * SECOND
    changed = sync.commit("p-changes", tiers, {"bytes": 10}, instant=DAY0 + 0.5 * SECOND)
    assert changed["snapshot"] == snapshot_name(DAY0 + 0.5 * SECOND)
    clock.moment = DAY0 + 10 * SECOND
    sync.mark_verified(full, {"ok": False, "checks": ["db"], "summary": "PostgreSQL did not start"})
    listed = cli_data.listing(sync)
    assert listed["current"] == changed["snapshot"] and listed["newest_verified"] is None
    assert listed["method"] == "fallback"
    newest, oldest = listed["snapshots"]
    assert newest == {
        "name": changed["snapshot"],
        "instant": "2026-11-23T00:00:00.500000Z",
        "age_seconds": 9.5,
        "bytes": None,  # a pass of what changed: its bytes are not the tree's
        "method": "snapshots",  # the master sent the instant it froze: one instant
        "current": True,
        "verified": None,
    }
    assert oldest["bytes"] == 4096 and oldest["method"] == "fallback" and not oldest["current"]
    assert oldest["verified"] == {
        "at": "2026-11-23T00:00:10.000000Z",
        "ok": False,
        "checks": ["db"],
        "summary": "PostgreSQL did not start",
    }
    sync.mark_verified(full, OK)
    assert cli_data.listing(sync)["newest_verified"] == full
    assert sync.summary()["newest_verified"] == {"name": full, "at": "2026-11-23T00:00:10.000000Z"}
    sync.mark_verified(full, {"ok": False, "checks": [], "summary": "broken since"})
    assert sync.newest_verified() is None and not sync.verified_pointer.exists()


@pytest.mark.parametrize(
    ("name", "result", "words"),
    [
        ("20990101T000000.000000Z", OK, "no complete snapshot '20990101T000000.000000Z'"),
        ("../etc", OK, "no complete snapshot '../etc'"),
        (None, [True], "a verification result is a JSON object"),
        (None, {"ok": "yes", "checks": [], "summary": ""}, 'needs "ok" (true or false)'),
        (None, {"ok": True, "summary": "fine"}, '"checks" (a list)'),
    ],
)
def test_mark_verified_refuses_unknown_names_and_malformed_results_in_one_line(
    area: tuple[Area, Clock], name: str | None, result: object, words: str
) -> None:
    sync, clock = area
    made = _commit(sync, clock, DAY0, Tiers())
    before = sync.meta(made)
    with pytest.raises(SyncError) as error:
        sync.mark_verified(name or made, result)
    assert words in str(error.value) and "\n" not in str(error.value)
    assert sync.meta(made) == before


def test_mark_verified_waits_for_the_area_lock_and_gives_up_in_one_line(
    area: tuple[Area, Clock],
) -> None:
    sync, clock = area
    made = _commit(sync, clock, DAY0, Tiers())
    with sync.locked(), pytest.raises(SyncError, match="another pass is being received"):
        sync.mark_verified(made, OK, wait=0.3)
    assert "verified" not in sync.meta(made)


def test_the_snapshots_and_mark_verified_verbs(
    area: tuple[Area, Clock],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sync, clock = area
    names = [_commit(sync, clock, DAY0 + i * 90 * SECOND, Tiers(), bytes=5 << 20) for i in range(3)]
    monkeypatch.setenv("GITLAB_SYNC_AREA", str(sync.root))
    monkeypatch.setenv("GITLAB_SYNC_STATE", str(sync.root.parent / "state"))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(OK)))
    assert cli.main(["mark-verified", names[1], "--result", "-", "--json"]) == 0
    marked = json.loads(capsys.readouterr().out)
    assert marked["name"] == names[1] and marked["verified"]["summary"] == OK["summary"]
    assert cli.main(["snapshots", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in listed["snapshots"]] == names[::-1]  # newest first
    assert listed["newest_verified"] == names[1]
    assert set(listed) == {"current", "newest_verified", "method", "snapshots"}
    assert cli.main(["snapshots"]) == 0
    table = capsys.readouterr().out
    assert f"newest verified: {names[1]}" in table and "5.0 MiB" in table
    assert (
        "<- current" in table.splitlines()[4] and f" ok {marked['verified']['at'][:10]} " in table
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("not json"))
    assert cli.main(["mark-verified", names[0], "--result", "-"]) == 1
    assert capsys.readouterr().err == (
        "gitlab-sync: error: refused: the verification result is not JSON\n"
    )


def test_the_text_table_reads_ages_and_sizes_at_a_glance() -> None:
    assert [cli_data._age(s) for s in (4.2, 61, 3 * 3600 + 5 * 60, 9 * 86400 + 3600)] == [
        "4s",
        "1m01s",
        "3h05m",
        "9d01h",
    ]
    assert [cli_data._size(b) for b in (None, 512, 1536, 3 << 30)] == [
        "-",
        "512 B",
        "1.5 KiB",
        "3.0 GiB",
    ]


def test_status_carries_the_newest_verified() -> None:
    verified = {"name": "20261123T000000.000000Z", "at": "2026-11-23T01:00:00.000000Z"}
    parsed = SidecarStatus.from_json({"role": "slave", "newest_verified": verified})
    assert parsed.newest_verified == verified
    assert parsed.to_json()["newest_verified"] == verified
    assert SidecarStatus.from_json({"role": "slave"}).newest_verified is None
