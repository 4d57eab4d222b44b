"""Passes that cost what changed, on a real pair whose hosts keep their data on btrfs.

Each pass freezes the master's tree; a change pass sends only the paths the watcher saw change
since the previous pass's snapshot, into a writable snapshot of the slave's current. Whatever a
change pass is given (deletions, renames of files and directories, odd names), the slave's copy
must equal the master's tree; and whenever the change list cannot be trusted, or the slave is
not where the list starts, the pass sends the whole tree instead.
"""

from __future__ import annotations

import re

import pytest

from gitlab_sync.manifest import differences
from tests.integration.sidecar import trees
from tests.integration.sidecar.sync_pair import Pair, sync_pair, wait_for

pytestmark = pytest.mark.integration

# The daemon's line for each pass (sender._summary).
_PASS = re.compile(
    r"gitlab-sync: pass (\S+) \((\w+)\) (\w+) in [\d.]+ s(?:, (full|change))?(?: \((.*?)\))?[,:]"
)


def _passes(pair: Pair) -> list[dict[str, str]]:
    """Every pass the master's daemon logged, in order: id, trigger, outcome, kind, reason."""
    found = []
    for line in pair.master.logs().splitlines():
        match = _PASS.search(line)
        if match:
            keys = ("id", "trigger", "outcome", "kind", "reason")
            found.append(dict(zip(keys, (g or "" for g in match.groups()), strict=True)))
            found[-1]["line"] = line  # what an assertion shows
    return found


def _show(passes: list[dict[str, str]]) -> str:
    return "\n".join(p["line"] for p in passes)


def _after(pair: Pair, before: int) -> list[dict[str, str]]:
    return _passes(pair)[before:]


def _assert_same(pair: Pair) -> None:
    master, slave = pair.master.manifest("/source"), pair.slave.manifest("/sync/current")
    # A frozen pass leaves out PostgreSQL's pid file and socket; these trees have neither.
    assert master == slave, differences(master, slave)


def _settled(pair: Pair) -> int:
    """Wait until the slave equals the master and the master is still; passes logged so far."""
    pair.wait_in_sync(timeout=60)
    pair.wait_idle()
    return len(_passes(pair))


def test_deletions_renames_and_odd_names_reach_the_slave_by_change_passes() -> None:
    with sync_pair(fs="btrfs") as pair:
        pair.writer.python(trees.EVERY_KIND)
        before = _settled(pair)
        pair.writer.python(
            "import os, shutil\n"
            "d = b'/source/data'\n"
            "os.remove(d + b'/name with spaces')\n"
            "shutil.rmtree(d + b'/empty')\n"
            "os.rename(d + b'/-leading-dash', d + b'/renamed')\n"
            "os.rename(d + b'/name\\nwith\\nnewlines', d + b'/still\\nnew lines \\xfe')\n"
            "os.remove(d + b'/not-utf8-\\xff\\xfe\\xc3')\n"
            "os.rename(d + b'/git-data', d + b'/git-data-moved')\n"
            "os.makedirs(d + b'/made/deep \\xff/er')\n"
            "open(d + b'/made/deep \\xff/er/f\\nx', 'wb').write(b'new')\n"
            "os.chmod(b'/source/config/gitlab.rb', 0o600)\n"
            "os.symlink(b'made', d + b'/link-to-made')\n"
        )
        pair.wait_in_sync(timeout=15)
        pair.wait_idle()
        passes = _after(pair, before)
        assert passes and all(p["kind"] == "change" and p["outcome"] == "ok" for p in passes), (
            _show(passes)
        )
        last = pair.master.status()["last_complete"]
        assert last["kind"] == "change" and last["postgresql"] == "none"
        _assert_same(pair)
        # A directory renamed back and a tree removed: gone from the slave too.
        before = len(_passes(pair))
        pair.writer.python(
            "import os, shutil\n"
            "os.rename(b'/source/data/git-data-moved', b'/source/data/git-data')\n"
            "shutil.rmtree(b'/source/data/made')\n"
        )
        pair.wait_in_sync(timeout=15)
        pair.wait_idle()
        assert {p["kind"] for p in _after(pair, before)} == {"change"}
        _assert_same(pair)


def test_a_change_list_overflowing_its_limit_falls_back_to_a_full_pass() -> None:
    with sync_pair(master_env={"SYNC_MAX_CHANGES": "50"}, fs="btrfs") as pair:
        pair.writer.python(trees.files(5, 100))
        before = _settled(pair)
        pair.writer.python(trees.files(500, 100, folder="data/burst"))
        pair.wait_in_sync(timeout=30)
        pair.wait_idle()
        reasons = [p["reason"] for p in _after(pair, before) if p["kind"] == "full"]
        assert "more than 50 paths changed between two passes" in reasons
        _assert_same(pair)
        before = len(_passes(pair))
        pair.writer.python(trees.files(3, 100, folder="data/small"))
        pair.wait_in_sync(timeout=15)
        pair.wait_idle()
        assert {p["kind"] for p in _after(pair, before)} == {"change"}


def test_a_hard_linked_file_changed_is_sent_by_a_full_pass() -> None:
    with sync_pair(fs="btrfs") as pair:
        pair.writer.python(trees.EVERY_KIND)
        before = _settled(pair)
        pair.writer.python("import os\nos.chown('/source/data/big.pack', 1000, 1000)\n")
        pair.wait_in_sync(timeout=15)
        pair.wait_idle()
        reasons = {p["reason"] for p in _after(pair, before)}
        assert "a hard-linked file changed ('data/big.pack')" in reasons
        _assert_same(pair)


def test_a_failed_pass_and_a_killed_master_are_followed_by_full_passes() -> None:
    with sync_pair(fs="btrfs") as pair:
        pair.writer.python(trees.files(5, 100))
        before = _settled(pair)
        # The slave forgets its pairing for a moment: its receiver stops, a pass fails.
        pair.slave.run(["mv", "/state/pairing.json", "/state/pairing.json.aside"])
        pair.writer.python(trees.files(2, 100, folder="data/during"))
        wait_for(
            lambda: any(p["outcome"] == "failed" for p in _after(pair, before)),
            30,
            "a pass to fail",
        )
        pair.slave.run(["mv", "/state/pairing.json.aside", "/state/pairing.json"])
        pair.wait_in_sync(timeout=90)
        pair.wait_idle()
        passes = _after(pair, before)
        first_ok = next(p for p in passes if p["outcome"] == "ok")
        assert first_ok["kind"] == "full" and first_ok["reason"] == "the previous pass failed"
        _assert_same(pair)

        # Killed in the middle of a pass (slowed down: 1 MB at 100 KiB/s), then started again.
        before = len(_passes(pair))
        pair.master.sync("stop")
        pair.writer.python(
            "open('/source/data/slow.bin', 'wb').write(__import__('os').urandom(1 << 20))"
        )
        pair.master.run(
            ["sh", "-c", "SYNC_BWLIMIT=100 gitlab-sync pass >/dev/null 2>&1 &"], check=True
        )
        frozen = wait_for(
            lambda: pair.master.run(["ls", "/sync/.frozen"]).split(), 30, "a frozen copy"
        )
        pair.master.container.kill(signal="SIGKILL")
        pair.master.container.start()
        wait_for(
            lambda: pair.master.sync("health", check=False).strip() == "healthy", 30, "the master"
        )
        pair.master.sync("start")
        pair.wait_in_sync(timeout=60)
        logs = pair.master.logs()
        assert all(f"deleted {name}, left in /sync/.frozen" in logs for name in frozen), logs[
            -2000:
        ]
        assert [
            n for n in pair.master.run(["ls", "-A", "/sync/.frozen"]).split() if n in frozen
        ] == []
        after = [p for p in _after(pair, before) if p["outcome"] == "ok"]
        assert after[0]["kind"] == "full", after
        _assert_same(pair)


def test_a_slave_whose_current_is_not_the_base_gets_a_full_pass() -> None:
    with sync_pair(fs="btrfs") as pair:
        pair.writer.python(trees.files(5, 100))
        before = _settled(pair)
        # A pass run by hand, beside the daemon: the slave's current is now its snapshot,
        # not the one the daemon's next change pass builds on.
        pair.master.sync("pass")
        pair.writer.python(trees.files(2, 100, folder="data/after"))
        pair.wait_in_sync(timeout=30)
        pair.wait_idle()
        daemon = [p for p in _after(pair, before) if p["trigger"] == "change"]
        assert daemon[0]["kind"] == "full" and "base=" in daemon[0]["reason"], daemon
        _assert_same(pair)
