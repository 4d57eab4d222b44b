"""The stand-in GitLab image, run for real: probes, git over HTTP, PostgreSQL, owners, uploads,
the container registry (pushes and pulls with skopeo).

Every container starts on empty volumes (the image's anonymous volumes), as a new Omnibus
container does. The image is built by ``make images`` (gitlab-dr/gitlab-standin:local, or
$STANDIN_IMAGE). ``gitlab`` (conftest.py) is one stand-in shared by the module's tests.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from pathlib import Path

import pytest

from gitlab_sync.waits import wait_until
from ops.rehearsal import registry as reg
from ops.rehearsal import standin as gl
from ops.rehearsal.standin import GitLabClientError
from tests.integration.rehearsal.standin_container import StandIn, standin

pytestmark = pytest.mark.integration

READY_BODY = {"status": "ok", "master_check": [{"status": "ok"}]}


# --- Probes --------------------------------------------------------------------------------


def test_readiness_goes_green_on_empty_volumes(gitlab: StandIn) -> None:
    answer = gl.readiness(gitlab.url, all_checks=False)
    assert answer.status == 200
    assert answer.body == READY_BODY
    detailed = gl.readiness(gitlab.url)
    assert detailed.ready
    assert {"db_check", "gitaly_check", "secrets_check", "registry_check"} <= set(
        detailed.body or {}
    )
    assert gl.health(gitlab.url) == 200
    # The Compose health check's command, as Omnibus's.
    result = gitlab.run("/opt/gitlab/bin/gitlab-healthcheck", "--fail", "--max-time", "10")
    assert result.ok, result.output


def test_readiness_is_503_without_gitlab_secrets_json(gitlab: StandIn) -> None:
    secrets = "/etc/gitlab/gitlab-secrets.json"
    gitlab.check("mv", secrets, f"{secrets}.aside")
    try:
        answer = gl.readiness(gitlab.url, all_checks=False)
        assert answer.status == 503
        assert answer.body is not None and answer.body["status"] == "failed"
        assert "gitlab-secrets.json is missing" in answer.reason
        failed = gitlab.run("/opt/gitlab/bin/gitlab-healthcheck", "--fail", "--max-time", "10")
        assert failed.code == 22  # curl --fail on an HTTP error
        assert gl.health(gitlab.url) == 200
    finally:
        gitlab.check("mv", f"{secrets}.aside", secrets)
    assert gl.readiness(gitlab.url).ready


def test_readiness_is_503_while_postgresql_is_stopped(gitlab: StandIn) -> None:
    stopped = gitlab.check("gitlab-ctl", "stop", "postgresql")
    assert re.match(r"ok: down: postgresql: \d+s", stopped), stopped
    try:
        assert gl.service_states(gitlab.container)["postgresql"] == "down"
        answer = gl.readiness(gitlab.url)
        assert answer.status == 503
        assert "db_check: PostgreSQL:" in answer.reason
        assert "gitaly_check" not in answer.reason and "secrets_check" not in answer.reason
        assert gl.health(gitlab.url) == 200
    finally:
        started = gitlab.check("gitlab-ctl", "start", "postgresql")
    assert re.match(r"ok: run: postgresql: \(pid \d+\)", started), started
    assert gitlab.wait_ready(20) < 20


# --- gitlab-ctl, users and paths ---------------------------------------------------------------


def test_gitlab_ctl_status_shows_each_service_as_omnibus_does(gitlab: StandIn) -> None:
    out = gitlab.check("gitlab-ctl", "status")
    for service in ("nginx", "postgresql", "puma", "registry"):
        line = rf"^run: {service}: \(pid \d+\) \d+s; run: log: \(pid \d+\) \d+s$"
        assert re.search(line, out, re.MULTILINE), out
    assert gl.service_states(gitlab.container) == {
        "nginx": "run",
        "postgresql": "run",
        "puma": "run",
        "registry": "run",
    }
    # A service Omnibus has and the stand-in does not is skipped, as omnibus-ctl does.
    assert gitlab.run("gitlab-ctl", "stop", "sidekiq").ok


def test_users_and_paths_have_omnibus_ids_owners_and_modes(gitlab: StandIn) -> None:
    ids = {
        "git": 998,
        "gitlab-www": 999,
        "gitlab-redis": 997,
        "gitlab-psql": 996,
        "mattermost": 994,
        "registry": 993,
        "gitlab-prometheus": 992,
        "gitlab-consul": 991,
    }
    script = 'for u in "$@"; do echo "$u $(id -u "$u") $(id -g "$u") $(getent group "$u")"; done'
    out = gitlab.check("sh", "-c", script, "sh", *ids)
    for line in out.splitlines():
        user, uid, gid, group = line.split(" ")
        number = str(ids[user])
        assert (uid, gid, group.split(":")[2]) == (number, number, number), line
    expected = {
        "/etc/gitlab": "0:0 775",
        "/etc/gitlab/gitlab-secrets.json": "0:0 600",
        "/etc/gitlab/gitlab.rb": "0:0 600",
        "/var/opt/gitlab/git-data/repositories": "998:998 2770",
        "/var/opt/gitlab/postgresql": "996:996 755",
        "/var/opt/gitlab/postgresql/data": "996:996 700",
        "/var/opt/gitlab/postgresql/data/PG_VERSION": "996:996 600",
        "/var/opt/gitlab/gitlab-rails/uploads": "998:998 700",
        "/var/opt/gitlab/gitlab-rails/shared/registry": "993:998 770",
        "/var/opt/gitlab/registry": "993:993 700",
        "/var/opt/gitlab/registry/config.yml": "993:993 600",
        "/var/log/gitlab": "0:0 755",
    }
    out = gitlab.check("stat", "-c", "%n %u:%g %a", *expected)
    assert dict(line.split(" ", 1) for line in out.splitlines()) == expected
    assert gitlab.check("cat", "/var/opt/gitlab/postgresql/data/PG_VERSION").strip() == "15"
    # PostgreSQL runs as gitlab-psql, the web front as gitlab-www, the application as git.
    processes = gitlab.check(
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do "
        "echo $(stat -c %u $p) $(head -c 40 $p/cmdline | tr '\\0' ' '); "
        "done",
    )
    owners = {
        line.split(" ", 1)[1].split(" ")[0]: line.split(" ", 1)[0]
        for line in processes.splitlines()
        if " " in line
    }
    assert owners["/usr/lib/postgresql/15/bin/postgres"] == "996"
    assert owners["fcgiwrap"] == "998"
    assert owners["/opt/gitlab/embedded/bin/registry"] == "993"
    assert gitlab.check("psql", "--version").startswith("psql (PostgreSQL) 15")
    for tool in ("psql", "pg_ctl", "pg_basebackup", "pg_controldata"):
        assert gitlab.run("test", "-x", f"/opt/gitlab/embedded/bin/{tool}").ok, tool


# --- The container registry ----------------------------------------------------------------


def test_readiness_waits_for_the_registry_and_its_storage_is_omnibus_s(gitlab: StandIn) -> None:
    assert reg.answers(gitlab.registry)
    config = gitlab.check("cat", "/var/opt/gitlab/registry/config.yml")
    assert "rootdirectory: /var/opt/gitlab/gitlab-rails/shared/registry" in config
    assert "addr: 127.0.0.1:5000" in config
    stopped = gitlab.check("gitlab-ctl", "stop", "registry")
    assert re.match(r"ok: down: registry: \d+s", stopped), stopped
    try:
        answer = gl.readiness(gitlab.url)
        assert answer.status == 503
        assert "registry_check: the container registry at 127.0.0.1:5000 answers 000" in (
            answer.reason
        ), answer.reason
        assert not reg.answers(gitlab.registry)
    finally:
        gitlab.check("gitlab-ctl", "start", "registry")
    assert gitlab.wait_ready(20) < 20


def test_a_pushed_tag_pulls_with_its_digest_a_re_push_moves_it_a_delete_removes_it(
    gitlab: StandIn, tmp_path: Path
) -> None:
    address = gitlab.registry
    first = reg.make_image(tmp_path / "first")
    assert reg.push(address, "test/app", "v1", tmp_path / "first") == first
    assert reg.digest_of(address, "test/app", "v1") == first
    reg.pull(address, "test/app", first, tmp_path / "pulled")
    assert (tmp_path / "pulled" / "manifest.json").is_file()
    second = reg.make_image(tmp_path / "second")
    assert reg.push(address, "test/app", "v1", tmp_path / "second") == second != first
    assert reg.digest_of(address, "test/app", "v1") == second
    reg.push(address, "test/group/tool", "keep", tmp_path / "first")
    reg.delete(address, "test/app", "v1")
    assert reg.digest_of(address, "test/app", "v1") is None
    # On disk: the kept tag, every link resolving; stored as the registry user.
    links = reg.links_in_container(gitlab.container)
    assert links.ok, links.dangling
    assert links.tags == {"test/group/tool:keep": first}
    owner = gitlab.check("stat", "-c", "%U", f"{reg.STORAGE}/docker/registry/v2/blobs")
    assert owner.strip() == "registry"


def test_the_link_check_finds_a_blob_removed_from_the_storage(
    gitlab: StandIn, tmp_path: Path
) -> None:
    layout = tmp_path / "image"
    digest = reg.make_image(layout)
    reg.push(gitlab.registry, "test/broken", "v1", layout)
    assert reg.links_in_container(gitlab.container).ok
    blob = f"{reg.STORAGE}/docker/registry/v2/blobs/sha256/{digest[7:9]}/{digest[7:]}/data"
    gitlab.check("mv", blob, f"{blob}.aside")
    try:
        check = reg.check_links(reg.links_in_container(gitlab.container))
        assert not check.ok
        assert f"tag test/broken v1 {digest}: no-blob" in check.detail
    finally:
        gitlab.check("mv", f"{blob}.aside", blob)
    assert reg.links_in_container(gitlab.container).ok


# --- git over HTTP ---------------------------------------------------------------------------


def test_first_push_creates_the_project_and_a_clone_gets_the_same_refs(
    gitlab: StandIn, tmp_path: Path
) -> None:
    project = f"group-{uuid.uuid4().hex[:6]}/project"
    writer = tmp_path / "writer"
    first = gl.push_commit(gitlab.url, project, writer, message="first")
    second = gl.push_commit(
        gitlab.url,
        project,
        writer,
        message="second",
        files={"docs/a file with spaces.md": b"hello\n"},
    )
    assert first != second
    remote = gl.ls_remote(gitlab.url, project)
    assert remote == {"HEAD": second, "refs/heads/main": second}

    copy = gl.clone(gitlab.url, project, tmp_path / "clone")
    assert gl.local_refs(copy, "refs/remotes/origin/main") == {"refs/remotes/origin/main": second}
    assert (copy / "docs" / "a file with spaces.md").read_bytes() == b"hello\n"
    assert gl.git(["rev-parse", "HEAD"], cwd=copy).strip() == second

    # Stored as Omnibus would own it, under <group>/<project>.git, and sound.
    path = gl.repository_path(project)
    assert gitlab.check("stat", "-c", "%U:%G", path).strip() == "git:git"
    assert gl.repository_refs(gitlab.container, project) == {"refs/heads/main": second}
    assert project in gl.list_projects(gitlab.container)
    result = gl.fsck(gitlab.container, project)
    assert result.ok, result.output


def test_fetch_gets_commits_pushed_after_the_clone(gitlab: StandIn, tmp_path: Path) -> None:
    project = f"group-{uuid.uuid4().hex[:6]}/sub/project"
    writer = tmp_path / "writer"
    gl.push_commit(gitlab.url, project, writer)
    copy = gl.clone(gitlab.url, project, tmp_path / "clone")
    newer = gl.push_commit(gitlab.url, project, writer, branch="feature")
    newest = gl.push_commit(gitlab.url, project, writer, branch="main")
    gl.fetch(copy)
    assert gl.local_refs(copy, "refs/remotes/origin") == {
        "refs/remotes/origin/HEAD": newest,
        "refs/remotes/origin/feature": newer,
        "refs/remotes/origin/main": newest,
    }
    assert gl.repository_refs(gitlab.container, project) == {
        "refs/heads/feature": newer,
        "refs/heads/main": newest,
    }
    assert all(result.ok for result in gl.fsck_all(gitlab.container))


def test_first_pushed_branch_becomes_the_default_branch(gitlab: StandIn, tmp_path: Path) -> None:
    project = f"group-{uuid.uuid4().hex[:6]}/legacy"
    sha = gl.push_commit(gitlab.url, project, tmp_path / "writer", branch="master")
    assert gl.ls_remote(gitlab.url, project) == {"HEAD": sha, "refs/heads/master": sha}
    copy = gl.clone(gitlab.url, project, tmp_path / "clone")
    assert gl.git(["symbolic-ref", "HEAD"], cwd=copy).strip() == "refs/heads/master"


def test_fetching_a_project_that_was_never_pushed_is_not_found(gitlab: StandIn) -> None:
    with pytest.raises(GitLabClientError, match="not found"):
        gl.ls_remote(gitlab.url, "nobody/nothing")
    assert gitlab.run("test", "-e", gl.repository_path("nobody/nothing")).code == 1


# --- Uploads ---------------------------------------------------------------------------------


def test_upload_put_then_get_round_trips(gitlab: StandIn) -> None:
    data = os.urandom(1_500_000)
    path = f"{uuid.uuid4().hex[:8]}/a file é.bin"
    assert gl.get_upload(gitlab.url, path) is None
    assert gl.put_upload(gitlab.url, path, data) == 201
    assert gl.get_upload(gitlab.url, path) == data
    assert gl.put_upload(gitlab.url, path, b"second version") == 204
    assert gl.get_upload(gitlab.url, path) == b"second version"

    on_disk = f"{gl.UPLOADS}/{path}"
    assert gitlab.check("stat", "-c", "%U:%G", on_disk).strip() == "git:git"
    digest = gitlab.check("sha256sum", on_disk).split()[0]
    assert digest == hashlib.sha256(b"second version").hexdigest()
    # nginx refuses a path that climbs out of /uploads/ before the application sees it.
    with pytest.raises(GitLabClientError, match="HTTP 400"):
        gl.put_upload(gitlab.url, "../../etc/gitlab/gitlab.rb", b"x")


# --- Lifecycle: restart, kill, stop ---------------------------------------------------------


def test_rows_and_commits_survive_a_restart_and_a_kill(tmp_path: Path) -> None:
    with standin() as side:
        gl.psql(side.container, "CREATE TABLE drill_rows (id bigint PRIMARY KEY, note text)")
        gl.psql(
            side.container,
            "INSERT INTO drill_rows SELECT n, 'row ' || n FROM generate_series(1, 1000) AS n",
        )
        sha = gl.push_commit(side.url, "group/survivor", tmp_path / "writer")
        secrets = side.check("sha256sum", "/etc/gitlab/gitlab-secrets.json")

        side.container.restart(timeout=30)
        side.wait_ready()
        assert gl.count_rows(side.container, "drill_rows") == 1000
        assert gl.ls_remote(side.url, "group/survivor")["refs/heads/main"] == sha
        assert side.check("sha256sum", "/etc/gitlab/gitlab-secrets.json") == secrets

        gl.psql(side.container, "INSERT INTO drill_rows VALUES (1001, 'after restart')")
        side.container.kill("SIGKILL")
        side.container.start()
        side.wait_ready()
        assert gl.count_rows(side.container, "drill_rows") == 1001
        assert gl.fsck(side.container, "group/survivor").ok
        assert "database system was interrupted" in side.logs("postgresql")


def test_docker_stop_shuts_postgresql_down_fast_and_exits_0() -> None:
    with standin() as side:
        gl.psql(side.container, "CREATE TABLE t AS SELECT 1 AS one")
        started = time.monotonic()
        side.container.stop(timeout=30)
        took = time.monotonic() - started
        state = side.container.attrs["State"]
        assert state["ExitCode"] == 0, state
        assert took < 10, f"docker stop took {took:.1f} s"

        side.container.start()
        side.wait_ready()
        log = side.logs("postgresql")
        assert "received fast shutdown request" in log
        assert "database system is shut down" in log
        assert "database system was interrupted" not in log
        assert gl.count_rows(side.container, "t") == 1


def test_wal_archiving_is_switched_on_through_gitlab_omnibus_config() -> None:
    archive = "/var/opt/gitlab/postgresql/wal-archive"
    config = "\n".join(
        [
            "external_url 'http://gitlab.example.com'",
            "# postgresql['archive_mode'] = 'off'",
            "postgresql['archive_mode'] = 'on'",
            f"postgresql['archive_command'] = 'mkdir -p {archive} && "
            f"test ! -f {archive}/%f && cp %p {archive}/%f'",
            "postgresql['archive_timeout'] = 60",
        ]
    )
    with standin({"GITLAB_OMNIBUS_CONFIG": config}) as side:
        show = gl.psql(
            side.container,
            "SELECT current_setting('archive_mode') || ' ' || "
            "current_setting('archive_timeout') || ' ' || current_setting('wal_level')",
        )
        assert show.strip() == "on 1min replica"
        gl.psql(side.container, "CREATE TABLE a AS SELECT generate_series(1, 100) AS n")
        segment = gl.psql(side.container, "SELECT pg_walfile_name(pg_current_wal_lsn())").strip()
        gl.psql(side.container, "SELECT pg_switch_wal()")
        wait_until(
            lambda: side.run("test", "-f", f"{archive}/{segment}").ok,
            timeout=20,
            what=f"{segment} archived",
            interval=0.2,
        )
        assert side.check("stat", "-c", "%U", f"{archive}/{segment}").strip() == "gitlab-psql"
