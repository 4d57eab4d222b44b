"""Promotion's decisions, from an immutable view of the pair (no AWS, no hosts)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from ops import settings as settings_mod
from ops.aws.inventory import PairState
from ops.dr.promote import (
    STEPS,
    Flags,
    Journal,
    View,
    freshness_refusals,
    plan_lines,
    preflight_refusals,
)

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
IMAGE = "gitlab/gitlab-ce:17.8.1-ce.0"

GOOD = View(
    epoch=3,
    master_id="i-master",
    slave_id="i-slave",
    master_error="instance i-master is stopped",
    slave_error="",
    slave_sync={},
    slave_healthy=True,
    slave_health="sidecar alive",
    slave_image=IMAGE,
    master_image=None,
    wanted_image=IMAGE,
    secrets_present=True,
    snapshot="20261125T115930.000000Z",
    snapshot_started=NOW - dt.timedelta(seconds=30),
    last_contact=NOW - dt.timedelta(seconds=12),
    now=NOW,
)


def test_a_healthy_fresh_slave_is_promoted_without_refusal() -> None:
    assert preflight_refusals(GOOD, Flags()) == []
    assert freshness_refusals(GOOD, Flags(), stale_after=900) == []


def test_promote_refuses_when_slave_has_no_complete_snapshot() -> None:
    view = dataclasses.replace(GOOD, snapshot=None, snapshot_started=None)
    (reason,) = preflight_refusals(view, Flags(accept_data_loss=True))
    assert reason == "the slave has no complete snapshot; there is nothing to start GitLab from"


def test_promote_refuses_a_stale_snapshot_unless_data_loss_is_accepted() -> None:
    view = dataclasses.replace(GOOD, snapshot_started=NOW - dt.timedelta(seconds=1312))
    (reason,) = freshness_refusals(view, Flags(), stale_after=900)
    assert reason == (
        "the slave's newest snapshot is 1312 s old (STALE_AFTER is 900 s); "
        "pass --accept-data-loss to go on"
    )
    assert freshness_refusals(view, Flags(accept_data_loss=True), stale_after=900) == []


def test_a_planned_switchover_with_the_master_up_is_not_refused_for_staleness() -> None:
    view = dataclasses.replace(GOOD, master_error="", snapshot_started=NOW - dt.timedelta(hours=2))
    assert freshness_refusals(view, Flags(planned=True), stale_after=900) == []


def test_promote_refuses_when_images_differ() -> None:
    view = dataclasses.replace(GOOD, slave_image="gitlab/gitlab-ce:17.7.0-ce.0")
    (reason,) = preflight_refusals(view, Flags())
    assert "the GitLab images differ" in reason and "--allow-image-mismatch" in reason
    assert preflight_refusals(view, Flags(allow_image_mismatch=True)) == []


def test_promote_refuses_when_secrets_are_missing_from_the_snapshot() -> None:
    view = dataclasses.replace(GOOD, secrets_present=False)
    (reason,) = preflight_refusals(view, Flags())
    assert reason.startswith("gitlab-secrets.json is missing") and "--accept-data-loss" in reason


def test_promote_refuses_an_unhealthy_or_unreachable_slave() -> None:
    sick = dataclasses.replace(
        GOOD, slave_healthy=False, slave_health="the sidecar's daemon is not running"
    )
    (reason,) = preflight_refusals(sick, Flags())
    assert "not healthy" in reason and "--skip-health-check" in reason
    gone = dataclasses.replace(
        GOOD, slave_error="slave (admin@x:22): unreachable: connection refused"
    )
    assert "does not answer" in preflight_refusals(gone, Flags(skip_health_check=True))[0]


def test_the_data_window_runs_from_the_snapshot_to_the_last_contact_with_a_dead_master() -> None:
    assert GOOD.window == 18.0
    alive = dataclasses.replace(GOOD, master_error="")
    assert alive.window == 30.0


def test_the_journal_resumes_an_unfinished_promotion_and_reports_a_finished_one(
    tmp_path: Path,
) -> None:
    loaded = dataclasses.replace(
        settings_mod.load({}, env_file=Path("/nonexistent")), state_dir=str(tmp_path)
    )
    state = PairState("gitlab-dr", "eu-west-1", (), (), ())
    assert Journal.open_for(loaded, state) is None
    journal = Journal.new(loaded, GOOD, Flags(), NOW)
    journal.record("preflight", 0.0, 1.5, {"slave": "ok"})
    again = Journal.open_for(loaded, state)
    assert again is not None and again.done("preflight") and not again.done("freshness")
    lines = plan_lines(GOOD, again, Flags())
    assert "done preflight" in lines[1] and len(lines) == 1 + len(STEPS)
    again.data["done"] = True
    again.save()
    finished_state = PairState("gitlab-dr", "eu-west-1", (), (), ())
    assert Journal.open_for(loaded, finished_state) is None  # epoch 0 is not the journal's 4
