"""The sidecar's Prometheus metrics: the text format on ``/metrics``, and a node_exporter textfile.

Every figure is read from the status files the daemon, the sender and the receiver already
write (``pairing.json``, ``daemon.json``, ``passes.json``, ``receiver.json``, the slave's snapshot
metadata) and from ``counters.json``, which the sender and the receiver bump when a pass ends
or a command fails (:func:`count`), so counters survive restarts. Reading takes no lock: a
scrape never waits on a pass, and never makes one wait. The replication lag is computed at
scrape time: now minus the start of the newest complete snapshot's pass (what the snapshot
holds is the tree as of then at the latest).

Standard library only: this module runs in the sidecar and is imported by ``ops``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitlab_sync.config import Log, Paths, Tunables, load_pairing, read_json, write_text
from gitlab_sync.snapshots import Area
from gitlab_sync.status import PassSummary, moment

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

PORT = 9187
"""The port ``/metrics`` listens on in the container (Compose publishes it as METRICS_PORT)."""
PREFIX = "gitlab_dr_"
TEXTFILE = "gitlab_dr.prom"
"""The file's name in METRICS_TEXTFILE_DIR (node_exporter reads ``*.prom``)."""
ALIVE_WITHIN = 10.0
"""A daemon heartbeat older than this is a dead daemon (as ``gitlab-sync health`` has it)."""
ROLES = ("master", "slave", "none")
OUTCOMES = ("ok", "failed", "stopped")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# --- the exposition ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class Family:
    """One metric: its name (without the prefix), type, help, and samples."""

    name: str
    kind: str  # gauge or counter
    help: str
    samples: tuple[Sample, ...] = field(default_factory=tuple)


def escape_label(value: str) -> str:
    """A label value as the text format takes it: backslash, double quote, newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A HELP text as the text format takes it: backslash and newline escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    """A sample value: integers without a fraction, NaN and infinities as Prometheus spells them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)


def render(families: Iterable[Family]) -> str:
    """The families in Prometheus' text format (0.0.4): HELP, TYPE, then the samples."""
    lines: list[str] = []
    for family in families:
        name = PREFIX + family.name
        lines.append(f"# HELP {name} {escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in sample.labels)
            series = f"{name}{{{labels}}}" if labels else name
            lines.append(f"{series} {number(sample.value)}")
    return "\n".join(lines) + "\n"


def gauge(name: str, help: str, value: float | None, **labels: str) -> Family:
    """A gauge with one sample (none when ``value`` is None: unknown is absent, not 0)."""
    samples = () if value is None else (Sample(tuple(labels.items()), float(value)),)
    return Family(name, "gauge", help, samples)


def stateset(name: str, help: str, label: str, states: Sequence[str], current: str) -> Family:
    """One sample per state, 1 for the current one (an info-style gauge with a label)."""
    samples = tuple(Sample(((label, s),), 1.0 if s == current else 0.0) for s in states)
    return Family(name, "gauge", help, samples)


# --- counters that survive restarts --------------------------------------------------------------

Labels = tuple[tuple[str, str], ...]


def counters_path(paths: Paths) -> Path:
    return paths.state / "counters.json"


def read_counters(paths: Paths) -> dict[str, dict[Labels, float]]:
    """``counters.json``: name -> labels -> value. Written whole by a rename: read without lock."""
    try:
        data = read_json(counters_path(paths))
    except ValueError:
        return {}
    out: dict[str, dict[Labels, float]] = {}
    for name, series in (data or {}).items() if isinstance(data, dict) else ():
        for item in series if isinstance(series, list) else ():
            labels, value = item.get("labels"), item.get("value")
            if isinstance(labels, dict) and isinstance(value, int | float):
                key = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
                out.setdefault(str(name), {})[key] = float(value)
    return out


def count(paths: Paths, name: str, step: float = 1.0, **labels: str) -> None:
    """Add ``step`` to counter ``name`` with ``labels`` in ``counters.json``, one writer at a
    time (its own lock: never the pass's)."""
    paths.state.mkdir(parents=True, exist_ok=True)
    with open(paths.state / "counters.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        data = read_counters(paths)
        key = tuple(sorted(labels.items()))
        data.setdefault(name, {})[key] = data.get(name, {}).get(key, 0.0) + step
        saved = {
            n: [{"labels": dict(k), "value": v} for k, v in sorted(series.items())]
            for n, series in sorted(data.items())
        }
        write_text(counters_path(paths), json.dumps(saved, indent=1) + "\n", mode=0o644)


def count_pass(
    paths: Paths, trigger: str, outcome: str, files_sent: int, bytes_sent: int, kind: str = ""
) -> None:
    """What the master counts when a pass ends: the pass (``kind``: full, change, or "" when it
    failed before choosing), and what it sent."""
    labels = {"trigger": trigger, "outcome": outcome, **({"kind": kind} if kind else {})}
    count(paths, "passes_total", 1.0, **labels)
    if files_sent:
        count(paths, "sent_files_total", float(files_sent))
    if bytes_sent:
        count(paths, "sent_bytes_total", float(bytes_sent))


def counter(
    counters: Mapping[str, Mapping[Labels, float]], name: str, help: str, zero: bool = True
) -> Family:
    """Counter ``name`` from ``counters.json`` (a 0 sample before any, when ``zero``)."""
    series = counters.get(name, {})
    samples = tuple(Sample(labels, value) for labels, value in sorted(series.items()))
    return Family(name, "counter", help, samples or ((Sample((), 0.0),) if zero else ()))


# --- what a sidecar exports ----------------------------------------------------------------------


def _seconds(text: str | None) -> float | None:
    when = moment(text or "")
    return when.timestamp() if when else None


def daemon_alive(daemon: Mapping[str, Any], now: dt.datetime) -> bool:
    """Whether the daemon's heartbeat is fresh."""
    beat = moment(str(daemon.get("heartbeat") or ""))
    return beat is not None and (now - beat).total_seconds() < ALIVE_WITHIN


def replication_lag_seconds(newest: PassSummary | None, now: dt.datetime) -> float | None:
    """Now minus the start of the newest complete snapshot's pass (None without one): the
    figure ``gitlab_dr_replication_lag_seconds`` exports and ``inv status`` shows."""
    started = newest.started if newest else None
    return (now - started).total_seconds() if started else None


def families(paths: Paths, now: dt.datetime | None = None) -> list[Family]:
    """Every metric of this sidecar now, read from its files (no lock taken)."""
    when = now or dt.datetime.now(dt.UTC)
    pairing = load_pairing(paths)
    daemon = read_json(paths.daemon) or {}
    counters = read_counters(paths)
    role = pairing.role if pairing else "none"
    out = [
        gauge("up", "1 while the sidecar's daemon is alive (its heartbeat is fresh).",
              1.0 if daemon_alive(daemon, when) else 0.0),
        stateset("role", "The sidecar's role: 1 for the current one (none: not paired).",
                 "role", ROLES, role),
        gauge("paired", "1 when the sidecar is paired with a peer.", 1.0 if pairing else 0.0),
        gauge("epoch", "The pair's promotion epoch this sidecar is at.",
              pairing.epoch if pairing else None),
        gauge("sync_interval_seconds", "Period of the master's full pass (SYNC_INTERVAL).",
              Tunables.saved(paths).interval),
    ]  # fmt: skip
    if role == "master":
        out += master_families(paths, daemon, counters, bool(pairing and pairing.running))
    elif role == "slave":
        out += slave_families(paths, daemon, counters, when)
    return out


def master_families(
    paths: Paths,
    daemon: Mapping[str, Any],
    counters: Mapping[str, Mapping[Labels, float]],
    running: bool,
) -> list[Family]:
    from gitlab_sync.sender import PassLog  # the sender imports this module

    passes = PassLog(paths).read()
    last = PassSummary.from_json(passes.get("last_pass"))
    complete = PassSummary.from_json(passes.get("last_complete"))
    watch = str(daemon.get("watch") or "")
    return [
        gauge("sending", "1 while the master's sender runs (gitlab-sync start).",
              1.0 if running and daemon.get("sending") else 0.0),
        gauge("inotify_watching", "1 when inotify covers the source tree, 0 when timed passes "
              "carry on alone (watches exhausted).", 1.0 if watch == "inotify" else 0.0),
        gauge("pass_in_progress", "1 while a pass runs.",
              1.0 if passes.get("in_progress") else 0.0),
        gauge("pass_last_start_timestamp_seconds", "When the last pass began.",
              _seconds(last.started_at) if last else None),
        gauge("pass_last_end_timestamp_seconds", "When the last pass ended.",
              _seconds(last.ended_at) if last else None),
        gauge("pass_last_duration_seconds", "How long the last pass took.",
              last.duration_s if last else None),
        stateset("pass_last_outcome", "The last pass's outcome: 1 for it.", "outcome", OUTCOMES,
                 last.outcome if last else ""),
        gauge("pass_last_files", "Files in the tree the last pass copied.",
              last.files if last else None),
        gauge("pass_last_bytes", "Bytes in the tree the last pass copied.",
              last.bytes if last else None),
        gauge("pass_last_complete_start_timestamp_seconds",
              "When the last complete pass began (its snapshot's instant).",
              _seconds(complete.started_at) if complete else None),
        counter(counters, "passes_total",
                "Passes ended, by trigger, kind (full: the whole tree; change: what changed) "
                "and outcome.", zero=False),
        counter(counters, "sent_files_total", "Files transferred to the slave by passes."),
        counter(counters, "sent_bytes_total", "Bytes of files transferred to the slave by passes."),
    ]  # fmt: skip


def slave_families(
    paths: Paths,
    daemon: Mapping[str, Any],
    counters: Mapping[str, Mapping[Labels, float]],
    now: dt.datetime,
) -> list[Family]:
    # Area's public reads only: Area.summary() probes the area's lock, which would refuse a
    # pass begun at that instant.
    area = Area(paths.sync)
    current = area.current_name()
    newest = PassSummary.from_snapshot_meta(area.meta(current)) if current else None
    received = read_json(paths.receiver) or {}
    incoming = read_json(area.incoming_meta) or {}
    contact = [t for t in (_seconds(received.get("at")), _seconds(incoming.get("started_at"))) if t]
    verified = area.newest_verified()  # a pointer file: no snapshot is opened
    return [
        gauge("receiving", "1 while the slave's receiver listens.",
              1.0 if daemon.get("receiving") else 0.0),
        gauge("snapshot_newest_timestamp_seconds",
              "The instant of the newest complete snapshot (when its pass began).",
              _seconds(newest.started_at) if newest else None),
        gauge("replication_lag_seconds",
              "Now minus the instant of the newest complete snapshot, at scrape time.",
              replication_lag_seconds(newest, now)),
        gauge("snapshots", "Complete snapshots the slave holds.", len(area.names())),
        gauge("snapshot_newest_bytes", "Bytes of the newest complete snapshot (its metadata).",
              newest.bytes if newest else None),
        gauge("snapshot_newest_files", "Files of the newest complete snapshot (its metadata).",
              newest.files if newest else None),
        gauge("snapshot_verified_timestamp_seconds",
              "When the newest snapshot verified ok was verified (inv verify-slave or "
              "gitlab-verify's schedule); absent when none is.",
              _seconds(verified.get("at")) if verified else None),
        gauge("last_contact_timestamp_seconds",
              "When the master was last heard from (a pass received, begun or refused).",
              max(contact) if contact else None),
        counter(counters, "receiver_failures_total",
                "Commands the receiver refused or failed (its last error, counted)."),
    ]  # fmt: skip


def exposition(paths: Paths, now: dt.datetime | None = None) -> str:
    """This sidecar's ``/metrics`` page."""
    return render(families(paths, now))


# --- where they are served -----------------------------------------------------------------------


def serve(paths: Paths, log: Log, port: int = PORT, host: str = "") -> ThreadingHTTPServer:
    """Serve ``/metrics`` from a thread of its own (a daemon thread); returns the server.

    ``http.server`` is imported here, not with the module: the receiver imports this module for
    its counters at every command the master sends, and that import alone costs more than the
    rest of the receiver's start."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics here")
                return
            try:
                body = exposition(paths).encode()
            except (OSError, ValueError) as exc:
                self.send_error(500, f"could not read the sidecar's status: {exc}")
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would drown the daemon's log

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def write_textfile(paths: Paths, directory: Path, now: dt.datetime | None = None) -> Path:
    """Write the page into ``directory`` for node_exporter's textfile collector: aside, then
    renamed into place, so node_exporter never reads half a file."""
    target = directory / TEXTFILE
    write_text(target, exposition(paths, now), mode=0o644)
    return target


def textfile_loop(paths: Paths, directory: Path, log: Log, done: threading.Event,
                  every: float = 15.0) -> None:  # fmt: skip
    """Rewrite the textfile every ``every`` seconds until ``done``; a failure is logged once."""
    failing = False
    while not done.is_set():
        try:
            write_textfile(paths, directory)
            failing = False
        except OSError as exc:
            if not failing:
                log(f"could not write the metrics textfile in {directory}: {exc}")
            failing = True
        done.wait(every)
    with contextlib.suppress(OSError):
        (directory / TEXTFILE).unlink()  # a stopped sidecar leaves no stale figures behind


def textfile_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """METRICS_TEXTFILE_DIR in the container: where the textfile goes (None: not written)."""
    env = os.environ if environ is None else environ
    text = env.get("METRICS_TEXTFILE_DIR", "").strip()
    return Path(text) if text else None
