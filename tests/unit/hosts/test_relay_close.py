"""The relay's close is immediate: its listening thread is woken, not waited out (a promotion
closes engines on its path), and the relay still serves and reaps between polls."""

from __future__ import annotations

import socket
import time

from ops.hosts.relay import Relay


def test_close_does_not_wait_for_the_listeners_poll() -> None:
    relay = Relay(["cat"], poll=30)
    started = time.monotonic()
    relay.close()
    assert time.monotonic() - started < 1
    assert not relay._thread.is_alive()
    relay.close()  # twice: nothing more to do


def test_each_connection_is_handed_to_its_own_process_and_closed_ones_reaped() -> None:
    relay = Relay(["cat"], poll=0.05)  # cat: the connection is its stdin and stdout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(relay.path)
            conn.sendall(b"ping")
            assert conn.recv(4) == b"ping"
        deadline = time.monotonic() + 10
        while relay._children and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay._children == []
    finally:
        relay.close()
