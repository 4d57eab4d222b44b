"""The gitlab-rsync sidecar as a real master/slave pair: real rsync, real OpenSSH, real Docker.

What the slave's sync area does (fidelity, changes, a pass cut short, a full disk, retention)
runs on both paths (``fs``): btrfs in loop files laid out as the AMI does (snapshots), and
Docker volumes on the machine's own filesystem (the fallback). What is decided before a pass
reaches the area (bad input, keys, epochs, an unreachable slave, restarts, secrets) runs on the
fallback only: the same code on either path. A slave whose current is not a change pass's base
is test_change_passes.py's.
"""

from __future__ import annotations

import json
from typing import Any

import docker
import pytest

from gitlab_sync.manifest import differences
from tests.integration.sidecar import trees
from tests.integration.sidecar.sync_pair import (
    FILESYSTEMS,
    CommandFailed,
    Pair,
    keys_of,
    pair_up,
    start_sidecar,
    sync_pair,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=FILESYSTEMS)
def fs(request: pytest.FixtureRequest) -> str:
    """The filesystem under both hosts' data: ``btrfs`` (snapshots) or ``plain`` (fallback)."""
    name: str = request.param
    return name


def _method(pair: Pair) -> None:
    """The slave keeps its snapshots the way its filesystem allows, and says so."""
    expected = "snapshots" if pair.fs == "btrfs" else "fallback"
    status = pair.slave.status()
    assert status["layout"]["method"] == expected, status["layout"]
    if status["current"]:
        assert status["last_complete"]["method"] == expected


def _assert_same(pair: Pair, snapshot: str = "/sync/current") -> None:
    master, slave = pair.master.manifest("/source"), pair.slave.manifest(snapshot)
    assert master == slave, differences(master, slave)


def _newest_after(pair: Pair, previous: str | None, timeout: float = 30) -> str:
    def newer() -> str | None:
        last = pair.last_complete()
        return last["snapshot"] if last and last["snapshot"] != previous else None

    name: str = wait_for(newer, timeout, "a new complete pass")
    return name


def test_first_sync_copies_every_kind_of_file_identically(fs: str) -> None:
    with sync_pair(start=False, fs=fs) as pair:
        pair.writer.python(trees.EVERY_KIND)
        pair.master.sync("start")
        _newest_after(pair, None)
        _assert_same(pair)
        _method(pair)
        slave = {r["path"]: r for r in pair.slave.manifest("/sync/current")}
        # The properties that matter most, spelled out (the manifest comparison covers them all).
        assert slave["data/sparse.img"]["sparse"] is True
        assert slave["data/big-hardlink.pack"]["links"] == "data/big-hardlink.pack"
        assert slave["data/big.pack"]["links"] == "data/big-hardlink.pack"
        assert (slave["data/odd owner"]["uid"], slave["data/odd owner"]["gid"]) == (12345, 54321)
        assert slave["data/setuid-tool"]["mode"] == "0o4755"
        assert slave["data/absolute-link-out-of-tree"] == {
            **slave["data/absolute-link-out-of-tree"],
            "type": "l",
            "target": "/etc/passwd",
        }
        assert "data/not-utf8-\udcff\udcfe\udcc3" in slave
        assert "data/name\nwith\nnewlines" in slave
        assert slave["data/empty/nested-empty"]["type"] == "d"
        assert slave["data/a-fifo"]["type"] == "p"


def test_changes_and_deletions_reach_the_slave_within_seconds(fs: str) -> None:
    with sync_pair(fs=fs) as pair:
        pair.writer.python(trees.EVERY_KIND)
        pair.wait_in_sync()
        pair.wait_idle()  # the slave equals the tree a moment before the master records it
        before = pair.last_complete()
        assert before is not None
        pair.writer.python(
            "import os, shutil\n"
            "os.remove('/source/data/name with spaces')\n"
            "shutil.rmtree('/source/data/empty')\n"
            "os.rename('/source/data/-leading-dash', '/source/data/renamed')\n"
            "os.chmod('/source/config/gitlab.rb', 0o600)\n"
            "os.chown('/source/data/big.pack', 1000, 1000)\n"
            "open('/source/data/git-data/repositories/group/project.git/refs/heads/main', 'w')"
            ".write('1' * 40 + '\\n')\n"
        )
        waited = pair.wait_in_sync(timeout=15)
        assert waited < 15
        pair.wait_idle()
        after = pair.last_complete()
        assert after is not None and after["trigger"] == "change"
        _method(pair)
        if fs == "btrfs":  # received into a writable snapshot of the snapshot before it
            meta = json.loads(pair.slave.run(["cat", f"/sync/snapshots/{after['snapshot']}.json"]))
            assert meta["started_from"] and meta["started_from"] < after["snapshot"]
        # The older snapshot is untouched by the newer one (hard links never share metadata).
        old = pair.slave.manifest(f"/sync/snapshots/{before['snapshot']}")
        assert {r["path"]: r for r in old}["data/big.pack"]["uid"] == 998


def test_a_ref_rewritten_in_the_same_second_at_the_same_size_reaches_the_slave(fs: str) -> None:
    ref = "/source/data/git-data/repositories/group/project.git/refs/heads/main"
    with sync_pair(fs=fs) as pair:
        pair.writer.python(trees.EVERY_KIND)
        pair.wait_in_sync()
        pair.stop_sending()
        # Same size, same second, a few nanoseconds later: rsync's default quick check
        # (whole seconds) would call it unchanged and keep the old ref in the new snapshot.
        pair.writer.python(
            "import os\n"
            f"st = os.stat('{ref}')\n"
            f"open('{ref}', 'w').write('1' * 40 + '\\n')\n"
            f"os.utime('{ref}', ns=(st.st_atime_ns, st.st_mtime_ns + 1000))\n"
        )
        pair.master.sync("pass")
        assert pair.slave.run(["cat", ref.replace("/source", "/sync/current")]) == "1" * 40 + "\n"
        _assert_same(pair)


def test_both_sidecars_restarted_are_still_paired_and_syncing() -> None:
    with sync_pair() as pair:
        pair.writer.python(trees.files(5, 1000))
        pair.wait_in_sync()
        pair.slave.container.restart(timeout=10)
        pair.master.container.restart(timeout=10)
        wait_for(
            lambda: pair.master.status()["running"] and pair.slave.status()["running"],
            20,
            "both sidecars to resume after restart",
        )
        assert pair.master.status()["role"] == "master"
        assert pair.slave.status()["role"] == "slave"
        pair.writer.python("open('/source/data/after-restart', 'w').write('still here')")
        pair.wait_in_sync(timeout=15)


def test_master_killed_mid_pass_leaves_previous_complete_snapshot_current(fs: str) -> None:
    # A bandwidth limit (a real setting) makes the second pass last long enough to be cut.
    with sync_pair(master_env={"SYNC_BWLIMIT": "2000"}, fs=fs) as pair:
        pair.writer.python(trees.files(20, 1000))
        pair.wait_in_sync()
        pair.stop_sending()  # still: no pass can move current before the large write
        first = pair.slave.status()
        tree_then = pair.master.manifest("/source")
        pair.writer.python(trees.files(8, 4 * 1024 * 1024, folder="data/big"))
        pair.master.sync("start")  # its first pass carries the large files
        wait_for(lambda: pair.slave.status()["in_progress"], 15, "the slave to be receiving a pass")
        wait_for(
            lambda: pair.slave.succeeds(
                [
                    "sh",
                    "-c",
                    "du -s /sync/.incoming/data/big | awk '$1 > 2000 {ok=1} END {exit !ok}'",
                ]
            ),
            20,
            "part of the large pass to arrive",
        )
        pair.master.container.kill(signal="SIGKILL")
        wait_for(lambda: not pair.slave.status()["in_progress"], 30, "the slave to notice")
        after = pair.slave.status()
        assert after["current"] == first["current"]
        assert after["snapshots"] == first["snapshots"]
        now = pair.slave.manifest("/sync/current")
        assert now == tree_then, differences(tree_then, now)
        meta = json.loads(pair.slave.run(["cat", "/sync/.incoming.json"]))
        assert meta["state"] in {"failed", "receiving"}


def test_sender_with_an_unknown_key_is_refused_and_writes_nothing() -> None:
    with sync_pair() as pair:
        pair.writer.python(trees.files(3, 100))
        pair.wait_in_sync()
        pair.stop_sending()  # from here on, whatever the slave receives came from the intruder
        before = pair.slave.status()
        listing = pair.slave.run(["ls", "-a", "/sync"])
        intruder = start_sidecar(pair.stack, pair.network, "intruder", {}, [])
        intruder.sync(
            "add", "slave:2222", "--role", "master", "--peer-key", keys_of(pair.slave)["host"]
        )
        with pytest.raises(CommandFailed) as refused:
            intruder.sync("start")
        assert "refused this master's key" in refused.value.output
        with pytest.raises(CommandFailed):
            intruder.sync("pass")
        assert pair.slave.status()["current"] == before["current"]
        assert pair.slave.run(["ls", "-a", "/sync"]) == listing
        assert not intruder.status()["running"]


def test_master_refuses_a_slave_presenting_another_host_key() -> None:
    with sync_pair(start=False) as pair:
        impostor = start_sidecar(pair.stack, pair.network, "impostor", {}, [])
        pair.master.sync(
            "add", "slave:2222", "--role", "master", "--peer-key", keys_of(impostor)["host"]
        )
        with pytest.raises(CommandFailed) as refused:
            pair.master.sync("start")
        assert "presented a host key that is not the one paired" in refused.value.output
        assert pair.master.status()["running"] is False
        assert not pair.slave.succeeds(["test", "-e", "/sync/current"])


def test_sender_of_an_older_epoch_is_fenced() -> None:
    with sync_pair(start=False) as pair:
        pair_up(pair.master, pair.slave, epoch=1)
        pair.slave.sync(
            "add",
            "master",
            "--role",
            "slave",
            "--peer-key",
            keys_of(pair.master)["client"],
            "--epoch",
            "2",
        )
        with pytest.raises(CommandFailed) as refused:
            pair.master.sync("start")
        assert "fenced" in refused.value.output
        assert not pair.slave.succeeds(["test", "-e", "/sync/.incoming"])


def test_unreachable_slave_is_a_clear_error_and_start_changes_nothing() -> None:
    with sync_pair(start=False) as pair:
        pair.master.sync(
            "add",
            "no-such-host.invalid:2222",
            "--role",
            "master",
            "--peer-key",
            keys_of(pair.slave)["host"],
        )
        with pytest.raises(CommandFailed) as failed:
            pair.master.sync("start")
        assert "no-such-host.invalid:2222" in failed.value.output
        assert json.loads(pair.master.sync("ls", "--json"))["running"] is False


def test_bad_input_is_refused_with_one_line_and_changes_nothing() -> None:
    with sync_pair(start=False) as pair:
        pair.master.sync("rm")
        key = keys_of(pair.slave)["host"]
        cases = {
            (
                "add",
                "root:secret@slave",
                "--role",
                "master",
                "--peer-key",
                key,
            ): "not user:password",
            ("add", "slave:99999", "--role", "master", "--peer-key", key): "port must be",
            ("add", "bad host!", "--role", "master", "--peer-key", key): "not a host name",
            (
                "add",
                "slave",
                "--role",
                "master",
                "--peer-key",
                "ssh-ed25519 short",
            ): "malformed key",
            (
                "add",
                "slave",
                "--role",
                "master",
                "--peer-key",
                "-----BEGIN OPENSSH PRIVATE KEY-----",
            ): "private key",
            ("start",): "not paired",
            ("pass",): "not paired",
        }
        for argv, words in cases.items():
            with pytest.raises(CommandFailed) as failed:
                pair.master.sync(*argv)
            lines = [line for line in failed.value.output.splitlines() if line.strip()]
            assert len(lines) == 1 and words in lines[0], (argv, failed.value.output)
        with pytest.raises(CommandFailed) as unknown:
            pair.master.sync("frobnicate")
        assert unknown.value.code == 2 and "invalid choice" in unknown.value.output
        assert pair.master.sync("ls").strip() == "not paired"
        with pytest.raises(CommandFailed) as wrong_side:
            pair.slave.sync("start")
        assert "this sidecar is the slave" in wrong_side.value.output


# A small slave disk for each path: a 6 MB tmpfs for the fallback; for btrfs, a filesystem of
# 128 MB in its loop file (mkfs.btrfs makes none under 114 MiB), so that the pass fills the
# very btrfs its snapshots are subvolumes of.
SMALL_DISK: dict[str, tuple[dict[str, Any], int]] = {
    "plain": ({"slave_tmpfs": {"/sync": "size=6m"}}, 5 * 1024 * 1024),
    "btrfs": ({"slave_size": "128M"}, 80 * 1024 * 1024),
}


def test_full_slave_disk_fails_the_pass_and_keeps_the_last_snapshot(fs: str) -> None:
    small, too_big = SMALL_DISK[fs]
    with sync_pair(fs=fs, **small) as pair:
        pair.writer.python(trees.files(10, 1000))
        pair.wait_in_sync()
        _method(pair)
        pair.stop_sending()  # still: no pass can move current before the too-big write
        kept = pair.slave.status()["current"]
        tree_then = pair.master.manifest("/source")
        pair.writer.python(trees.files(2, too_big, folder="data/too-big"))
        pair.master.sync("start")  # its first pass carries the too-big files

        def failed() -> dict[str, object] | None:
            last = pair.master.status()["last_pass"]
            return last if last and last["outcome"] == "failed" else None

        last = wait_for(failed, 30, "the pass to fail on the full disk")
        assert "rsync exited" in str(last["error"])
        assert pair.master.status()["last_error"]["message"] == last["error"]
        assert pair.slave.status()["current"] == kept
        now = pair.slave.manifest("/sync/current")
        assert now == tree_then, differences(tree_then, now)
        # Room again: the next pass completes and catches up.
        pair.writer.run(["rm", "-rf", "/source/data/too-big"])
        pair.wait_in_sync(timeout=90)


def test_retention_keeps_the_configured_number_of_snapshots(fs: str) -> None:
    with sync_pair(slave_env={"SNAPSHOT_KEEP_MAX": "3"}, fs=fs) as pair:
        pair.writer.python(trees.files(2, 10))
        pair.wait_in_sync()
        pair.stop_sending()
        for i in range(5):
            pair.writer.python(f"open('/source/data/n{i}', 'w').write('{i}')")
            pair.master.sync("pass")
        assert pair.slave.status()["snapshots"] == 3
        names = pair.slave.run(["ls", "/sync/snapshots"]).split()
        assert len([n for n in names if not n.endswith(".json")]) == 3
        _assert_same(pair)
        _method(pair)
        if fs == "btrfs":  # pruned by deleting subvolumes, not through the trash
            assert not pair.slave.succeeds(["test", "-e", "/sync/.trash"])


def test_no_secret_shows_in_ps_logs_inspect_or_the_image() -> None:
    with sync_pair(master_env={"SYNC_BWLIMIT": "500"}) as pair:
        pair.writer.python(trees.files(4, 512 * 1024))
        wait_for(lambda: pair.slave.status()["in_progress"], 20, "a pass in progress")
        secrets = []
        for side in (pair.master, pair.slave):
            for name in ("id_ed25519", "host_ed25519_key"):
                text = side.run(["cat", f"/state/ssh/{name}"])
                body = "".join(line for line in text.splitlines() if "PRIVATE KEY" not in line)
                secrets.append(body[20:80])  # any slice of the key material
        client = docker.from_env()
        seen = []
        for side in (pair.master, pair.slave):
            seen.append(side.run(["ps", "-eo", "args"]))
            seen.append(side.logs())
            seen.append(json.dumps(client.api.inspect_container(side.container.attrs["Id"])))
        image = client.images.get(pair.master.container.attrs["Image"])
        seen.append(json.dumps(image.attrs))
        seen.append(json.dumps(image.history()))
        everything = "\n".join(seen)
        assert "PRIVATE KEY" not in everything
        for secret in secrets:
            assert secret not in everything
