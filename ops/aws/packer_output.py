"""Packer's machine-readable output, read: one line per message, ``timestamp,target,type,
data...``, commas inside data written ``%!(PACKER_COMMA)`` and newlines ``\\n``. Pure functions:
the messages, the progress lines for a person, the artifact's ids, the last error, the version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    """One machine-readable line: ``timestamp,target,type,data...`` with data unescaped."""

    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]


_MACHINE_LINE = re.compile(r"^(\d+),([^,]*),([^,]+)(?:,(.*))?$")


def unescape(field: str) -> str:
    """Undo Packer's escaping of one data field: ``%!(PACKER_COMMA)``, ``\\n`` and ``\\r``."""
    return field.replace("\\n", "\n").replace("\\r", "\r").replace("%!(PACKER_COMMA)", ",")


def parse_line(line: str) -> Message | None:
    """The message on one line of ``packer -machine-readable`` output; None for other text."""
    match = _MACHINE_LINE.match(line.rstrip("\r\n"))
    if not match:
        return None
    raw = match.group(4)
    data = tuple(unescape(f) for f in raw.split(",")) if raw is not None else ()
    return Message(int(match.group(1)), match.group(2), match.group(3), data)


def progress_lines(message: Message) -> list[str]:
    """What a person should see of a message: the text of ``ui`` say, message and error."""
    if message.type != "ui" or len(message.data) < 2:
        return []
    if message.data[0] not in {"say", "message", "error"}:
        return []
    text = ",".join(message.data[1:])
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def artifact_ids(messages: Iterable[Message]) -> dict[str, str]:
    """Region → AMI id, from the ``artifact,N,id,<region>:<ami>[,<region>:<ami>...]`` lines."""
    found: dict[str, str] = {}
    for message in messages:
        if message.type != "artifact" or len(message.data) < 3 or message.data[1] != "id":
            continue
        for item in ",".join(message.data[2:]).split(","):
            region, sep, ami = item.strip().partition(":")
            if sep and ami.startswith("ami-"):
                found[region] = ami
    return found


def one_line(text: str, limit: int = 500) -> str:
    """``text`` on one line: runs of whitespace become one space; cut at ``limit``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


_PREFIX = re.compile(r"^(?:==>|-->)\s+\S+:\s+")


def last_error(messages: Sequence[Message], other_lines: Sequence[str] = ()) -> str:
    """Packer's last error as one line: a build's ``error`` line, else the last ``ui,error``,
    else the last line Packer wrote that was not machine-readable (a crash)."""
    for message in reversed(messages):
        if message.type == "error" and message.data and message.data[0].strip():
            return one_line(message.data[0])
    for message in reversed(messages):
        if message.type == "ui" and len(message.data) >= 2 and message.data[0] == "error":
            text = ",".join(message.data[1:]).strip()
            if text and not text.startswith("==> Some builds didn't complete"):
                return one_line(_PREFIX.sub("", text))
    for line in reversed(other_lines):
        if line.strip():
            return one_line(line)
    return ""


def packer_version(messages: Iterable[Message]) -> tuple[int, int, int] | None:
    """The version in ``packer -machine-readable version`` output (``version,1.11.2``)."""
    for message in messages:
        if message.type == "version" and message.data:
            match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", message.data[0])
            if match:
                return int(match.group(1)), int(match.group(2)), int(match.group(3))
    return None
