"""Promotion's decisions, from an immutable view of the pair (no AWS, no hosts)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from gitlab_sync.layout import Layout
from ops import settings as settings_mod
from ops.aws.inventory import PairState
from ops.dr.journal import Journal
from ops.dr.promote import Flags, confirm_on_terminal, freshness_refusals, preflight_refusals
from ops.dr.promotion_steps import STEPS, plan_lines
from ops.errors import Refusal
from tests.unit.dr.layout_cases import SNAPSHOTS, WRONG
from tests.unit.pairs import (
    NOW,
    master_view,
    promotion_view,
    service,
    sidecar,
    slave_view,
    unreachable,
)

GOOD = promotion_view()


def test_a_healthy_fresh_slave_is_promoted_without_refusal() -> None:
    assert preflight_refusals(GOOD, Flags()) == []
    assert freshness_refusals(GOOD, Flags(), stale_after=900) == []


def test_promote_refuses_when_slave_has_no_complete_snapshot() -> None:
    view = promotion_view(snapshot_age=None)
    (reason,) = preflight_refusals(view, Flags(accept_data_loss=True))
    assert reason == "the slave has no complete snapshot; there is nothing to start GitLab from"


def test_promote_refuses_a_stale_snapshot_unless_data_loss_is_accepted() -> None:
    view = promotion_view(snapshot_age=1312)
    (reason,) = freshness_refusals(view, Flags(), stale_after=900)
    assert reason == (
        "the slave's newest snapshot is 1312 s old (STALE_AFTER is 900 s); "
        "pass --accept-data-loss to go on"
    )
    assert freshness_refusals(view, Flags(accept_data_loss=True), stale_after=900) == []


def test_a_planned_switchover_with_the_master_up_is_not_refused_for_staleness() -> None:
    view = promotion_view(master=master_view(), snapshot_age=7200)
    assert freshness_refusals(view, Flags(planned=True), stale_after=900) == []


def test_promote_refuses_when_images_differ() -> None:
    other = "gitlab/gitlab-ce:17.7.0-ce.0"
    view = promotion_view(slave=slave_view(services=(service("gitlab", "created", image=other),)))
    (reason,) = preflight_refusals(view, Flags())
    assert "the GitLab images differ" in reason and "--allow-image-mismatch" in reason
    assert preflight_refusals(view, Flags(allow_image_mismatch=True)) == []


def test_promote_refuses_when_secrets_are_missing_from_the_snapshot() -> None:
    view = promotion_view(slave=slave_view(sync=sidecar("slave", secrets_present=False)))
    (reason,) = preflight_refusals(view, Flags())
    assert reason.startswith("gitlab-secrets.json is missing") and "--accept-data-loss" in reason


def test_promote_refuses_an_unhealthy_or_unreachable_slave() -> None:
    sick = promotion_view(slave=slave_view(sync=sidecar("slave", daemon_alive=False)))
    (reason,) = preflight_refusals(sick, Flags())
    assert "not healthy" in reason and "--skip-health-check" in reason
    assert "the sidecar's daemon is not running" in reason
    gone = promotion_view(slave=unreachable("slave"))
    assert "does not answer" in preflight_refusals(gone, Flags(skip_health_check=True))[0]
    assert "connection refused" in preflight_refusals(gone, Flags())[0]


def test_a_slave_whose_sidecar_is_not_running_is_not_healthy() -> None:
    stopped = slave_view(
        services=(service("gitlab", "created"), service("gitlab-rsync", "exited")), sync=None
    )
    reasons = preflight_refusals(promotion_view(slave=stopped), Flags(accept_data_loss=True))
    assert reasons[0] == (
        "the slave is not healthy (the sidecar is not running (exited)); "
        "pass --skip-health-check to go on"
    )


def test_the_data_window_runs_from_the_snapshot_to_the_last_contact_with_a_dead_master() -> None:
    assert GOOD.window == 18.0
    alive = promotion_view(master=master_view())
    assert alive.window == 30.0


def test_the_journal_resumes_an_unfinished_promotion_and_reports_a_finished_one(
    tmp_path: Path,
) -> None:
    loaded = dataclasses.replace(
        settings_mod.load({}, env_file=Path("/nonexistent")), state_dir=str(tmp_path)
    )
    state = PairState("gitlab-dr", "eu-west-1", (), (), ())
    assert Journal.open_for(loaded, state) is None
    journal = Journal.new(
        loaded,
        epoch=GOOD.epoch,
        master=GOOD.master_id,
        slave=GOOD.slave_id,
        planned=False,
        started=NOW,
    )
    journal.record("preflight", 0.0, 1.5, {"slave": "ok"})
    again = Journal.open_for(loaded, state)
    assert again is not None and again.done("preflight") and not again.done("freshness")
    assert Journal.unfinished(loaded) is not None
    lines = plan_lines(GOOD, again, Flags())
    assert "done preflight" in lines[1] and len(lines) == 1 + len(STEPS)
    again.record("start-slave-gitlab", 2.0, 3.0, {"snapshot": "S", "restore_method": "snapshot"})
    (restored,) = [line for line in plan_lines(GOOD, again, Flags()) if "start-slave" in line]
    assert restored.endswith(
        "done start-slave-gitlab       restored snapshot S by a writable btrfs snapshot in 0.00 s; "
        "GitLab healthy"
    )
    again.data["done"] = True
    again.save()
    finished_state = PairState("gitlab-dr", "eu-west-1", (), (), ())
    assert Journal.open_for(loaded, finished_state) is None  # epoch 0 is not the journal's 4
    assert Journal.unfinished(loaded) is None


def test_the_plan_says_what_each_step_will_do_from_the_view() -> None:
    lines = plan_lines(GOOD, None, Flags())
    assert lines[0] == "promote slave i-slave to master (epoch 3 -> 4)"
    by_step = {line.split()[1]: line for line in lines[1:]}
    assert list(by_step) == list(STEPS)
    assert "gitlab-secrets.json present" in by_step["preflight"]
    assert "(30 s old); master last heard 2026-11-25T11:59:48.000000Z" in by_step["freshness"]
    assert "skipped: instance i-master is stopped" in by_step["stop-master-sync"]
    planned = plan_lines(promotion_view(master=master_view()), None, Flags(planned=True))
    assert "final pass with GitLab stopped" in planned[3]
    assert (
        "restore the newest snapshot into GITLAB_HOME (the sidecar does not say how)"
        in (by_step["start-slave-gitlab"])
    )


@pytest.mark.parametrize(
    ("layout", "restore", "restart"),
    [
        (SNAPSHOTS, "GITLAB_HOME becomes a writable btrfs snapshot of the newest snapshot", "to "),
        (
            WRONG,
            "copy the newest snapshot into GITLAB_HOME (the slave has no snapshots: ",
            "nothing",
        ),
    ],
    ids=["snapshots", "fallback"],
)
def test_the_plan_says_how_the_slave_will_restore_from_its_layout(
    layout: Layout, restore: str, restart: str
) -> None:
    slave = slave_view(sync=sidecar("slave", NOW, layout=layout.to_json()))
    by_step = {
        line.split()[1]: line for line in plan_lines(promotion_view(slave=slave), None, Flags())[1:]
    }
    assert restore in by_step["start-slave-gitlab"]
    assert restart in by_step["restart-sidecar"]


def test_a_snapshot_just_under_stale_after_is_fresh() -> None:
    view = promotion_view(snapshot_age=900)
    assert freshness_refusals(view, Flags(), stale_after=900) == []
    assert NOW - dt.timedelta(seconds=900) == view.snapshot_started


class _Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_confirmation_shows_the_plan_and_asks_only_on_a_terminal() -> None:
    shown = io.StringIO()
    assert confirm_on_terminal(True, shown, _Terminal(tty=False))(["1. preflight"])
    assert shown.getvalue() == "1. preflight\n"
    with pytest.raises(Refusal, match=r"^no terminal to confirm on; pass --yes$"):
        confirm_on_terminal(False, io.StringIO(), _Terminal(tty=False))(["plan"])
    asked: list[str] = []

    def answer(words: str) -> Callable[[str], str]:
        def ask(prompt: str) -> str:
            asked.append(prompt)
            return words

        return ask

    assert confirm_on_terminal(False, io.StringIO(), _Terminal(True), answer(" yes\n"))(["p"])
    assert not confirm_on_terminal(False, io.StringIO(), _Terminal(True), answer("y"))(["p"])
    assert asked == ["Promote the slave? Type yes: "] * 2
