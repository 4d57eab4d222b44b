"""inv status in every state the pair can be in: checks, JSON and the exit code's verdict.

After a promotion (no slave yet, the old master fenced), with both instances stopped, with a
promotion half done, with the master missing: each is read as failed checks, never a crash.
"""

from __future__ import annotations

from typing import Any

from gitlab_sync.status import SidecarStatus
from ops.aws.inventory import PairState
from ops.dr import checks as pair_checks
from ops.dr.hostview import HostView, look
from ops.dr.status import StatusReport, checks, render
from ops.dr.topology import Absent, Side, survey
from ops.settings import Settings
from tests.unit.pairs import (
    NOW,
    SANDBOX,
    A,
    B,
    instance,
    master_view,
    pair,
    promoted,
    settings_of,
    slave_view,
    state_of,
    unreachable,
)

UNPAIRED = SidecarStatus(daemon_alive=True)
"""A sidecar after ``gitlab-sync rm``: the promoted slave's, until rebuild-slave."""


def _report(
    settings: Settings,
    state: PairState,
    master: HostView | None,
    slave: HostView | None,
    promotion: pair_checks.Unfinished | None = None,
) -> StatusReport:
    """What collect() gives, with the reachable hosts' views passed in (the absent ones are
    looked at for real: an Absent side is never connected to)."""
    found = survey(settings, state)
    seen_master = master or look(found.master)
    seen_slave = slave or look(found.slave)
    judged = checks(settings, state, seen_master, seen_slave, found.epoch, NOW, promotion)
    return StatusReport(state.to_dict(), (seen_master, seen_slave), judged)


def _by_name(report: StatusReport) -> dict[str, Any]:
    return {c.name: c for c in report.checks}


def test_after_a_promotion_there_is_no_slave_yet_and_the_old_master_is_listed_fenced() -> None:
    settings = settings_of(**SANDBOX)
    state = promoted(master=B, fenced=A)
    found = survey(settings, state)
    assert isinstance(found.master, Side) and found.master.instance_id == B
    assert isinstance(found.slave, Absent)
    assert found.slave.reason == (
        "SLAVE_HOST is not set and AWS has no running instance tagged Role=slave"
    )
    new_master = master_view(sync=UNPAIRED)
    report = _report(settings, state, new_master, None)
    by_name = _by_name(report)
    assert not report.ok
    assert by_name[f"fenced {A}"].ok
    assert by_name[f"fenced {A}"].detail == "old master, stopped, groups gitlab-slave"
    assert not by_name["slave host"].ok and by_name["slave host"].critical
    assert "inv rebuild-slave" in by_name["slave host"].hint
    assert not by_name["aws slave instance"].ok
    assert by_name["master host"].ok and by_name["master serving"].ok
    assert by_name["elastic ip"].ok
    text = "\n".join(render(report))
    assert f"  fenced  {A}" in text
    assert "slave -  MISSING: SLAVE_HOST is not set and AWS has no running instance" in text
    data = report.to_dict()
    assert data["ok"] is False
    assert data["hosts"][1] == {
        "role": "slave",
        "target": "",
        "error": "SLAVE_HOST is not set and AWS has no running instance tagged Role=slave",
        "services": [],
        "sync": None,
    }


def test_a_fenced_old_master_back_in_gitlab_open_is_a_critical_failure() -> None:
    state = state_of(
        instance(B, "master", ("gitlab-open",), epoch=2),
        instance(A, "fenced", ("gitlab-open",), epoch=2),
        holder=B,
    )
    report = _report(settings_of(**SANDBOX), state, master_view(), None)
    fenced = _by_name(report)[f"fenced {A}"]
    assert not fenced.ok and fenced.critical
    assert fenced.hint == "a fenced instance must not be in gitlab-open"


def test_with_both_instances_stopped_no_host_is_tried_and_each_is_a_failed_check() -> None:
    state = state_of(
        instance(A, "master", ("gitlab-open",), state="stopped"),
        instance(B, "slave", ("gitlab-slave",), state="stopped"),
        holder=A,
    )
    found = survey(settings_of(**SANDBOX), state)
    assert found.master == Absent("master", f"instance {A} is stopped")
    assert found.slave == Absent("slave", f"instance {B} is stopped")
    report = _report(settings_of(**SANDBOX), state, None, None)  # look() of an Absent: no SSH
    by_name = _by_name(report)
    for name in ("aws master instance", "aws slave instance", "master host", "slave host"):
        assert not by_name[name].ok, name
    assert by_name["master host"].detail == f"instance {A} is stopped"
    assert not report.ok


def test_a_stopped_instance_without_a_public_address_is_stopped_not_a_setting_error() -> None:
    bare = state_of(
        instance(A, "master", ("gitlab-open",)),
        instance(B, "slave", ("gitlab-slave",), state="stopped"),
    )
    hosts = tuple(
        h if h.instance_id == A else type(h)(**{**h.__dict__, "public_ip": None})
        for h in bare.hosts
    )
    state = PairState(bare.project, bare.region, hosts, (), bare.elastic_ips)
    assert survey(settings_of(), state).slave == Absent("slave", f"instance {B} is stopped")


def test_a_promotion_half_done_is_a_failed_check_that_says_how_to_finish_it() -> None:
    state = pair(master=A, slave=B, holder=A)  # killed after fence-master: tags not swapped
    fenced_master = master_view(
        services=tuple(s for s in master_view().services if s.service != "gitlab"),
    )
    report = _report(
        settings_of(**SANDBOX),
        state,
        fenced_master,
        slave_view(sync=UNPAIRED),
        promotion=pair_checks.Unfinished(
            "gitlab-dr-epoch1.json",
            "2026-11-25T11:58:00.000000Z",
            ("preflight", "freshness", "stop-master-sync", "fence-master"),
        ),
    )
    first = report.checks[0]
    assert (first.name, first.ok, first.critical) == ("promotion", False, True)
    assert first.detail == (
        "unfinished since 2026-11-25T11:58:00.000000Z (gitlab-dr-epoch1.json); "
        "steps done: preflight, freshness, stop-master-sync, fence-master"
    )
    assert first.hint == "inv promote-slave resumes it"
    assert not _by_name(report)["master serving"].ok
    assert not report.ok


def test_with_the_master_missing_its_checks_fail_and_the_slave_is_still_read() -> None:
    state = state_of(instance(B, "slave", ("gitlab-slave",)))
    found = survey(settings_of(**SANDBOX), state)
    assert isinstance(found.master, Absent) and isinstance(found.slave, Side)
    report = _report(settings_of(**SANDBOX), state, None, slave_view())
    by_name = _by_name(report)
    assert by_name["master host"].detail == (
        "MASTER_HOST is not set and AWS has no running instance tagged Role=master"
    )
    assert "inv promote-slave" in by_name["master host"].hint
    assert not by_name["master serving"].ok and not by_name["master sending"].ok
    assert by_name["slave receiving"].ok
    assert by_name["elastic ip"].detail == "held by nobody"
    assert not report.ok


def test_a_healthy_pair_with_aws_is_green() -> None:
    report = _report(settings_of(**SANDBOX), pair(A, B, holder=A), master_view(), slave_view())
    assert report.ok, [c for c in report.checks if not c.ok]


def test_an_unreachable_master_after_a_kill_fails_but_the_window_is_still_judged() -> None:
    report = _report(
        settings_of(**SANDBOX), pair(A, B, holder=A), unreachable("master"), slave_view()
    )
    by_name = _by_name(report)
    assert not by_name["master host"].ok
    assert by_name["last complete pass"].ok  # from the slave's own status
