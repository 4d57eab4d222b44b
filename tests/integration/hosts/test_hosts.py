"""The ssh:// path for real: a local sshd in front of the Docker engine (images/sandbox-host)."""

from __future__ import annotations

import dataclasses
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ops.errors import HostError, SettingError
from ops.hosts.compose import compose, render_config
from ops.hosts.engine import ContainerNotRunning, Engine
from ops.hosts.relay import connect
from ops.hosts.ssh import Host, preflight
from ops.settings import Settings

if TYPE_CHECKING:  # the module is loaded as a plugin below, so pytest can rewrite its asserts
    from tests.integration.sshd_host import SshdHost, SshdHosts

pytestmark = pytest.mark.integration

STACK = Path(__file__).resolve().parent / "hosts-stack" / "docker-compose.yml"


def bound(host: SshdHost) -> float:
    """The time a preflight promises to fail within: SSH_CONNECT_TIMEOUT + the grace."""
    return host.settings.ssh_connect_timeout + 10


def failure(host: Host, settings: Settings, limit: float) -> str:
    """The preflight's error message, checked to be one line that names the host, within limit."""
    started = time.monotonic()
    with pytest.raises(HostError) as caught:
        preflight(host, settings)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{host} ") or message.startswith(f"{host}:")
    assert elapsed < limit, f"{elapsed:.1f}s: {message}"
    return message


@pytest.fixture
def engine(sshd_host: SshdHost) -> Iterator[Engine]:
    """The test stack's engine on a good host."""
    with Engine.open(sshd_host.host, sshd_host.settings, STACK) as opened:
        yield opened


@pytest.fixture(scope="module")
def deployed(module_sshd_hosts: SshdHosts) -> Iterator[Engine]:
    """The test stack deployed like a slave (app up, idle only created), shared by the module."""
    host = module_sshd_hosts.start("master")
    with Engine.open(host.host, host.settings, STACK) as opened:
        opened.up(["app"])
        opened.create(["idle"])
        yield opened


# --- connecting --------------------------------------------------------------------------------


def test_connect_runs_docker_version_over_ssh_with_the_test_key(sshd_host: SshdHost) -> None:
    client = connect(sshd_host.host, sshd_host.settings)
    try:
        version = client.version()
        relay_dir = Path(client.relay.path).parent
        assert stat.S_IMODE(relay_dir.stat().st_mode) == 0o700
    finally:
        client.close()
    assert version["ApiVersion"]
    assert "Accepted publickey for admin" in sshd_host.sshd_log()
    assert not relay_dir.exists()


def test_preflight_returns_the_engine_api_version(sshd_host: SshdHost) -> None:
    assert preflight(sshd_host.host, sshd_host.settings).startswith("1.")


# --- the stack ---------------------------------------------------------------------------------


def test_the_real_stack_renders_with_the_settings(sshd_hosts: SshdHosts) -> None:
    settings = dataclasses.replace(
        sshd_hosts.settings,
        gitlab_image="gitlab/gitlab-ce:17.8.1-ce.0",
        gitlab_home="/data/gitlab",
        sync_home="/data/sync",
        sync_port=2299,
        gitlab_http_port=8080,
        sync_image="gitlab-dr/gitlab-rsync:test",
    )
    rendered = render_config(settings)
    assert "image: gitlab/gitlab-ce:17.8.1-ce.0" in rendered
    assert "/data/gitlab/config:/etc/gitlab:rw" in rendered
    assert "/data/gitlab/data:/var/opt/gitlab:rw" in rendered
    assert "/data/gitlab:/source:ro" in rendered
    assert "/data/sync:/sync:rw" in rendered
    assert "published: 2299" in rendered
    assert "published: 8080" in rendered
    assert "image: gitlab-dr/gitlab-rsync:test" in rendered
    services = compose(settings, ["config", "--services"], timeout=60).split()
    assert sorted(services) == ["gitlab", "gitlab-rsync", "gitlab-verify"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in rendered  # gitlab-verify's alone
    assert rendered.count("docker.sock") == 2, rendered


def test_a_stack_file_the_settings_cannot_fill_is_a_one_line_error(
    sshd_hosts: SshdHosts, tmp_path: Path
) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  x:\n    image: ${NOT_A_SETTING:?set NOT_A_SETTING}\n")
    with pytest.raises(HostError, match=r"^local: docker-compose config failed: .*NOT_A_SETTING"):
        render_config(sshd_hosts.settings, broken)


def test_up_and_create_deploy_the_stack_found_by_compose_labels(deployed: Engine) -> None:
    states = {state.service: state for state in deployed.ps()}
    assert set(states) == {"app", "idle"}
    assert states["app"].state == "running"
    assert states["idle"].state == "created"  # like the slave's gitlab: made, not started
    container = deployed.container("app")
    assert container.labels["com.docker.compose.project"] == deployed.project
    assert container.labels["com.docker.compose.service"] == "app"
    assert deployed.wait_healthy("app", timeout=30, interval=0.2).health == "healthy"
    assert deployed.health("idle") is None


def test_up_again_changes_nothing(deployed: Engine) -> None:
    before = {state.service: state.id for state in deployed.ps()}
    deployed.up(["app"])
    deployed.create(["idle"])
    assert {state.service: state.id for state in deployed.ps()} == before
    assert deployed.state("idle").state == "created"


def test_containers_are_found_by_labels_not_by_name(
    deployed: Engine, module_sshd_hosts: SshdHosts
) -> None:
    # A container named like Compose's but outside the project is not taken for the service.
    decoy = module_sshd_hosts.client.containers.create(
        module_sshd_hosts.base,
        ["sleep", "infinity"],
        name=f"{deployed.project}_app_2",
        labels={"com.docker.compose.project": "someone-else", "com.docker.compose.service": "app"},
    )
    try:
        assert deployed.container("app").name == f"{deployed.project}_app_1"
        assert [state.service for state in deployed.ps()] == ["app", "idle"]
    finally:
        decoy.remove(force=True)


def test_a_service_with_no_container_is_a_one_line_error(engine: Engine) -> None:
    with pytest.raises(HostError, match=r"^master \(.*\): no container for service app"):
        engine.exec("app", ["true"])


def test_compose_failure_is_a_one_line_error_naming_the_host(engine: Engine) -> None:
    with pytest.raises(HostError, match=r"^master \(.*\): docker-compose up failed: .*nosuch"):
        engine.up(["nosuch"])


def test_a_service_that_cannot_start_is_an_error_saying_why(sshd_host: SshdHost) -> None:
    """Compose's own last line ("Encountered errors while bringing up the project.") says
    nothing; the error carries the cause from the line before it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        settings = dataclasses.replace(sshd_host.settings, sync_port=held.getsockname()[1])
        with Engine.open(sshd_host.host, settings, STACK) as engine:
            try:
                with pytest.raises(HostError) as caught:
                    engine.up(["published"])
            finally:
                compose(settings, ["down"], client=engine.client, compose_file=STACK)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{sshd_host.host}: docker-compose up failed: "), message
    assert "address already in use" in message, message


def test_up_refuses_to_start_every_service_by_default(engine: Engine) -> None:
    with pytest.raises(ValueError, match="name the services"):
        engine.up([])


def test_logs_returns_the_last_lines(deployed: Engine) -> None:
    deployed.wait_healthy("app", timeout=30, interval=0.2)
    assert deployed.logs("app", lines=2) == "line 4\nline 5\n"


# --- exec --------------------------------------------------------------------------------------


def test_exec_feeds_stdin_and_returns_exit_status_and_both_streams(deployed: Engine) -> None:
    result = deployed.exec(
        "app", ["sh", "-c", "cat; echo oops >&2; exit 3"], stdin=b"secret from stdin\n"
    )
    assert result == (3, b"secret from stdin\n", b"oops\n")


def test_exec_without_stdin(deployed: Engine) -> None:
    assert deployed.exec("app", ["cat", "/etc/debian_version"]).stdout.startswith(b"12.")


def test_exec_passes_words_not_a_shell_string(deployed: Engine) -> None:
    result = deployed.exec("app", ["echo", "$HOME; touch /tmp/pwned"])
    assert result.stdout == b"$HOME; touch /tmp/pwned\n"
    assert deployed.exec("app", ["test", "-e", "/tmp/pwned"]).exit_code == 1
    with pytest.raises(ValueError, match="not a shell string"):
        deployed.exec("app", "echo hi")


def test_exec_moves_megabytes_both_ways(deployed: Engine) -> None:
    data = bytes(range(256)) * 16384  # 4 MiB: more than any pipe holds, both ways at once
    result = deployed.exec("app", ["cat"], stdin=data)
    assert result.exit_code == 0
    assert result.stdout == data


def test_exec_in_a_container_not_started_says_it_is_not_running(deployed: Engine) -> None:
    with pytest.raises(ContainerNotRunning, match=r"exec true in idle failed: .*is not running"):
        deployed.exec("idle", ["true"])


def test_exec_past_its_timeout_is_a_one_line_error(deployed: Engine) -> None:
    started = time.monotonic()
    with pytest.raises(HostError, match=r"exec sleep in app still running after 1s"):
        deployed.exec("app", ["sleep", "60"], timeout=1)
    # The deadline was honoured: far sooner than the command's own 60 s, with room for a
    # loaded machine's slow exec set-up and teardown.
    assert time.monotonic() - started < 30


# --- two hosts ---------------------------------------------------------------------------------


def test_two_hosts_on_one_engine_keep_their_stacks_apart(sshd_hosts: SshdHosts) -> None:
    master, slave = sshd_hosts.start("master"), sshd_hosts.start("slave")
    assert master.settings.master_host == f"127.0.0.1:{master.port}"
    assert slave.settings.slave_host == f"127.0.0.1:{slave.port}"
    with (
        Engine.open(master.host, master.settings, STACK) as on_master,
        Engine.open(slave.host, slave.settings, STACK) as on_slave,
    ):
        on_master.up(["app"])
        on_slave.create(["app"])
        assert [(s.service, s.state) for s in on_master.ps()] == [("app", "running")]
        assert [(s.service, s.state) for s in on_slave.ps()] == [("app", "created")]
        assert on_master.container("app").id != on_slave.container("app").id
        assert on_master.exec("app", ["true"]).exit_code == 0


# --- each failure: one line, naming the host and what failed, within the bound ---------------


def test_unreachable_port_is_connection_refused(sshd_host: SshdHost) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    host = dataclasses.replace(sshd_host.host, port=closed_port)
    message = failure(host, sshd_host.settings, bound(sshd_host))
    assert "unreachable: connection refused" in message


def test_a_silent_host_is_unreachable_after_the_connect_timeout(sshd_host: SshdHost) -> None:
    settings = dataclasses.replace(sshd_host.settings, ssh_connect_timeout=2.0)
    with socket.socket() as silent:  # accepts TCP, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host = dataclasses.replace(sshd_host.host, port=silent.getsockname()[1])
        message = failure(host, settings, limit=2 + 3)
    assert "unreachable: no answer within 2s" in message


def test_a_key_the_host_does_not_accept_is_refused(sshd_host: SshdHost) -> None:
    stranger = sshd_host.new_key("stranger")
    settings = dataclasses.replace(sshd_host.settings, ssh_key_file=str(stranger))
    message = failure(sshd_host.host, settings, bound(sshd_host))
    assert f"SSH key refused: the host does not accept SSH_KEY_FILE ({stranger})" in message
    assert "for user admin" in message


def test_a_changed_host_key_is_refused(sshd_host: SshdHost) -> None:
    impostor = sshd_host.new_key("impostor_host")
    known = sshd_host.known_hosts_with(impostor, "known_hosts_changed")
    settings = dataclasses.replace(sshd_host.settings, ssh_known_hosts=str(known))
    message = failure(sshd_host.host, settings, bound(sshd_host))
    assert f"host key changed: the host's key is not the one SSH_KNOWN_HOSTS ({known})" in message


def test_an_unknown_host_key_is_refused(sshd_host: SshdHost) -> None:
    empty = sshd_host.workdir / "known_hosts_empty"
    empty.write_text("")
    settings = dataclasses.replace(sshd_host.settings, ssh_known_hosts=str(empty))
    message = failure(sshd_host.host, settings, bound(sshd_host))
    assert f"host key unknown: SSH_KNOWN_HOSTS ({empty}) has no key for this host" in message


def test_a_host_without_docker_says_so(sshd_hosts: SshdHosts) -> None:
    bare = sshd_hosts.start("slave", docker_on_host="absent")
    message = failure(bare.host, bare.settings, bound(bare))
    assert "no Docker: ssh works but `docker system dial-stdio` failed" in message
    assert message.endswith("docker: command not found")


def test_a_host_whose_engine_is_down_says_so(sshd_hosts: SshdHosts) -> None:
    stopped = sshd_hosts.start("slave", docker_on_host="no-engine")
    message = failure(stopped.host, stopped.settings, bound(stopped))
    assert "Docker engine not running: " in message
    assert "/var/run/docker.sock" in message


def test_a_missing_key_file_is_a_setting_error_before_any_ssh(sshd_host: SshdHost) -> None:
    settings = dataclasses.replace(sshd_host.settings, ssh_key_file="/nonexistent/id_ed25519")
    with pytest.raises(SettingError, match=r"^SSH_KEY_FILE names /nonexistent/id_ed25519"):
        preflight(sshd_host.host, settings)


def test_a_host_lost_after_connecting_is_a_one_line_error(
    engine: Engine, sshd_host: SshdHost
) -> None:
    assert engine.ps() == []
    sshd_host.container.remove(force=True)
    started = time.monotonic()
    with pytest.raises(HostError) as caught:
        engine.ps()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{sshd_host.host}: listing containers failed: unreachable")
    assert time.monotonic() - started < bound(sshd_host)
