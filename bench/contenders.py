"""How each contender is run and read: bare rsync, our sidecar's settings, lsyncd, the logs."""

from __future__ import annotations

import datetime as dt
import re
from typing import NamedTuple

from bench.cluster import SSH, SSH_OPTIONS, Box


def bare_rsync() -> list[str]:
    """Bare rsync of the master's tree to the plain slave, as the seed ran it."""
    return ["rsync", "-a", "--delete", "-e", SSH, "/source/", "plain-slave:/replica/"]


def ours_config(master: Box) -> str:
    """Our sidecar's settings as the report prints them: its tunables and the SSH options."""
    tunables = master.sh("cat /state/tunables.json")
    return f"gitlab-rsync sidecar defaults {tunables.strip()}; ssh {SSH_OPTIONS}"


def lsyncd_config(delay: int) -> str:
    """lsyncd's rsync-over-SSH mode as its manual configures it, on our transport."""
    options = dict(
        re.findall(r"-o (\w+)=(\S+)", SSH_OPTIONS.replace("/run/bench-ssh", "/run/lsyncd-ssh"))
    )
    lua_options = ", ".join(f'{k} = "{v}"' for k, v in options.items())
    return (
        "settings {\n"
        '  logfile = "/tmp/lsyncd.log",\n'
        '  statusFile = "/tmp/lsyncd.status",\n'
        "  nodaemon = true,\n"
        "  insist = true,\n"
        "}\n"
        "sync {\n"
        "  default.rsyncssh,\n"
        '  source = "/source",\n'
        '  host = "root@plain-slave",\n'
        '  targetdir = "/replica",\n'
        f"  delay = {delay},\n"
        "  rsync = { archive = true },\n"
        '  ssh = { identityFile = "/root/.ssh/id_ed25519", port = 2222,\n'
        f"          options = {{ {lua_options} }} }},\n"
        "}\n"
    )


_PASS_LINE = re.compile(
    r"pass (\S+) \(([^)]*)\) (\w+) in ([\d.]+) s(?:, (full|change)\b)?[,:]? ?(.*)$", re.MULTILINE
)


class Pass(NamedTuple):
    """One pass as the master logged it: what started it (``change``, ``timer``, ``manual``),
    how it ended, how long it took, its kind (``full`` or ``change``: "" from a sidecar older
    than change-list passes) and the rest of the line."""

    id: str
    trigger: str
    outcome: str
    seconds: float
    kind: str
    note: str


def logged_passes(log: str) -> list[Pass]:
    """Each pass the master logged, in order."""
    return [
        Pass(m[1], m[2], m[3], float(m[4]), m[5] or "", m[6].strip())
        for m in _PASS_LINE.finditer(log)
    ]


def passed_since(master: Box, since: dt.datetime) -> bool:
    """A pass the daemon started after ``since`` has ended."""
    status = master.status()
    last = status.get("last_pass") or {}
    began = str(last.get("started_at") or "")
    return (
        bool(began) and dt.datetime.fromisoformat(began) >= since and not status.get("in_progress")
    )
