"""A client through the relay keeps one connection alive across calls to different endpoints.

Each connection to a relay is a new ssh and ``docker system dial-stdio`` on the host (0.05-0.3 s
in the sandbox), so a client that opens one per endpoint, as the SDK's own adapter does, pays
that on every call. Here each connection is handed to a small HTTP/1.1 server (Python, on its
stdin and stdout) that writes a line to a file when it starts: the file counts the connections.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ops.hosts.relay import Relay, SSHDockerClient
from ops.hosts.ssh import Host

ENGINE = r"""
import json, sys
with open(sys.argv[1], "a") as log:
    log.write("connection\n")
read, write = sys.stdin.buffer, sys.stdout.buffer
while True:
    line = read.readline()
    if not line:
        break
    path = line.split()[1].decode()
    length = 0
    while (header := read.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    read.read(length)
    body = b"OK" if path.endswith("/_ping") else (b"[]" if "/json?" in path else b"{}")
    kind = b"text/plain" if body == b"OK" else b"application/json"
    write.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)
    write.flush()
"""


def test_calls_to_different_endpoints_share_one_kept_alive_connection(tmp_path: Path) -> None:
    connections = tmp_path / "connections"
    relay = Relay([sys.executable, "-c", ENGINE, str(connections)], poll=0.05)
    client = SSHDockerClient(Host("slave", "127.0.0.1", 22, "admin"), relay, "1.43", 10)
    try:
        assert client.api.ping() is True
        assert client.api.version() == {}
        assert client.api.containers(all=True) == []
        assert client.api.inspect_container("gitlab") == {}
        client.api.start("gitlab")
        assert client.api.inspect_container("gitlab-rsync") == {}
    finally:
        client.close()
    assert connections.read_text().splitlines() == ["connection"]
