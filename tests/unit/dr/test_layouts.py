"""How ops judges the hosts' layouts: pair's refusal and notes, status's check, promotion's
restore (layouts read by the sidecar's own code from mountinfo lines; no hosts needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitlab_sync.layout import Layout, detect, parse_mountinfo
from ops.dr import layouts, sidecar
from ops.dr.pair import check_layouts
from ops.dr.promotion_steps import restore_mounts
from ops.errors import Refusal, SettingError, SidecarError
from ops.hosts.engine import ExecResult
from ops.hosts.ssh import Host
from tests.unit.dr.layout_cases import PROBLEM, SNAPSHOTS, WRONG
from tests.unit.dr.test_sidecar import (
    Answer,
    RestartableEngine,
    ScriptedEngine,
    daemon_answer,
    failed,
    ok,
)
from tests.unit.pairs import settings_of


def _layout(tmp_path: Path, fstype: str, options: str = "rw") -> Layout:
    """What the sidecar's detect() says of /source and /sync on one ``fstype`` filesystem
    mounted at ``tmp_path`` with ``options`` (plain folders: never subvolumes)."""
    root = tmp_path.resolve()
    for name in ("source", "sync"):
        (root / name).mkdir(exist_ok=True)
    line = f"47 27 0:40 / {root} rw,noatime - {fstype} /dev/loop0 {options}\n"
    return detect(root / "source", root / "sync", parse_mountinfo(line))


def test_pair_refuses_a_host_whose_btrfs_is_set_up_wrongly_naming_it_in_one_sentence(
    tmp_path: Path,
) -> None:
    wrong = _layout(tmp_path, "btrfs", "rw,space_cache=v2")
    assert wrong.problems, wrong
    refused = layouts.refusal({"master (admin@m:22)": SNAPSHOTS, "slave (admin@s:22)": wrong})
    assert refused is not None and "\n" not in refused
    assert refused.startswith("slave (admin@s:22): GITLAB_HOME is a plain directory on btrfs")
    assert "mounted without user_subvol_rm_allowed" in refused
    assert "master" not in refused
    assert refused.endswith("fix btrfs and run inv pair again (nothing was paired)")
    both = layouts.refusal({"master (m)": wrong, "slave (s)": wrong})
    assert both is not None and "master (m): " in both and "; slave (s): " in both


def test_pair_goes_on_with_a_host_without_btrfs_and_says_which(tmp_path: Path) -> None:
    ext4 = _layout(tmp_path, "ext4")
    assert (ext4.method, ext4.problems) == ("fallback", [])
    assert layouts.refusal({"master (m)": SNAPSHOTS, "slave (s)": ext4}) is None
    assert layouts.line("slave", ext4).startswith(
        "slave: the fallback: the data is on ext4, which has no cheap snapshots"
    )
    assert layouts.line("master", SNAPSHOTS).startswith("master: snapshots from one instant: ")
    (note,) = layouts.notes(SNAPSHOTS, ext4)
    assert note.startswith("the hosts differ: the pair runs the fallback on the slave only")
    (note,) = layouts.notes(ext4, SNAPSHOTS)
    assert "fallback on the master only (snapshots on the slave)" in note
    assert layouts.notes(ext4, ext4) == [
        "both hosts run the fallback: no snapshots from one instant, a copy at promotion"
    ]
    assert layouts.notes(SNAPSHOTS, SNAPSHOTS) == []


def test_the_sync_method_check_says_why_and_warns_of_a_wrong_btrfs(tmp_path: Path) -> None:
    good = layouts.method_check("master", SNAPSHOTS)
    assert good.ok and not good.critical
    assert good.detail == f"snapshots: {SNAPSHOTS.why}"
    ext4 = layouts.method_check("slave", _layout(tmp_path, "ext4"))
    assert ext4.ok and ext4.detail.startswith("fallback: the data is on ext4")
    wrong = layouts.method_check("slave", _layout(tmp_path, "btrfs"))
    assert not wrong.ok and not wrong.critical and not wrong.failed
    assert wrong.name == "slave sync method"
    assert wrong.detail.startswith("fallback: btrfs is set up wrongly: ")
    assert "user_subvol_rm_allowed" in wrong.hint
    unknown = layouts.method_check("slave", layouts.parsed({}))
    assert not unknown.ok and "older than snapshots" in unknown.detail


def test_a_layout_round_trips_through_its_json_and_none_is_unknown() -> None:
    assert layouts.parsed(SNAPSHOTS.to_json()) == SNAPSHOTS
    assert layouts.parsed(json.loads(json.dumps(SNAPSHOTS.to_json()))) == SNAPSHOTS
    assert layouts.parsed(None) is None
    assert layouts.parsed({"why": "no method"}) is None


# --- gitlab-sync layout, as the sidecar answers it ----------------------------------------------


def test_the_layout_verb_is_parsed_from_its_json() -> None:
    engine = ScriptedEngine([ok(json.dumps(SNAPSHOTS.to_json()))])
    assert sidecar.layout(engine) == SNAPSHOTS
    assert engine.execs == [["gitlab-rsync", "gitlab-sync", "layout", "--json"]]


def test_exit_1_of_the_layout_verb_is_a_layout_with_problems_not_a_failure(
    tmp_path: Path,
) -> None:
    wrong = _layout(tmp_path, "btrfs")
    said = "".join(f"gitlab-sync: error: {p}\n" for p in wrong.problems)
    from_stderr = sidecar.layout(ScriptedEngine([failed(1, said)]))
    assert from_stderr.problems == wrong.problems
    assert from_stderr.method == "fallback"
    both = ExecResult(1, json.dumps(wrong.to_json()).encode(), said.encode())
    assert sidecar.layout(ScriptedEngine([both])) == wrong


def test_a_sidecar_without_the_layout_verb_is_a_sidecar_error() -> None:
    old = failed(2, "gitlab-sync: error: argument COMMAND: invalid choice: 'layout'\n")
    with pytest.raises(SidecarError, match=r"gitlab-sync layout failed: argument COMMAND"):
        sidecar.layout(ScriptedEngine([old]))
    with pytest.raises(SidecarError, match="did not print a layout"):
        sidecar.layout(ScriptedEngine([ok("{}")]))


# --- promotion's restore ------------------------------------------------------------------------


def test_the_restore_mounts_the_folder_that_holds_gitlab_home() -> None:
    loaded = settings_of(GITLAB_HOME="/srv/data/gitlab/", SYNC_HOME="/srv/data/gitlab-sync")
    assert restore_mounts(loaded) == (
        {"/srv/data/gitlab-sync": "/sync", "/srv/data": "/homes"},
        "/homes/gitlab",
    )
    with pytest.raises(SettingError, match=r"GITLAB_HOME \(/gitlab\) must sit in a folder"):
        restore_mounts(settings_of(GITLAB_HOME="/gitlab"))


def test_the_restore_is_said_with_its_method_and_time() -> None:
    assert (
        layouts.restored({"snapshot": "S", "restore_method": "snapshot", "restore_seconds": 0.021})
        == "restored snapshot S by a writable btrfs snapshot in 0.02 s"
    )
    assert (
        layouts.restored({"snapshot": "S", "restore_method": "copy", "restore_seconds": 13.6})
        == "restored snapshot S by a copy in 13.60 s"
    )
    assert layouts.restored({"snapshot": "S"}) == "restored snapshot S by a copy in 0.00 s"
    finished = {"snapshot": "S", "registry_deletes_finished": ["g/app:v1", "g/app:v2"]}
    assert layouts.restored(finished) == (
        "restored snapshot S by a copy in 0.00 s (finished 2 registry tag delete(s) under way at "
        "its instant: g/app:v1, g/app:v2)"
    )
    assert layouts.restore_plan(SNAPSHOTS).startswith("GITLAB_HOME becomes a writable btrfs")
    assert layouts.restore_plan(None).endswith("(the sidecar does not say how)")


# --- inv pair's look at both hosts --------------------------------------------------------------


def _host(role: str, *layouts_seen: Layout) -> RestartableEngine:
    """A host whose sidecar answers ``layout`` with each of ``layouts_seen`` in turn (the ones
    with problems exit 1), its daemon restarting between them."""
    answers: list[Answer] = []
    for index, seen in enumerate(layouts_seen):
        if index:  # a restart: the daemon's start time before, then a new one
            answers += [
                daemon_answer(f"2026-11-25T12:0{index}:00Z"),
                daemon_answer(f"2026-11-25T12:0{index}:30Z"),
            ]
        answers.append(
            ExecResult(1 if seen.problems else 0, json.dumps(seen.to_json()).encode(), b"")
        )
    engine = RestartableEngine(answers)
    engine.host = Host(role, f"10.0.0.{len(role)}", 22, "admin")
    return engine


def test_pair_looks_again_after_restarting_a_sidecar_that_sees_btrfs_wrong() -> None:
    said: list[str] = []
    master, slave = _host("master", SNAPSHOTS), _host("slave", WRONG, SNAPSHOTS)
    assert check_layouts(master, slave, said.append) == (SNAPSHOTS, SNAPSHOTS)
    assert (master.sidecar.restarts, slave.sidecar.restarts) == ([], [30])
    assert (
        said[0]
        == f"{slave.host}: its sidecar sees btrfs set up wrongly; restarting it to look again"
    )
    assert said[1:] == [layouts.line("master", SNAPSHOTS), layouts.line("slave", SNAPSHOTS)]


def test_pair_refuses_when_the_restarted_sidecar_still_sees_btrfs_wrong() -> None:
    master, slave = _host("master", SNAPSHOTS), _host("slave", WRONG, WRONG)
    with pytest.raises(Refusal) as refused:
        check_layouts(master, slave, lambda _line: None)
    assert str(refused.value) == (
        f"{slave.host}: {PROBLEM}; fix btrfs and run inv pair again (nothing was paired)"
    )
