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
``--status FILE`` as JSON. ``--also registry=127.0.0.1:PORT`` forwards another of the
instance's services (the container registry) from a second port: one read of AWS each poll
serves every port (:func:`refresh`), so the ports always agree on where clients go.

A pair without an Elastic IP (``USE_ELASTIC_IP=false``, the sandbox's ``SANDBOX_DNS=name``) is
found by its Route 53 record, which promotion moves: the forwarder then stands in for that name
and follows the record instead, to the instance whose address it holds.
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ops.aws import client as aws
from ops.aws import dns, inventory
from ops.aws.inventory import OPEN_GROUP, SLAVE_GROUP, PairState
from ops.errors import OpsError, SettingError
from ops.hosts.ssh import parse_host
from ops.settings import Settings

PORTS = {
    "http": "gitlab_http_port",
    "ssh": "gitlab_ssh_port",
    "registry": "gitlab_registry_port",
}
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


def choose(
    settings: Settings,
    state: PairState,
    service: str = "http",
    record: tuple[str, ...] | None = None,
) -> Decision:
    """Where a client of the Elastic IP lands now, from AWS's view of the pair (pure).

    With ``record`` (the values of GitLab's A record, for a pair without an Elastic IP that
    clients find by name), where a client of that name lands: the instance whose private or
    public address the record names.
    """
    if record is not None:
        return _by_record(settings, state, service, record)
    eip = state.elastic_ip
    if eip is None:
        return Decision(None, None, None, f"no Elastic IP tagged Project={state.project}")
    iid = eip.instance_id
    if iid is None:
        return Decision(None, None, None, f"the Elastic IP {eip.public_ip} is not associated")
    return _to(settings, state, service, iid, f"holds the Elastic IP {eip.public_ip}")


def _by_record(
    settings: Settings, state: PairState, service: str, record: tuple[str, ...]
) -> Decision:
    name = dns.record_name(settings)
    if not record:
        return Decision(None, None, None, f"no A record {name}")
    ip = record[0]
    holder = next((h for h in state.hosts if ip in {h.private_ip, h.public_ip}), None)
    if holder is None:
        return Decision(None, None, None, f"{name} points at {ip}, no instance of the project")
    return _to(settings, state, service, holder.instance_id, f"is what {name} ({ip}) names")


def _to(settings: Settings, state: PairState, service: str, iid: str, why: str) -> Decision:
    """To instance ``iid``'s port for ``service``, unless it is closed to clients."""
    closed = _closed(state, iid)
    text = settings.instance_address(iid)
    if not closed and not text:
        closed = f"INSTANCE_HOSTS does not name {iid}"
    if closed:
        return Decision(iid, None, None, closed)
    address = parse_host("holder", text, "client", f"INSTANCE_HOSTS: {iid}").address
    port = int(getattr(settings.for_instance(iid), PORTS[service]))
    role = next(h.role for h in state.hosts if h.instance_id == iid)
    return Decision(iid, address, port, f"{role} {iid} {why}")


class Forwarder:
    """One listening socket's handler and the decision :func:`poll` keeps current for it."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        status_file: Path | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.service = service
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


async def refresh(
    forwarders: Sequence[Forwarder],
    describe: Callable[[], PairState],
    log: Callable[[str], None],
    record: Callable[[], tuple[str, ...]] | None = None,
    failing: str = "",
) -> str:
    """One read of AWS (and of GitLab's A record, when clients go by name) for all the
    listeners, each given its decision; a failed read keeps the last ones and is logged unless
    it is ``failing`` again. Returns the failure now ("" when the read worked)."""
    try:
        state = await asyncio.to_thread(describe)
        named = await asyncio.to_thread(record) if record else None
    except OpsError as exc:
        if str(exc) != failing:
            log(f"{time.strftime('%H:%M:%S')} cannot read AWS: {exc}")
        return str(exc)
    for forwarder in forwarders:
        forwarder.update(choose(forwarder.settings, state, forwarder.service, named))
    return ""


async def poll(
    forwarders: Sequence[Forwarder],
    describe: Callable[[], PairState],
    interval: float,
    log: Callable[[str], None],
    record: Callable[[], tuple[str, ...]] | None = None,
) -> None:
    """:func:`refresh` every ``interval`` seconds until cancelled."""
    failing = ""
    while True:
        failing = await refresh(forwarders, describe, log, record, failing)
        await asyncio.sleep(interval)


async def serve(
    listeners: Sequence[tuple[Forwarder, str, int]],
    describe: Callable[[], PairState],
    interval: float,
    log: Callable[[str], None],
    record: Callable[[], tuple[str, ...]] | None = None,
) -> None:
    """Listen on each ``(forwarder, host, port)`` and poll AWS for them all until stopped."""
    servers = [
        await asyncio.start_server(f.handle, h, p, reuse_address=True) for f, h, p in listeners
    ]
    forwarders = [f for f, _h, _p in listeners]
    poller = asyncio.create_task(poll(forwarders, describe, interval, log, record))
    for f, h, p in listeners:
        log(f"{time.strftime('%H:%M:%S')} {f.service}: listening on {h}:{p}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        await stop.wait()
    poller.cancel()


def parse_also(words: list[str]) -> list[tuple[str, str, int]]:
    """``SERVICE=HOST:PORT`` words: (service, host, port); SettingError for a bad one."""
    out = []
    for word in words:
        service, _, listen = word.partition("=")
        host, _, port = listen.rpartition(":")
        if service not in PORTS or not port.isdigit():
            raise SettingError(
                f"--also {word!r}: expected SERVICE=HOST:PORT, SERVICE one of "
                f"{', '.join(sorted(PORTS))}"
            )
        out.append((service, host or "127.0.0.1", int(port)))
    return out


def _record_reader(settings: Settings) -> Callable[[], tuple[str, ...]] | None:
    """What GitLab's A record holds, for a pair without an Elastic IP found by name (None
    otherwise: the forwarder follows the Elastic IP)."""
    if settings.use_elastic_ip or not settings.dns_zone:
        return None
    route53 = aws.route53_client(settings)
    zone, name = dns.find_zone(settings, route53), dns.record_name(settings)

    def read() -> tuple[str, ...]:
        return dns.read_record(route53, zone, name).values

    return read


def main(argv: list[str] | None = None) -> int:
    """``python -m ops.rehearsal.forwarder --listen 127.0.0.1:PORT`` (settings from ENV_FILE)."""
    from ops import settings as settings_mod

    parser = argparse.ArgumentParser(prog="python -m ops.rehearsal.forwarder", description=__doc__)
    parser.add_argument("--listen", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--service", choices=sorted(PORTS), default="http")
    # 0.2 s: a moved Elastic IP is seen 0.1 s after the move on average (promotion's RTO waits
    # for it), for describe_pair's three calls to moto (~30 ms in all) five times a second for
    # each forwarded service.
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between AWS reads")
    parser.add_argument("--status", type=Path, help="file the current decision is written to")
    parser.add_argument("--sandbox", default="", help="the sandbox this belongs to (for ps)")
    parser.add_argument(
        "--also", action="append", default=[], help="SERVICE=HOST:PORT, another service's port"
    )
    args = parser.parse_args(argv)
    host, _, port = str(args.listen).rpartition(":")
    try:
        extra = parse_also(args.also)
        settings = settings_mod.load()
        ec2 = aws.ec2_client(settings)
        record = _record_reader(settings)
    except OpsError as exc:
        print(f"forwarder: error: {exc}", file=sys.stderr)
        return 2

    def describe() -> PairState:
        return inventory.describe_pair(settings, ec2)

    def log(line: str) -> None:
        print(line, flush=True)

    listeners = [
        (Forwarder(settings, args.service, args.status, log), host or "127.0.0.1", int(port)),
        *((Forwarder(settings, s, None, log), h, p) for s, h, p in extra),
    ]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(listeners, describe, args.poll, log, record))
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
