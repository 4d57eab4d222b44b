"""``gitlab-sync``: pair a master and a slave sidecar and keep the slave's snapshots fresh.

The seed's verbs (add, ls, start, stop) plus fence, rm, status, key, pass, health, and the verbs
about the data: layout, prepare, restore, manifest (in cli_data.py). Run inside the
gitlab-rsync container, e.g. ``docker exec gitlab-rsync gitlab-sync status``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gitlab_sync import cli_data, keys, layout
from gitlab_sync.config import (
    Pairing,
    Paths,
    Peer,
    SyncError,
    Tunables,
    iso,
    load_pairing,
    parse_iso,
    read_json,
    save_pairing,
)
from gitlab_sync.sender import PassLog, Sender
from gitlab_sync.snapshots import Area
from gitlab_sync.status import ErrorNote, PassSummary, SidecarStatus
from gitlab_sync.waits import wait_until

EPILOG = """\
pairing, in order (ops does this for you with `inv pair`):
  on both:    gitlab-sync key                      # this side's public keys
  on slave:   gitlab-sync add MASTER --role slave --peer-key "<master's client key>"
  on master:  gitlab-sync add SLAVE:2222 --role master --peer-key "<slave's host key>"
  on master:  gitlab-sync start
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gitlab-sync",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    key = sub.add_parser("key", help="print this sidecar's public keys (client and host)")
    key.add_argument("--json", action="store_true", help="as JSON")
    add = sub.add_parser("add", help="pair with a peer (replaces any earlier pairing)")
    add.add_argument(
        "peer",
        help="host[:port]: the slave's receiver (on the master) or the master (on the slave)",
    )
    add.add_argument(
        "--role", choices=("master", "slave"), required=True, help="this sidecar's role"
    )
    add.add_argument(
        "--peer-key",
        required=True,
        help="the peer's public key: the slave's host key (on the master), "
        "the master's client key (on the slave)",
    )
    add.add_argument("--epoch", type=int, default=1, help="promotion epoch of the pair (default 1)")
    fence = sub.add_parser(
        "fence",
        help="move a slave's receiver to a new epoch (never back): senders of older epochs are "
        "refused from then on (promotion does this)",
    )
    fence.add_argument("epoch", type=int, help="the promotion's new epoch")
    fence.add_argument("--json", action="store_true", help="as JSON")
    sub.add_parser("rm", help="forget the pairing (snapshots are kept)")
    ls = sub.add_parser("ls", help="show the pairing")
    ls.add_argument("--json", action="store_true", help="as JSON")
    sub.add_parser(
        "start", help="start sending (master): checks the slave answers with its key first"
    )
    stop = sub.add_parser("stop", help="stop sending (master): the pass in progress is abandoned")
    stop.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    status = sub.add_parser("status", help="role, peer, last complete pass, pass in progress")
    status.add_argument("--json", action="store_true", help="as JSON")
    one = sub.add_parser("pass", help="run one pass now and wait for it (master)")
    one.add_argument(
        "--final",
        action="store_true",
        help="the last pass of a planned switchover (GitLab stopped on the master)",
    )
    one.add_argument("--json", action="store_true", help="as JSON")
    cli_data.add_parsers(sub)
    sub.add_parser("health", help="exit 0 when the daemon is alive and doing its role")
    sub.add_parser("daemon", help="the container's main process (not for manual use)")
    sub.add_parser("serve", help="the slave's receiver, run by sshd (not for manual use)")
    return parser


def _print(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if as_json else text(data))


def _require(paths: Paths, role: str | None = None) -> Pairing:
    pairing = load_pairing(paths)
    if pairing is None:
        raise SyncError("not paired: run gitlab-sync add first")
    if role and pairing.role != role:
        raise SyncError(f"this sidecar is the {pairing.role}; that command runs on the {role}")
    return pairing


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    wait_until(predicate, timeout=timeout, what=what, interval=0.2, error=SyncError)


def _daemon(paths: Paths) -> dict[str, Any]:
    data = read_json(paths.daemon) or {}
    beat = data.get("heartbeat")
    age = (dt.datetime.now(dt.UTC) - parse_iso(beat)).total_seconds() if beat else None
    data["alive"] = age is not None and age < 10
    return data


def cmd_add(args: argparse.Namespace, paths: Paths) -> int:
    peer = Peer.parse(args.peer)
    peer_key = keys.check_public_key(args.peer_key)
    if args.epoch < 1:
        raise SyncError("the epoch must be 1 or more")
    old = load_pairing(paths)
    keep_running = bool(old and old.running and old.role == args.role and old.peer == peer)
    pairing = Pairing(
        role=args.role,
        peer=peer,
        peer_key=peer_key,
        epoch=args.epoch,
        running=keep_running,
        added_at=iso(dt.datetime.now(dt.UTC)),
    )
    if args.role == "slave":
        Area(paths.sync).snapshots.mkdir(parents=True, exist_ok=True)
    keys.write_trust(paths, pairing)
    save_pairing(paths, pairing)
    if args.role == "slave" and _daemon(paths)["alive"]:
        _wait(lambda: bool(_daemon(paths).get("receiving")), 20, "the receiver to listen")
    print(f"paired: this sidecar is the {pairing.role} of {peer} (epoch {pairing.epoch})")
    return 0


def fence(paths: Paths, epoch: int) -> dict[str, Any]:
    """Move a slave's receiver to ``epoch``, keeping its peer and key: the receiver reads the
    pairing at each connection, so a sender of an older epoch is refused from the next one on.
    Never moved back: an epoch already at or above ``epoch`` is left as it is. Any other
    sidecar (a master, or not paired) is not receiving, and is left alone.

    What it found and did: ``role``, ``was`` (the epoch before), ``epoch`` (after), ``fenced``
    (whether the receiver now refuses every epoch before ``epoch``)."""
    if epoch < 1:
        raise SyncError("the epoch must be 1 or more")
    pairing = load_pairing(paths)
    if pairing is None or pairing.role != "slave":
        role = pairing.role if pairing else None
        was = pairing.epoch if pairing else None
        return {"role": role, "was": was, "epoch": was, "fenced": False}
    if pairing.epoch < epoch:
        save_pairing(paths, dataclasses.replace(pairing, epoch=epoch))
    after = max(pairing.epoch, epoch)
    return {"role": "slave", "was": pairing.epoch, "epoch": after, "fenced": True}


def _fence_text(d: dict[str, Any]) -> str:
    if not d["fenced"]:
        return f"not receiving ({d['role'] or 'not paired'}): nothing to fence"
    if d["was"] == d["epoch"]:
        return f"the receiver already refuses senders of epochs before {d['epoch']}"
    return f"the receiver now refuses senders of epochs before {d['epoch']} (was {d['was']})"


def cmd_fence(args: argparse.Namespace, paths: Paths) -> int:
    _print(fence(paths, args.epoch), args.json, _fence_text)
    return 0


def cmd_rm(args: argparse.Namespace, paths: Paths) -> int:
    if load_pairing(paths) is None:
        print("not paired; nothing to forget")
        return 0
    paths.pairing.unlink()
    keys.write_trust(paths, None)
    _wait(
        lambda: (
            (not _daemon(paths).get("sending") and not _daemon(paths).get("receiving"))
            or not _daemon(paths)["alive"]
        ),
        60,
        "the daemon to stop sending and receiving",
    )
    print("pairing forgotten; snapshots kept")
    return 0


def cmd_ls(args: argparse.Namespace, paths: Paths) -> int:
    pairing = load_pairing(paths)
    data = pairing.to_json() if pairing else None
    _print(
        data,
        args.json,
        lambda d: (
            "not paired"
            if d is None
            else f"{d['role']}  peer={d['peer']}  epoch={d['epoch']}  running={d['running']}  "
            f"peer-key={' '.join(d['peer_key'].split()[:2])[:40]}..."
        ),
    )
    return 0


def cmd_start(args: argparse.Namespace, paths: Paths) -> int:
    pairing = _require(paths, "master")
    answer = Sender(paths, pairing, Tunables.from_env(), lambda _m: None).hello()
    if answer.get("epoch") != pairing.epoch:
        raise SyncError(
            f"the slave is at epoch {answer.get('epoch')}, this master at {pairing.epoch}"
        )
    save_pairing(paths, pairing.with_running(True))
    if _daemon(paths)["alive"]:
        _wait(lambda: bool(_daemon(paths).get("sending")), 30, "the daemon to start sending")
    print(f"sending to {pairing.peer} (slave holds {answer.get('snapshots', 0)} snapshots)")
    return 0


def cmd_stop(args: argparse.Namespace, paths: Paths) -> int:
    pairing = _require(paths, "master")
    save_pairing(paths, pairing.with_running(False))
    if _daemon(paths)["alive"]:
        _wait(
            lambda: not _daemon(paths).get("sending"), args.timeout, "the pass in progress to stop"
        )
    print("stopped: nothing more is sent until gitlab-sync start")
    return 0


def _last_contact(paths: Paths, area: Area) -> str | None:
    """When the slave last heard from the master: its last recorded or begun pass."""
    received = read_json(paths.receiver) or {}
    incoming = read_json(area.incoming_meta) or {}
    times = [t for t in (received.get("at"), incoming.get("started_at")) if t]
    return max(times, key=parse_iso) if times else None


def status(paths: Paths) -> SidecarStatus:
    """Everything ``status`` reports (``--json`` prints its ``to_json``)."""
    pairing = load_pairing(paths)
    daemon = _daemon(paths)
    base = SidecarStatus(
        role=pairing.role if pairing else None,
        peer=str(pairing.peer) if pairing else None,
        epoch=pairing.epoch if pairing else None,
        daemon_alive=bool(daemon["alive"]),
        heartbeat=daemon.get("heartbeat"),
        daemon_started_at=daemon.get("started_at"),
        watch=daemon.get("watch"),
        watch_note=daemon.get("watch_note") or "",
        layout=layout.detect(paths.source, paths.sync).to_json(),
    )
    if pairing and pairing.role == "master":
        passes = PassLog(paths).read()
        last = PassSummary.from_json(passes.get("last_complete"))
        return dataclasses.replace(
            base,
            running=pairing.running and bool(daemon.get("sending")) and bool(daemon["alive"]),
            last_complete=last,
            last_pass=PassSummary.from_json(passes.get("last_pass")),
            in_progress=PassSummary.from_json(passes.get("in_progress")),
            last_error=ErrorNote.from_json(passes.get("last_error")),
            snapshots=passes.get("snapshots"),
            current=last.snapshot if last else None,
        )
    if pairing and pairing.role == "slave":
        area = Area(paths.sync)
        summary = area.summary()
        meta = summary["last_complete"]
        received = read_json(paths.receiver) or {}
        error = (
            ErrorNote(str(received.get("at", "")), str(received["error"]))
            if received.get("error")
            else None
        )
        return dataclasses.replace(
            base,
            running=bool(daemon.get("receiving")) and bool(daemon["alive"]),
            last_complete=PassSummary.from_snapshot_meta(meta) if meta else None,
            in_progress=PassSummary.from_json(summary["in_progress"]),
            last_error=error,
            snapshots=summary["snapshots"],
            current=summary["current"],
            last_contact=_last_contact(paths, area),
            secrets_present=(area.current / "config" / "gitlab-secrets.json").is_file(),
            newest_verified=summary["newest_verified"],
        )
    return base


def _status_text(d: dict[str, Any]) -> str:
    if d["role"] is None:
        return "not paired (gitlab-sync add)"
    lines = [
        f"role:          {d['role']} (epoch {d['epoch']})",
        f"peer:          {d['peer']}",
        f"running:       {'yes' if d['running'] else 'no'}",
        f"method:        {d['layout'].get('method', '?')}: {d['layout'].get('why', '')}",
    ]
    if d["role"] == "master":
        lines.append(f"watch:         {d['watch'] or '-'} {d['watch_note']}".rstrip())
    last = d["last_complete"]
    lines.append(
        "last complete: "
        + (
            f"{last['snapshot']} started {last['started_at']}, {last['duration_s']} s, "
            f"{last['files']} files, {last['bytes']} bytes"
            if last
            else "none yet"
        )
    )
    now = d["in_progress"]
    lines.append("in progress:   " + (f"{now['id']} since {now['started_at']}" if now else "-"))
    lines.append(f"snapshots:     {d['snapshots'] if d['snapshots'] is not None else '?'}")
    if d["role"] == "slave":
        good = d.get("newest_verified")
        lines.append("verified:      " + (f"{good['name']} at {good['at']}" if good else "none"))
    err = d["last_error"]
    lines.append("last error:    " + (f"{err['at']}: {err['message']}" if err else "-"))
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    _print(status(paths).to_json(), args.json, _status_text)
    return 0


def cmd_pass(args: argparse.Namespace, paths: Paths) -> int:
    pairing = _require(paths, "master")
    sender = Sender(paths, pairing, Tunables.from_env(), lambda m: print(m, file=sys.stderr))
    record = sender.run_pass("final" if args.final else "manual")
    data = dataclasses.asdict(record)
    _print(
        data,
        args.json,
        lambda r: (
            f"pass {r['id']}: {r['outcome']}"
            + (f", snapshot {r['snapshot']}" if r["snapshot"] else f": {r['error']}")
        ),
    )
    return 0 if record.outcome == "ok" else 1


def cmd_key(args: argparse.Namespace, paths: Paths) -> int:
    _print(keys.public_keys(paths), args.json, lambda k: f"client {k['client']}\nhost {k['host']}")
    return 0


def cmd_health(args: argparse.Namespace, paths: Paths) -> int:
    daemon = _daemon(paths)
    pairing = load_pairing(paths)
    if not daemon["alive"]:
        print("unhealthy: the daemon is not running")
        return 1
    if pairing and pairing.role == "slave" and not daemon.get("receiving"):
        print("unhealthy: the receiver is not listening")
        return 1
    print("healthy")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    paths = Paths.from_env()
    if args.command == "daemon":
        from gitlab_sync import daemon

        return daemon.main()
    if args.command == "serve":
        from gitlab_sync import receiver

        return receiver.main()
    handler = cli_data.COMMANDS.get(args.command) or globals()[f"cmd_{args.command}"]
    try:
        code: int = handler(args, paths)
    except SyncError as exc:
        print(f"gitlab-sync: error: {exc}", file=sys.stderr)
        return 1
    return code
