"""The sandbox's Elastic IP: a TCP forwarder to whichever instance holds it in AWS (moto).

In AWS, clients reach GitLab at the Elastic IP, which promotion moves to the new master, and a
host in the ``gitlab-slave`` security group is closed to them. The sandbox has no such address,
so this process stands in for it: it listens on a local port, reads the pair from AWS every
``poll`` seconds (:func:`ops.inventory.describe_pair`, the same call ``inv status`` makes) and
sends each new connection to the holder's GitLab port, at the address INSTANCE_HOSTS gives the
instance and the port its settings (INSTANCE_OVERRIDES) give it. When nobody may be reached
(no holder, a holder closed to clients, an instance not in INSTANCE_HOSTS) a client's
connection is reset at once. :func:`choose` decides, from a snapshot; it is pure.

Run as ``python -m ops.rehearsal.forwarder --listen 127.0.0.1:PORT`` with the settings in
``ENV_FILE``; it logs one line each time its decision changes and writes it to
``--status FILE`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ops.aws import client as aws
from ops.aws import inventory
from ops.aws.inventory import OPEN_GROUP, SLAVE_GROUP, PairState
from ops.errors import OpsError
from ops.hosts.ssh import parse_host
from ops.settings import Settings

PORTS = {"http": "gitlab_http_port", "ssh": "gitlab_ssh_port"}
"""Which of an instance's settings gives the port a forwarded service lands on."""

CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Decision:
    """Where new connections go (``address``/``port``), or why they are refused (``reason``)."""

    instance_id: str | None
    address: str | None
    port: int | None
    reason: str

    @property
    def open(self) -> bool:
        return self.address is not None and self.port is not None

    def text(self) -> str:
        if self.open:
            return f"forwarding to {self.instance_id} at {self.address}:{self.port} ({self.reason})"
        return f"refusing clients: {self.reason}"


def _closed(state: PairState, instance_id: str) -> str:
    """Why the instance holding the Elastic IP is closed to clients, or ``""`` if it is open."""
    holder = next((h for h in state.hosts if h.instance_id == instance_id), None)
    if holder is None:
        return f"{instance_id} is not an instance of the project"
    if holder.state != "running":
        return f"{instance_id} is {holder.state}"
    if SLAVE_GROUP in holder.security_groups or OPEN_GROUP not in holder.security_groups:
        groups = ", ".join(holder.security_groups) or "no group"
        return f"{instance_id} is closed to clients (in {groups})"
    return ""


def choose(settings: Settings, state: PairState, service: str = "http") -> Decision:
    """Where a client of the Elastic IP lands now, from AWS's view of the pair (pure)."""
    eip = state.elastic_ip
    if eip is None:
        return Decision(None, None, None, f"no Elastic IP tagged Project={state.project}")
    iid = eip.instance_id
    if iid is None:
        return Decision(None, None, None, f"the Elastic IP {eip.public_ip} is not associated")
    closed = _closed(state, iid)
    text = settings.instance_address(iid)
    if not closed and not text:
        closed = f"INSTANCE_HOSTS does not name {iid}"
    if closed:
        return Decision(iid, None, None, closed)
    address = parse_host("holder", text, "client", f"INSTANCE_HOSTS: {iid}").address
    port = int(getattr(settings.for_instance(iid), PORTS[service]))
    role = next(h.role for h in state.hosts if h.instance_id == iid)
    return Decision(iid, address, port, f"{role} {iid} holds the Elastic IP {eip.public_ip}")


class Forwarder:
    """The listening socket's handler and the poller that keeps :attr:`decision` current."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        describe: Callable[[], PairState],
        status_file: Path | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.service = service
        self.describe = describe
        self.status_file = status_file
        self.log = log
        self.decision = Decision(None, None, None, "AWS not read yet")

    def update(self, decision: Decision) -> None:
        """Take a new decision; log and record it when it changed."""
        if decision == self.decision:
            return
        self.decision = decision
        self.log(f"{time.strftime('%H:%M:%S')} {decision.text()}")
        if self.status_file is not None:
            tmp = self.status_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({**asdict(decision), "open": decision.open}) + "\n")
            tmp.replace(self.status_file)

    async def poll(self, interval: float) -> None:
        """Read AWS every ``interval`` seconds; a failed read keeps the last decision."""
        failing = ""
        while True:
            try:
                state = await asyncio.to_thread(self.describe)
                self.update(choose(self.settings, state, self.service))
                failing = ""
            except OpsError as exc:
                if str(exc) != failing:
                    self.log(f"{time.strftime('%H:%M:%S')} cannot read AWS: {exc}")
                    failing = str(exc)
            await asyncio.sleep(interval)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client: reset it, or join it to the holder's port."""
        decision = self.decision
        if decision.address is None or decision.port is None:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(decision.address, decision.port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            _reset(writer)
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        for w in (writer, up_writer):
            w.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a client's connection with a reset (SO_LINGER 0), as a closed port would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def serve(forwarder: Forwarder, host: str, port: int, interval: float) -> None:
    """Listen on ``host:port`` and poll AWS until cancelled."""
    server = await asyncio.start_server(forwarder.handle, host, port, reuse_address=True)
    poller = asyncio.create_task(forwarder.poll(interval))
    forwarder.log(f"{time.strftime('%H:%M:%S')} listening on {host}:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    poller.cancel()


def main(argv: list[str] | None = None) -> int:
    """``python -m ops.rehearsal.forwarder --listen 127.0.0.1:PORT`` (settings from ENV_FILE)."""
    from ops import settings as settings_mod

    parser = argparse.ArgumentParser(prog="python -m ops.rehearsal.forwarder", description=__doc__)
    parser.add_argument("--listen", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--service", choices=sorted(PORTS), default="http")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between AWS reads")
    parser.add_argument("--status", type=Path, help="file the current decision is written to")
    parser.add_argument("--sandbox", default="", help="the sandbox this belongs to (for ps)")
    args = parser.parse_args(argv)
    host, _, port = str(args.listen).rpartition(":")
    try:
        settings = settings_mod.load()
        ec2 = aws.ec2_client(settings)
    except OpsError as exc:
        print(f"forwarder: error: {exc}", file=sys.stderr)
        return 2

    def describe() -> PairState:
        return inventory.describe_pair(settings, ec2)

    def log(line: str) -> None:
        print(line, flush=True)

    forwarder = Forwarder(settings, args.service, describe, args.status, log)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(forwarder, host or "127.0.0.1", int(port), args.poll))
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
