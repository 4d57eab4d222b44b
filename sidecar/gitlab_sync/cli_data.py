"""The ``gitlab-sync`` verbs about the data rather than the pairing: ``layout``, ``prepare``,
``restore`` and ``manifest``.

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
from gitlab_sync.config import Paths
from gitlab_sync.snapshots import Area

Handler = Callable[[argparse.Namespace, Paths], int]
Subparsers = Any  # argparse's _SubParsersAction, which it does not export


def add_parsers(sub: Subparsers) -> None:
    shown = sub.add_parser(
        "layout",
        help="which way this host syncs (btrfs snapshots or the fallback) and why; exit 1 "
        "when btrfs is set up wrongly",
    )
    shown.add_argument("--json", action="store_true", help="as JSON")
    prep = sub.add_parser(
        "prepare",
        help="make TARGET a runnable copy of a complete snapshot (default: current): a "
        "writable btrfs snapshot where it can be, else a copy",
    )
    prep.add_argument(
        "target", help="a directory holding nothing but empty directories, e.g. /target"
    )
    prep.add_argument("--snapshot", help="the snapshot's name (default: current)")
    prep.add_argument("--json", action="store_true", help="as JSON")
    back = sub.add_parser(
        "restore",
        help="promotion: put the newest complete snapshot in TARGET (idempotent; what was "
        "there is set aside, never deleted)",
    )
    back.add_argument(
        "target",
        help="GITLAB_HOME, read-write; with btrfs snapshots, inside its parent mounted "
        "(e.g. /homes/gitlab) so that it can be replaced by a snapshot",
    )
    back.add_argument("--snapshot", help="the snapshot's name (default: current)")
    back.add_argument("--json", action="store_true", help="as JSON")
    man = sub.add_parser(
        "manifest", help="the manifest of a tree (path, type, mode, owner, hash...)"
    )
    man.add_argument("path", help="a directory, e.g. /source or /sync/current")
    man.add_argument("--digest", action="store_true", help="print one hash of the whole manifest")
    man.add_argument("--no-hash", action="store_true", help="skip content hashes (faster)")


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


COMMANDS: dict[str, Handler] = {
    "layout": cmd_layout,
    "prepare": cmd_prepare,
    "restore": cmd_restore,
    "manifest": cmd_manifest,
}
