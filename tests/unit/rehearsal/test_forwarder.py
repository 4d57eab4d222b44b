"""The sandbox's Elastic IP: where a client lands, decided from a snapshot of the pair."""

from __future__ import annotations

import asyncio
import dataclasses

from ops.aws.inventory import ElasticIp, PairState
from ops.errors import OpsError
from ops.rehearsal.forwarder import Forwarder, choose, refresh
from tests.unit.pairs import SANDBOX, A, B, pair, settings_of

SETTINGS = settings_of(
    **{
        **SANDBOX,
        "INSTANCE_OVERRIDES": SANDBOX["INSTANCE_OVERRIDES"]
        + f" {A}:GITLAB_HTTP_PORT=41001 {B}:GITLAB_HTTP_PORT=41002 {B}:GITLAB_SSH_PORT=42002",
    }
)


def _with_eip(state: PairState, *eips: ElasticIp) -> PairState:
    return dataclasses.replace(state, elastic_ips=eips)


def test_clients_go_to_the_holders_http_port_at_its_instance_address() -> None:
    decision = choose(SETTINGS, pair(master=A, slave=B, holder=A))
    assert (decision.instance_id, decision.address, decision.port) == (A, "127.0.0.1", 41001)
    assert decision.open
    assert decision.text().startswith(f"forwarding to {A} at 127.0.0.1:41001")


def test_after_a_promotion_clients_follow_the_elastic_ip_to_the_other_instance() -> None:
    decision = choose(SETTINGS, pair(master=B, slave=A, holder=B))
    assert (decision.instance_id, decision.port) == (B, 41002)
    assert choose(SETTINGS, pair(master=B, slave=A, holder=B), "ssh").port == 42002


def test_an_instance_in_gitlab_slave_is_refused_even_holding_the_elastic_ip() -> None:
    decision = choose(SETTINGS, pair(master=A, slave=B, holder=B))
    assert not decision.open
    assert decision.reason == f"{B} is closed to clients (in gitlab-slave)"
    assert decision.text() == f"refusing clients: {B} is closed to clients (in gitlab-slave)"


def test_no_elastic_ip_or_no_holder_or_unknown_holder_is_refused() -> None:
    state = pair(master=A, slave=B)
    assert choose(SETTINGS, _with_eip(state)).reason == "no Elastic IP tagged Project=gitlab-dr"
    assert choose(SETTINGS, state).reason == "the Elastic IP 198.51.100.7 is not associated"
    other = _with_eip(state, ElasticIp("eipalloc-1", "198.51.100.7", "i-0cccccccccccccccc"))
    assert choose(SETTINGS, other).reason == "i-0cccccccccccccccc is not an instance of the project"


def test_a_stopped_holder_or_one_missing_from_instance_hosts_is_refused() -> None:
    state = pair(master=A, slave=B, holder=A)
    stopped = dataclasses.replace(
        state,
        hosts=tuple(
            dataclasses.replace(h, state="stopped") if h.instance_id == A else h
            for h in state.hosts
        ),
    )
    assert choose(SETTINGS, stopped).reason == f"{A} is stopped"
    bare = settings_of(INSTANCE_HOSTS=f"{B}=127.0.0.1:32002")
    assert choose(bare, state).reason == f"INSTANCE_HOSTS does not name {A}"


def test_without_an_elastic_ip_clients_follow_the_record_to_the_instance_it_names() -> None:
    """SANDBOX_DNS=name: the record's address decides, and moves with it at promotion."""
    before = choose(SETTINGS, pair(master=A, slave=B), record=("10.0.0.1",))
    assert (before.instance_id, before.port) == (A, 41001)
    assert before.reason == f"master {A} is what gitlab.example.com (10.0.0.1) names"
    after = choose(SETTINGS, pair(master=B, slave=A), record=("10.0.0.2",))
    assert (after.instance_id, after.port) == (B, 41002)


def test_a_record_that_is_missing_names_no_instance_or_a_closed_one_is_refused() -> None:
    state = pair(master=A, slave=B)
    assert choose(SETTINGS, state, record=()).reason == "no A record gitlab.example.com"
    stray = choose(SETTINGS, state, record=("192.0.2.9",))
    assert stray.reason == "gitlab.example.com points at 192.0.2.9, no instance of the project"
    closed = choose(SETTINGS, state, record=("10.0.0.2",))
    assert not closed.open and closed.reason == f"{B} is closed to clients (in gitlab-slave)"


def test_one_read_of_aws_each_poll_serves_every_listener_and_a_failed_read_keeps_them() -> None:
    moved = pair(master=B, slave=A, holder=B)
    answers: list[PairState | OpsError] = [
        pair(master=A, slave=B, holder=A),
        OpsError("moto is down"),
        moved,
    ]
    reads: list[int] = []
    logged: list[str] = []

    def describe() -> PairState:
        reads.append(1)
        answer = answers[len(reads) - 1]
        if isinstance(answer, OpsError):
            raise answer
        return answer

    http = Forwarder(SETTINGS, "http", log=logged.append)
    ssh = Forwarder(SETTINGS, "ssh", log=logged.append)
    failing = asyncio.run(refresh([http, ssh], describe, logged.append))
    assert failing == "" and len(reads) == 1  # not once per listener
    failing = asyncio.run(refresh([http, ssh], describe, logged.append, failing=failing))
    assert failing == "moto is down" and len(reads) == 2
    assert http.decision.instance_id == ssh.decision.instance_id == A  # kept through the failure
    assert http.decision.port != ssh.decision.port
    assert any("cannot read AWS: moto is down" in line for line in logged)
    asyncio.run(refresh([http, ssh], describe, logged.append, failing=failing))
    assert http.decision.instance_id == ssh.decision.instance_id == B
