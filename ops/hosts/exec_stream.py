"""An exec's stream for :meth:`ops.hosts.engine.Engine.exec`, hijacked as the docker CLI does.

``POST /exec/ID/start`` with ``Upgrade: tcp`` is written on a connection of its own to the
relay's socket, or to the engine's own (:func:`start_exec`); :func:`exchange` then feeds stdin
and ends it (a half-close), while it reads the engine's multiplexed frames into stdout and
stderr apart.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import struct
import threading
import time

import docker.errors

_FRAME = struct.Struct(">BxxxL")


def start_exec(
    socket_path: str, api_version: str, exec_id: str, deadline: float
) -> tuple[socket.socket, bytes]:
    """Start an exec on the engine at ``socket_path`` (the relay's, or the engine's own),
    hijacked as the docker CLI does: the stream's socket and what came with the answer's head."""
    if not re.fullmatch(r"[0-9a-f]{1,128}", exec_id):
        raise docker.errors.DockerException(f"unexpected exec id {exec_id!r}")
    body = json.dumps({"Detach": False, "Tty": False}).encode()
    request = (
        f"POST /v{api_version}/exec/{exec_id}/start HTTP/1.1\r\n"
        "Host: docker\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: Upgrade\r\n"
        "Upgrade: tcp\r\n\r\n"
    ).encode() + body
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        sock.connect(socket_path)
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the connection closed before the engine answered")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if not re.match(r"HTTP/1\.[01] (101|200)\b", status):
            with contextlib.suppress(ValueError, AttributeError):
                status = str(json.loads(rest)["message"])
            raise docker.errors.DockerException(f"the engine refused to start it: {status}")
    except BaseException:
        sock.close()
        raise
    return sock, rest


def exchange(
    sock: socket.socket, received: bytes, stdin: bytes | None, deadline: float
) -> tuple[bytes, bytes]:
    """Feed ``stdin`` (then end it) while reading the command's multiplexed stdout and stderr."""

    def feed(data: bytes) -> None:
        with contextlib.suppress(OSError):  # a command may exit before reading it all
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

    writer = None
    if stdin is not None:
        writer = threading.Thread(target=feed, args=(stdin,), name="exec-stdin", daemon=True)
        writer.start()
    buffer = bytearray(received)
    out, err = io.BytesIO(), io.BytesIO()

    def fill(size: int) -> bool:
        while len(buffer) < size:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(1 << 16)
            if not chunk:
                return False
            buffer.extend(chunk)
        return True

    while fill(_FRAME.size):
        stream, size = _FRAME.unpack_from(buffer)
        if not fill(_FRAME.size + size):
            break
        (err if stream == 2 else out).write(buffer[_FRAME.size : _FRAME.size + size])
        del buffer[: _FRAME.size + size]
    if writer is not None:
        writer.join(timeout=1)
    return out.getvalue(), err.getvalue()
