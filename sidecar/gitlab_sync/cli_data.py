"""The ``gitlab-sync`` verbs about the data rather than the pairing: ``layout``, ``prepare``,
``restore``, ``manifest``, ``snapshots`` and ``mark-verified``.

Apart from :mod:`gitlab_sync.cli` so that neither grows past a screenful of verbs; ``cli``
adds these to its parser (:func:`add_parsers`) and runs them from :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gitlab_sync import layout, manifest
from gitlab_sync.config import Paths, SyncError, iso, quoted
from gitlab_sync.snapshots import MARK_WAIT, NAME_PATTERN, VERIFIED_MAX, Area, name_time

Handler = Callable[[argparse.Namespace, Paths], int]
Subparsers = Any  # argparse's _SubParsersAction, which it does not export


def add_parsers(sub: Subparsers) -> None:
    shown = sub.add_parser(
        "layout",
        help="which way this host syncs (btrfs snapshots or the fallback) and why; exit 1 "
        "when btrfs is set up wrongly",
    )
    shown.add_argument("--json", action="store_true", help="as JSON")
    _into_target(
        sub,
        "prepare",
        "make TARGET a runnable copy of a complete snapshot (default: current): a writable "
        "btrfs snapshot where it can be, else a copy",
        "a directory holding nothing but empty directories, e.g. /target",
    )
    _into_target(
        sub,
        "restore",
        "promotion: put the newest complete snapshot in TARGET (idempotent; what was there is "
        "set aside, never deleted)",
        "GITLAB_HOME, read-write; with btrfs snapshots, inside its parent mounted "
        "(e.g. /homes/gitlab) so that it can be replaced by a snapshot",
    )
    man = sub.add_parser(
        "manifest", help="the manifest of a tree (path, type, mode, owner, hash...)"
    )
    man.add_argument("path", help="a directory, e.g. /source or /sync/current")
    man.add_argument("--digest", action="store_true", help="print one hash of the whole manifest")
    man.add_argument("--no-hash", action="store_true", help="skip content hashes (faster)")
    listed = sub.add_parser(
        "snapshots",
        help="the slave's complete snapshots, newest first: instant, age, size, how made, "
        "whether verified",
    )
    listed.add_argument("--json", action="store_true", help="as JSON")
    mark = sub.add_parser(
        "mark-verified",
        help="record a verification's result in a snapshot's metadata (the newest verified "
        "ok is never pruned)",
    )
    mark.add_argument("name", help="the snapshot's name, e.g. 20261125T120000.000000Z")
    mark.add_argument(
        "--result",
        required=True,
        help='a file holding {"ok": true|false, "checks": [...], "summary": "..."}, or - for stdin',
    )
    mark.add_argument(
        "--wait",
        type=float,
        default=MARK_WAIT,
        help=f"seconds to wait for a pass being received (default {MARK_WAIT:g})",
    )
    mark.add_argument("--json", action="store_true", help="as JSON")
    gone = sub.add_parser(
        "discard-copy",
        help=f"delete a throwaway copy a verification prepared under {VERIFY_DIR}/ (a subvolume "
        "at once, a copy through the trash)",
    )
    gone.add_argument("path", nargs="?", help=f"a copy, e.g. /sync/{VERIFY_DIR}/NAME")
    gone.add_argument("--all", action="store_true", help=f"every copy under {VERIFY_DIR}/")
    gone.add_argument("--json", action="store_true", help="as JSON")


def _into_target(sub: Subparsers, name: str, about: str, target: str) -> None:
    """A command that puts a snapshot (``--snapshot``, default current) in a TARGET."""
    parser = sub.add_parser(name, help=about)
    parser.add_argument("target", help=target)
    parser.add_argument("--snapshot", help="the snapshot's name (default: current)")
    parser.add_argument("--json", action="store_true", help="as JSON")


def _print(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if as_json else text(data))


def _layout_text(d: dict[str, Any]) -> str:
    lines = [f"method: {d['method']}", f"why:    {d['why']}"]
    for name in ("source", "sync"):
        area = d[name]
        lines.append(
            f"{name + ':':7} "
            + (
                f"{area['path']} on {area['fstype']}"
                + (" (a subvolume)" if area["subvolume"] else "")
                if area
                else "missing"
            )
        )
    return "\n".join(lines)


def cmd_layout(args: argparse.Namespace, paths: Paths) -> int:
    found = layout.detect(paths.source, paths.sync)
    _print(found.to_json(), args.json, _layout_text)
    for problem in found.problems:
        print(f"gitlab-sync: error: {problem}", file=sys.stderr)
    return 1 if found.problems else 0


def cmd_prepare(args: argparse.Namespace, paths: Paths) -> int:
    done = Area(paths.sync).prepare(Path(args.target), args.snapshot)
    _print(
        done,
        args.json,
        lambda d: (
            f"prepared {d['snapshot']} in {d['target']} ({d['method']}): {d['bytes']} bytes "
            f"in {d['seconds']} s"
            + (f" ({d['seconds_per_gb']} s/GB)" if "seconds_per_gb" in d else "")
        ),
    )
    return 0


def cmd_restore(args: argparse.Namespace, paths: Paths) -> int:
    from gitlab_sync.restore import restore

    record = restore(Area(paths.sync), Path(args.target), args.snapshot)
    _print(record, args.json, lambda r: _restored_text(r, args.target))
    return 0


def _restored_text(r: dict[str, Any], target: str) -> str:
    if not r["copied"]:
        return f"snapshot {r['snapshot']} is already in {target}"
    aside = f"; what was there is in {r['aside']}" if r.get("aside") else ""
    return (
        f"restored snapshot {r['snapshot']} into {target} by {r['method']} "
        f"in {r['seconds']} s{aside}"
    )


def cmd_manifest(args: argparse.Namespace, paths: Paths) -> int:
    records = manifest.manifest(args.path, hashes=not args.no_hash)
    if args.digest:
        print(manifest.digest(records))
    else:
        for record in records:
            print(json.dumps(record, sort_keys=True))
    return 0


def listing(area: Area) -> dict[str, Any]:
    """Every complete snapshot, newest first, as ``gitlab-sync snapshots --json`` prints them:
    from their metadata alone (no tree is walked). ``method`` at the top is the area's (how the
    slave keeps them); a snapshot's own is how it was made: ``snapshots`` when the master sent
    the instant it froze (one instant), ``fallback`` when it copied live files."""
    current = area.current_name()
    verified = area.newest_verified()
    moment = area.clock()
    rows = []
    for name in reversed(area.names()):
        if not NAME_PATTERN.match(name):
            continue
        meta, instant = area.meta(name), name_time(name)
        tree = meta.get("tree_bytes")
        one = meta.get("one_instant", "received_from" in meta)  # older metadata: a guess
        check = meta.get("verified")
        rows.append(
            {
                "name": name,
                "instant": iso(instant),
                "age_seconds": round((moment - instant).total_seconds(), 3),
                "bytes": tree if isinstance(tree, int) and not isinstance(tree, bool) else None,
                "method": "snapshots" if one is True else "fallback",
                "current": name == current,
                "verified": check if isinstance(check, dict) else None,
            }
        )
    return {
        "current": current,
        "newest_verified": verified["name"] if verified else None,
        "method": area.method,
        "snapshots": rows,
    }


def cmd_snapshots(args: argparse.Namespace, paths: Paths) -> int:
    _print(listing(Area(paths.sync)), args.json, snapshots_text)
    return 0


def snapshots_text(d: dict[str, Any]) -> str:
    """The listing as a table, newest first, with what matters above it."""
    rows = d["snapshots"]
    if not rows:
        return f"no complete snapshot yet ({d['method']})"
    by_name = {row["name"]: row for row in rows}
    verified = by_name.get(d["newest_verified"] or "")
    lines = [
        f"{len(rows)} snapshots ({d['method']}); current {d['current'] or '-'}, "
        f"{_age(rows[0]['age_seconds'])} old",
        "newest verified: "
        + (f"{verified['name']}, {_age(verified['age_seconds'])} old" if verified else "none"),
        "",
        f"{'NAME':24} {'INSTANT (UTC)':19} {'AGE':>7} {'SIZE':>9}  {'MADE':11}  VERIFIED",
    ]
    for row in rows:
        instant = row["instant"][:19].replace("T", " ")
        made = "one instant" if row["method"] == "snapshots" else "fallback"
        lines.append(
            f"{row['name']:24} {instant:19} {_age(row['age_seconds']):>7} "
            f"{_size(row['bytes']):>9}  {made:11}  {_verified(row['verified'])}"
            + ("  <- current" if row["current"] else "")
        )
    return "\n".join(lines)


def _age(seconds: float) -> str:
    whole = max(0, int(seconds))
    for unit, size, smaller, next_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            return f"{whole // size}{unit}{(whole % size) // next_size:02d}{smaller}"
    return f"{whole}s"


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _verified(record: dict[str, Any] | None) -> str:
    if not record:
        return "-"
    word = "ok" if record.get("ok") is True else "FAILED"
    return f"{word} {str(record.get('at', ''))[:16].replace('T', ' ')}: {record.get('summary', '')}"


def cmd_mark_verified(args: argparse.Namespace, paths: Paths) -> int:
    source = sys.stdin if args.result == "-" else None
    try:
        text = source.read(VERIFIED_MAX + 1) if source else Path(args.result).read_text()
    except OSError as exc:
        raise SyncError(f"cannot read the result {args.result}: {exc.strerror}") from None
    if len(text) > VERIFIED_MAX:
        raise SyncError(f"refused: a verification result larger than {VERIFIED_MAX} bytes")
    try:
        result = json.loads(text)
    except ValueError:
        raise SyncError("refused: the verification result is not JSON") from None
    record = Area(paths.sync).mark_verified(args.name, result, wait=args.wait)
    _print(
        {"name": args.name, "verified": record},
        args.json,
        lambda d: f"snapshot {d['name']}: verified {_verified(d['verified'])}",
    )
    return 0


VERIFY_DIR = ".verify"
"""Where ``inv verify-slave`` prepares its throwaway copies, in the area (the snapshots' own
filesystem, so a copy is an O(1) btrfs snapshot); nothing else in the area looks there."""


def cmd_discard_copy(args: argparse.Namespace, paths: Paths) -> int:
    area, root = Area(paths.sync), paths.sync / VERIFY_DIR
    if args.all:
        doomed = sorted(root.iterdir()) if root.is_dir() else []
    elif args.path:
        doomed = [Path(args.path)]
    else:
        raise SyncError("refused: name a copy, or --all")
    for path in doomed:
        if path.is_symlink() or path.parent.resolve() != root.resolve():
            raise SyncError(f"refused: {quoted(str(path), 80)} is not a copy in {root}")
        area.discard(path)
    gone = [str(p) for p in doomed]
    _print({"discarded": gone}, args.json, lambda d: f"discarded {len(d['discarded'])} copies")
    return 0


COMMANDS: dict[str, Handler] = {
    "layout": cmd_layout,
    "prepare": cmd_prepare,
    "restore": cmd_restore,
    "manifest": cmd_manifest,
    "snapshots": cmd_snapshots,
    "mark-verified": cmd_mark_verified,
    "discard-copy": cmd_discard_copy,
}
