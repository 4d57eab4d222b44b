"""The fallback's consistent pass: refs before objects, a base backup's excludes, the files
again after pg_backup_stop, its label, prepared copies.

The rsync filters are checked with the local rsync on small trees (no network, no Docker): what
each step of a pass copies, and that a later step never deletes what an earlier one brought.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

from gitlab_sync import backup_pass, pg, receiver, rsync
from gitlab_sync.backup_pass import postgresql_mode
from gitlab_sync.config import Pairing, Paths, Peer, SyncError, Tunables, save_pairing
from gitlab_sync.filters import (
    REGISTRY_BLOBS,
    after_stop_filters,
    files_filters,
    not_refs_filters,
    postgres_excludes,
    refs_filters,
    registry_blobs_filters,
    wal_filters,
)
from gitlab_sync.records import PassRecord
from gitlab_sync.retention import Tiers
from gitlab_sync.snapshots import PG_DATA, Area

REPO = "data/git-data/repositories/group/sub/project.git"
FILES = (
    f"{REPO}/HEAD",
    f"{REPO}/packed-refs",
    f"{REPO}/refs/heads/main",
    f"{REPO}/refs/tags/v1",
    f"{REPO}/objects/ab/cdef",
    f"{REPO}/objects/pack/pack-1.pack",
    f"{REPO}/config",
    "data/git-data/repositories/other.git/refs/heads/x",
    "data/gitlab-rails/uploads/a.png",
    "config/gitlab-secrets.json",
    "logs/puma/current",
    "data/postgresql/.s.PGSQL.5432.lock",
    "data/postgresql/data/PG_VERSION",
    "data/postgresql/data/base/1/1259",
    "data/postgresql/data/base/1/pgsql_tmp/t1",
    "data/postgresql/data/global/pg_internal.init",
    "data/postgresql/data/postmaster.pid",
    "data/postgresql/data/postmaster.opts",
    "data/postgresql/data/pg_wal/000000010000000000000001",
    "data/postgresql/data/pg_wal/archive_status/000000010000000000000001.done",
    "data/postgresql/data/pg_replslot/gitlab_sync/state",
    "data/postgresql/data/pg_stat_tmp/db_0.stat",
    "data/postgresql/data/pg_subtrans/0000",
)


def _tree(root: Path) -> Path:
    for rel in FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return root


def _files(root: Path) -> set[str]:
    return {
        os.path.relpath(Path(parent) / f, root)
        for parent, _dirs, files in os.walk(root)
        for f in files
    }


def _rsync(source: Path, dest: Path, filters: list[str]) -> None:
    subprocess.run(
        ["rsync", "-aHS", "--delete", *filters, f"{source}/", f"{dest}/"],
        check=True,
        capture_output=True,
    )


def test_first_step_copies_refs_head_and_packed_refs_only(tmp_path: Path) -> None:
    source, dest = _tree(tmp_path / "src"), tmp_path / "dst"
    _rsync(source, dest, refs_filters())
    assert _files(dest) == {
        f"{REPO}/HEAD",
        f"{REPO}/packed-refs",
        f"{REPO}/refs/heads/main",
        f"{REPO}/refs/tags/v1",
        "data/git-data/repositories/other.git/refs/heads/x",
    }
    assert not (dest / REPO / "objects").exists()  # not even listed: the next step's


def test_first_step_finds_refs_in_hashed_wiki_and_pool_repositories(tmp_path: Path) -> None:
    repos = tmp_path / "src/data/git-data/repositories"
    wanted = {
        "@hashed/ab/cd/abcd.git/refs/heads/main",
        "@hashed/ab/cd/abcd.wiki.git/HEAD",
        "@pools/12/34/1234.git/packed-refs",
        "@hashed/ab/cd/abcd.git/refs/tags/deep/v1.git/x",  # a ref whose name ends in .git
    }
    others = ["@hashed/ab/cd/abcd.git/objects/12/3456", "@hashed/ab/cd/abcd.git/hooks/x"]
    for rel in [*wanted, *others]:
        (repos / rel).parent.mkdir(parents=True, exist_ok=True)
        (repos / rel).write_text(rel)
    dest = tmp_path / "dst"
    _rsync(tmp_path / "src", dest, refs_filters())
    copied = _files(dest)
    assert copied == {f"data/git-data/repositories/{rel}" for rel in wanted}


def test_second_step_copies_the_rest_and_keeps_refs_as_they_were_read(tmp_path: Path) -> None:
    source, dest = _tree(tmp_path / "src"), tmp_path / "dst"
    _rsync(source, dest, refs_filters())
    # Between the steps, a push moves a ref and deletes another: the snapshot keeps the refs
    # as read first (their objects exist), and the second step does not delete them.
    (source / REPO / "refs/heads/main").write_text("moved")
    (source / REPO / "refs/tags/v1").unlink()
    _rsync(source, dest, not_refs_filters())
    assert (dest / REPO / "refs/heads/main").read_text() == f"{REPO}/refs/heads/main"
    assert (dest / REPO / "refs/tags/v1").exists()
    assert _files(dest) == set(FILES)


def test_a_repository_created_between_the_steps_arrives_empty_not_broken(tmp_path: Path) -> None:
    source, dest = _tree(tmp_path / "src"), tmp_path / "dst"
    _rsync(source, dest, refs_filters())
    new = source / "data/git-data/repositories/group/new.git"
    for rel in ("HEAD", "config", "objects/12/3456", "refs/heads/main"):
        (new / rel).parent.mkdir(parents=True, exist_ok=True)
        (new / rel).write_text(rel)
    _rsync(source, dest, not_refs_filters())
    copied = dest / "data/git-data/repositories/group/new.git"
    assert (copied / "HEAD").is_file() and (copied / "objects/12/3456").is_file()
    assert (copied / "refs").is_dir() and not any((copied / "refs").iterdir())


def test_a_base_backup_leaves_out_what_postgresql_says_to(tmp_path: Path) -> None:
    source, dest = _tree(tmp_path / "src"), tmp_path / "dst"
    _rsync(source, dest, [*not_refs_filters(), *postgres_excludes()])
    data = "data/postgresql/data"
    gone = {
        f"{data}/postmaster.pid",
        f"{data}/postmaster.opts",
        f"{data}/pg_wal/000000010000000000000001",
        f"{data}/pg_wal/archive_status/000000010000000000000001.done",
        f"{data}/pg_replslot/gitlab_sync/state",
        f"{data}/pg_stat_tmp/db_0.stat",
        f"{data}/pg_subtrans/0000",
        f"{data}/base/1/pgsql_tmp/t1",
        f"{data}/global/pg_internal.init",
        "data/postgresql/.s.PGSQL.5432.lock",
    }
    copied = _files(dest)
    assert not copied & gone
    assert f"{data}/base/1/1259" in copied and f"{data}/PG_VERSION" in copied
    for kept in ("pg_wal", "pg_replslot", "pg_subtrans", "pg_stat_tmp"):
        assert (dest / data / kept).is_dir()  # the directories stay; PostgreSQL needs them


def test_the_wal_step_copies_pg_wal_and_deletes_nothing_else(tmp_path: Path) -> None:
    source, dest = _tree(tmp_path / "src"), tmp_path / "dst"
    _rsync(source, dest, [*not_refs_filters(), *postgres_excludes()])
    (dest / PG_DATA / "backup_label").write_text("START WAL LOCATION: ...")
    before = _files(dest)
    _rsync(source, dest, wal_filters())
    assert _files(dest) == before | {f"{PG_DATA}/pg_wal/000000010000000000000001"}


def test_the_wal_step_copies_only_the_segments_of_the_backup(tmp_path: Path) -> None:
    source, dest = _tree(tmp_path / "src"), tmp_path / "dst"
    pg_wal = source / PG_DATA / "pg_wal"
    for n in range(2, 6):
        (pg_wal / f"00000001000000000000000{n}").write_text(str(n))
    (pg_wal / "00000002.history").write_text("1\t0/3000000\tno recovery target\n")
    skip = pg.segments_outside(pg_wal, "000000010000000000000002", "000000010000000000000003")
    assert skip == [
        "000000010000000000000001",  # before the backup: kept for wal_keep_size
        "000000010000000000000004",  # recycled, waiting ahead
        "000000010000000000000005",
    ]
    _rsync(source, dest, wal_filters(skip))
    assert sorted(os.listdir(dest / PG_DATA / "pg_wal")) == [
        "000000010000000000000002",
        "000000010000000000000003",
        "00000002.history",
        "archive_status",
    ]


def test_lsn_arithmetic_and_the_start_segment_from_a_label() -> None:
    assert pg.lsn_bytes("0/2000028") == 0x2000028
    assert pg.lsn_bytes("16/B374D848") - pg.lsn_bytes("16/B3000000") == 0x74D848
    with pytest.raises(ValueError, match="not an LSN"):
        pg.lsn_bytes("16/XYZ")
    label = (
        "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n"
        "CHECKPOINT LOCATION: 0/5000060\nBACKUP METHOD: streamed\n"
    )
    assert pg.start_wal_file(label) == "000000010000000000000005"
    with pytest.raises(SyncError, match="START WAL LOCATION"):
        pg.start_wal_file("nothing")


def test_postgresql_mode_is_backup_only_while_a_server_listens(tmp_path: Path) -> None:
    cluster = pg.PgCluster(tmp_path)
    assert postgresql_mode(cluster) == "none"
    (cluster.data).mkdir(parents=True)
    (cluster.data / "PG_VERSION").write_text("15\n")
    assert postgresql_mode(cluster) == "offline"
    short = Path(f"/tmp/gs-{os.getpid()}")  # a socket path must be short
    short.mkdir(exist_ok=True)
    try:
        sock_dir = short / pg.SOCKET_DIR
        sock_dir.mkdir(parents=True, exist_ok=True)
        (short / pg.DATA_DIR).mkdir(exist_ok=True)
        (short / pg.DATA_DIR / "PG_VERSION").write_text("15\n")
        listening = pg.PgCluster(short)
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(listening.socket))
            server.listen()
            assert postgresql_mode(listening) == "backup"
        # A socket file left by a killed server is not a server.
        assert postgresql_mode(listening) == "offline"
    finally:
        subprocess.run(["rm", "-rf", str(short)], check=False)


def test_a_server_on_another_socket_is_refused_not_copied_as_stopped(tmp_path: Path) -> None:
    cluster = pg.PgCluster(tmp_path)
    cluster.data.mkdir(parents=True)
    (cluster.data / "PG_VERSION").write_text("15\n")
    pid = "141\n/var/opt/gitlab/postgresql/data\n1700000000\n{port}\n{dir}\n\n0\nready   \n"
    cluster.pid_file.write_text(pid.format(port=5432, dir="/var/opt/gitlab/postgresql"))
    assert postgresql_mode(cluster) == "offline"  # a killed server's leftover: consistent
    cluster.pid_file.write_text(pid.format(port=5432, dir="/run/postgresql"))
    with pytest.raises(SyncError, match="socket is in /run/postgresql"):
        postgresql_mode(cluster)
    cluster.pid_file.write_text(pid.format(port=5433, dir="/var/opt/gitlab/postgresql"))
    with pytest.raises(SyncError, match="port 5433"):
        postgresql_mode(cluster)


def _received_with_cluster(area: Area, pass_id: str) -> None:
    area.begin(pass_id, 1, dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    data = area.incoming / PG_DATA
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    area.mark(pass_id, "received")


def test_the_backup_label_is_written_into_the_received_data_directory(tmp_path: Path) -> None:
    area = Area(tmp_path / "sync")
    _received_with_cluster(area, "p1")
    label = b"START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n"
    path = area.write_label("p1", "backup_label", label)
    assert path == area.incoming / PG_DATA / "backup_label"
    assert path.read_bytes() == label
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    version = (area.incoming / PG_DATA / "PG_VERSION").stat()
    assert (path.stat().st_uid, path.stat().st_gid) == (version.st_uid, version.st_gid)


@pytest.mark.parametrize(
    ("pass_id", "name", "data", "message"),
    [
        ("p1", "postgresql.conf", b"START WAL LOCATION: x", "not a backup label file"),
        ("p1", "../../etc/passwd", b"START WAL LOCATION: x", "not a backup label file"),
        ("p1", "backup_label", b"archive_command = 'rm -rf /'", "not a PostgreSQL backup label"),
        ("p1", "backup_label", b"START WAL LOCATION: " + b"x" * 70000, "larger than"),
        ("p2", "backup_label", b"START WAL LOCATION: x", "not received yet"),
    ],
)
def test_a_label_is_refused_unless_it_is_one_for_the_pass_received(
    tmp_path: Path, pass_id: str, name: str, data: bytes, message: str
) -> None:
    area = Area(tmp_path / "sync")
    _received_with_cluster(area, "p1")
    with pytest.raises(SyncError, match=message):
        area.write_label(pass_id, name, data)


def _snapshot(area: Area) -> str:
    _received_with_cluster(area, "p1")
    (area.incoming / PG_DATA / "base").mkdir()
    (area.incoming / PG_DATA / "base" / "1259").write_bytes(b"page" * 1000)
    (area.incoming / "data" / "pack").write_bytes(b"pack")
    os.link(area.incoming / "data" / "pack", area.incoming / "data" / "pack-link")
    return str(area.commit("p1", Tiers(every=1e9), extra={})["snapshot"])


def test_prepare_makes_a_real_copy_that_gitlab_can_write_without_touching_snapshots(
    tmp_path: Path,
) -> None:
    area = Area(tmp_path / "sync")
    name = _snapshot(area)
    target = tmp_path / "target"
    for part in ("config", "data", "logs"):  # empty mount points are fine
        (target / part).mkdir(parents=True)
    done = area.prepare(target)
    assert done["snapshot"] == name and done["bytes"] > 4000
    copied, original = (
        target / PG_DATA / "base" / "1259",
        area.snapshots / name / PG_DATA / "base" / "1259",
    )
    assert copied.stat().st_ino != original.stat().st_ino
    with open(copied, "r+b") as handle:  # PostgreSQL writes in place
        handle.write(b"CHANGED")
    assert original.read_bytes().startswith(b"page")
    # Hard links within the snapshot stay hard links within the copy.
    assert (target / "data" / "pack").stat().st_ino == (target / "data" / "pack-link").stat().st_ino


def test_prepare_refuses_a_target_that_is_not_empty(tmp_path: Path) -> None:
    area = Area(tmp_path / "sync")
    _snapshot(area)
    target = tmp_path / "target"
    (target / "data").mkdir(parents=True)
    (target / "data" / "something").write_text("GitLab's live data")
    with pytest.raises(SyncError, match="not empty"):
        area.prepare(target)
    assert (target / "data" / "something").read_text() == "GitLab's live data"


def test_prepare_without_a_snapshot_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="no complete snapshot"):
        Area(tmp_path / "sync").prepare(tmp_path / "target")


def test_the_receiver_label_verb_writes_the_label_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = Paths(state=tmp_path / "state", source=tmp_path / "source", sync=tmp_path / "sync")
    save_pairing(paths, Pairing(role="slave", peer=Peer("master"), peer_key="ssh-ed25519 AAAA"))
    area = Area(paths.sync)
    _received_with_cluster(area, "p1")
    label = b"START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n"

    def run(command: str, stdin: bytes) -> int:
        monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(stdin)))
        return receiver.serve({"SSH_ORIGINAL_COMMAND": command}, paths, Tunables())

    assert run("gitlab-sync-recv label 1 p1 backup_label", label) == 0
    assert (area.incoming / PG_DATA / "backup_label").read_bytes() == label
    assert run("gitlab-sync-recv label 2 p1 backup_label", label) == 1  # fenced epoch
    assert run("gitlab-sync-recv label 1 p1 pg_hba.conf", b"local all all trust") == 1
    assert not (area.incoming / PG_DATA / "pg_hba.conf").exists()


def test_a_full_sync_area_is_said_in_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = Paths(state=tmp_path / "state", source=tmp_path / "source", sync=tmp_path / "sync")
    save_pairing(paths, Pairing(role="slave", peer=Peer("master"), peer_key="ssh-ed25519 AAAA"))
    _received_with_cluster(Area(paths.sync), "p1")

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Area, "commit", full)  # tmpfs out of inodes did exactly this
    command = "gitlab-sync-recv commit 1 p1"
    assert receiver.serve({"SSH_ORIGINAL_COMMAND": command}, paths, Tunables()) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("gitlab-sync receiver: the slave's sync area is full")
    assert "SNAPSHOT_KEEP_MAX" in err


def test_files_written_before_the_stop_are_copied_again_but_refs_and_postgresql_are_not(
    tmp_path: Path,
) -> None:
    """Step 5 of the fallback's pass: a row of the backup may name an upload (or objects)
    written while step 3 ran; the copy after pg_backup_stop brings it, and leaves the refs
    as step 2 read them and PostgreSQL's copy as the backup made it."""
    source, dest = _tree(tmp_path / "src"), tmp_path / "dst"
    _rsync(source, dest, refs_filters())
    _rsync(source, dest, [*not_refs_filters(), *postgres_excludes()])
    (dest / PG_DATA / "backup_label").write_text("START WAL LOCATION: ...")
    # While step 3 ran and until the stop: an upload, then its row; a push; pages written.
    (source / "data/gitlab-rails/uploads/b.png").write_text("written before its row")
    (source / REPO / "objects/cd").mkdir(parents=True)
    (source / REPO / "objects/cd/ef01").write_text("pushed")
    (source / REPO / "refs/heads/main").write_text("moved by the push")
    (source / PG_DATA / "base/1/1259").write_text("a page after the stop")
    before = _files(dest)
    _rsync(source, dest, after_stop_filters())
    assert _files(dest) == before | {
        "data/gitlab-rails/uploads/b.png",
        f"{REPO}/objects/cd/ef01",
    }
    assert (dest / REPO / "refs/heads/main").read_text() == f"{REPO}/refs/heads/main"
    assert (dest / PG_DATA / "base/1/1259").read_text() == f"{PG_DATA}/base/1/1259"
    assert (dest / PG_DATA / "backup_label").exists()


def _push(root: Path, tag: str, hexdigest: str) -> tuple[str, str]:
    """A registry push as the registry makes it: the blob, then the links naming it."""
    blob = f"{REGISTRY_BLOBS[1:]}/sha256/{hexdigest[:2]}/{hexdigest}/data"
    repo = f"{REGISTRY_BLOBS[1:].removesuffix('/blobs')}/repositories/dr/tool/_manifests"
    link = f"{repo}/tags/{tag}/current/link"
    for rel, text in ((blob, "{}"), (f"{repo}/revisions/sha256/{hexdigest}/link", hexdigest)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).write_text(f"sha256:{hexdigest}")
    return blob, link


def test_registry_blobs_are_copied_after_every_link_that_names_them(tmp_path: Path) -> None:
    """Steps 3, 5 and 7 of the fallback's pass: a push while step 3 or 5 runs leaves its
    link in the copy; its blob, written before the link, arrives in step 7 (in one walk,
    blobs sort before repositories, and a push between the two tore a tag from its blob)."""
    source, dest = _tree(tmp_path / "src"), tmp_path / "dst"
    old_blob, old_link = _push(source, "v1", "a" * 64)
    _rsync(source, dest, files_filters(backup=True))
    assert (dest / old_link).exists() and not (dest / old_blob).exists()  # not yet: step 7's
    new_blob, new_link = _push(source, "v2", "b" * 64)
    _rsync(source, dest, after_stop_filters())
    assert (dest / new_link).exists() and not (dest / new_blob).exists()
    before = _files(dest)
    _rsync(source, dest, registry_blobs_filters())
    assert _files(dest) == before | {old_blob, new_blob}  # the blobs, nothing else, none lost


class _PushingSender:
    """What backup_pass.send needs of a Sender: each copy runs the local rsync into ``dest``,
    and the registry takes a push (blob, then links) just before it."""

    def __init__(self, source: Path, dest: Path) -> None:
        self.paths = types.SimpleNamespace(source=source)
        self.dest, self.phases, self.pushes = dest, list[str](), 0
        self.pg_seen: object = None

    def log(self, _line: str) -> None:
        pass

    def phase(self, _record: PassRecord, name: str) -> None:
        self.phases.append(name)

    def copy(self, source: Path, _pass_id: str, filters: list[str], **_kw: object) -> rsync.Result:
        self.pushes += 1
        _push(source, f"v{self.pushes}", f"{self.pushes:x}" * 64)
        _rsync(source, self.dest, filters)
        return rsync.Result(0, True, "ok", rsync.Stats())


def test_a_pass_copies_the_registry_blobs_after_every_copy_that_brings_links(
    tmp_path: Path,
) -> None:
    """backup_pass.send itself, on a tree without PostgreSQL (steps 2, 3 and 7): pushes just
    before each copy, and every link that reached the copy has its blob."""
    source, dest = tmp_path / "src", tmp_path / "dst"
    (source / "data/gitlab-rails/uploads").mkdir(parents=True)
    (source / "data/gitlab-rails/uploads/a.png").write_text("an upload")
    sender = _PushingSender(source, dest)
    backup_pass.send(sender, PassRecord("p1", "timer", "now"))  # type: ignore[arg-type]
    assert sender.phases == ["refs", "files", "registry-blobs"]
    copied = _files(dest)
    links = [f for f in copied if f.endswith("/current/link")]
    assert len(links) == 2  # pushed before steps 2 and 3; the third, before step 7, has none yet
    for link in links:
        hexdigest = (dest / link).read_text().removeprefix("sha256:")
        assert f"{REGISTRY_BLOBS[1:]}/sha256/{hexdigest[:2]}/{hexdigest}/data" in copied, link
