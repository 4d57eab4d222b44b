"""The sandbox's Elastic IP: where a client lands, decided from a snapshot of the pair."""

from __future__ import annotations

import dataclasses

from ops.aws.inventory import ElasticIp, PairState
from ops.rehearsal.forwarder import choose
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
