"""``python -m bench`` (``make bench``): RPO, sync cost and RTO, side by side with the
alternatives, on the local Docker engine. See ``python -m bench --help``."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import plots, report, storage
from bench.metric import (
    FILESYSTEMS,
    GIB,
    METRICS,
    QUICK,
    STORAGE,
    Sizes,
    Tree,
    default_bytes,
    metric_from_dict,
    parse_trees,
)
from bench.run import Bench

RESULTS = Path(__file__).with_name("results")


def parse(argv: list[str]) -> argparse.Namespace:
    default = Sizes()
    parser = argparse.ArgumentParser(
        prog="make bench",
        description=(
            "Measure replication lag under churn, pass costs, the first full sync, snapshot "
            "cost, memory, the restore for promotion, PostgreSQL under pgbench and the drill's "
            "RTO, against lsyncd and bare rsync on the same tree and transport, on btrfs (the "
            "sidecar's snapshot path) and on plain folders (its fallback). Everything runs in "
            "containers on the local Docker engine, on filesystems the bench makes and removes; "
            "nothing touches AWS. Writes bench/results/latest.json, latest.md, lag.png and "
            "passes.png."
        ),
        epilog=(
            "The default measures 100,000 files (5 GiB) on btrfs and tmpfs, in memory: 70-100 "
            "min on 2 cores. --sizes 100k,1M adds 1,000,000 files (2 GiB: the count is what a "
            "pass walks): 3-4 h in all. --quick is a smoke run of 5-8 min. Run as root (the "
            "bench mounts loop files)."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one drill, 5-8 min")
    parser.add_argument("--only", default=",".join(METRICS), help="comma-separated metrics")
    parser.add_argument(
        "--sizes",
        help="tree sizes, FILES[:GIB] comma-separated, e.g. 100k,1M or 100k:5,1M:2 "
        f"(default {','.join(f'{t.files:,}' for t in default.trees)}; 2 GiB beyond 100k files)",
    )
    parser.add_argument("--files", type=int, help="one tree of this many files (as --sizes)")
    parser.add_argument("--gib", type=float, help="that tree's size in GiB (as --sizes)")
    parser.add_argument(
        "--fs",
        help="filesystems, comma-separated: btrfs (snapshots), tmpfs or ext4 (the fallback) "
        f"(default {','.join(default.filesystems)})",
    )
    parser.add_argument(
        "--storage",
        choices=STORAGE,
        help="where the filesystems live: in memory (default, repeatable) or on the disk",
    )
    parser.add_argument("--rate", type=float, help=f"changes a second ({default.rate:g})")
    parser.add_argument("--seconds", type=float, help=f"churn duration ({default.seconds:g} s)")
    parser.add_argument("--runs", type=int, help=f"repeats of each timed pass ({default.runs})")
    parser.add_argument(
        "--restore-gib",
        help=f"snapshot sizes to restore ({','.join(f'{g:g}' for g in default.restore_gib)})",
    )
    parser.add_argument(
        "--pg-seconds", type=float, help=f"each pgbench run ({default.pg_seconds:g} s)"
    )
    parser.add_argument("--rto-runs", type=int, help=f"drills for the RTO ({default.rto_runs})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--json", action="store_true", help="print latest.json, not the table")
    parser.add_argument(
        "--table",
        type=Path,
        metavar="JSON",
        help="measure nothing: print the table of an earlier run's latest.json",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(METRICS)
    if unknown:
        parser.error(
            f"unknown metric(s) {', '.join(sorted(unknown))}; choose from {', '.join(METRICS)}"
        )
    for name in ("files", "gib", "rate", "seconds", "runs", "pg_seconds", "rto_runs"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be above zero, got {value}")
    if args.sizes and (args.files or args.gib):
        parser.error("--sizes or --files/--gib, not both")
    try:
        args.trees = parse_trees(args.sizes) if args.sizes else None
        args.restore = _floats(args.restore_gib) if args.restore_gib else None
    except ValueError as exc:
        parser.error(str(exc))
    if args.fs:
        bad = set(args.fs.split(",")) - set(FILESYSTEMS)
        if bad:
            parser.error(
                f"unknown filesystem(s) {', '.join(sorted(bad))}; choose from "
                f"{', '.join(FILESYSTEMS)}"
            )
    return args


def _floats(text: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(","))
    if any(v <= 0 for v in values):
        raise ValueError(f"sizes must be above zero, got {text!r}")
    return values


def sizes_of(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    changes: dict[str, object] = {}
    for name in ("rate", "seconds", "runs", "pg_seconds", "rto_runs", "storage"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.trees:
        changes["trees"] = args.trees
    elif args.files or args.gib:
        files = args.files or sizes.trees[0].files
        size = int(args.gib * GIB) if args.gib else default_bytes(files)
        changes["trees"] = (Tree(files, size),)
    if args.fs:
        changes["filesystems"] = tuple(dict.fromkeys(args.fs.split(",")))
    if args.restore:
        changes["restore_gib"] = args.restore
    return dataclasses.replace(sizes, **changes)  # type: ignore[arg-type]


def save(
    bench: Bench, sizes: Sizes, out: Path, seconds: float, finished: bool
) -> tuple[dict[str, Any], list[Path]]:
    """``latest.json``, ``latest.md`` and the plots of what ``bench`` has measured so far."""
    doc = report.document(
        bench.results,
        sizes,
        {
            "trees": bench.trees,
            "layouts": bench.layouts,
            "configs": bench.configs,
            "verified": bench.verified,
            "points": bench.points,
        },
        seconds,
        report.machine(),
    )
    doc["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    doc["complete"] = finished
    written = report.write(doc, bench.results, out)
    if any(bench.lags.values()):
        written.append(plots.lag(bench.lags, out / "lag.png"))
    if bench.points:
        written.append(plots.passes(bench.points, out / "passes.png"))
    return doc, written


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: every container and volume is removed


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.table:
        try:
            doc = json.loads(args.table.read_text())
            metrics = [metric_from_dict(m) for m in doc["metrics"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"make bench: cannot read results from {args.table}: {exc}", file=sys.stderr)
            return 2
        print("\n".join(report.table(metrics)))
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    sizes = sizes_of(args)
    for fs in sizes.filesystems:
        why = storage.check(fs, sizes.storage)
        if why:
            print(f"make bench: cannot use {fs} here: {why}", file=sys.stderr)
            return 2
    started = time.monotonic()

    def progress(line: str) -> None:
        at = time.monotonic() - started
        print(f"bench {int(at // 60):02d}:{at % 60:04.1f} {line}", file=sys.stderr, flush=True)

    progress(f"sizes: {json.dumps(sizes.to_dict())}")
    bench = Bench(sizes, progress, tuple(args.only.split(",")))
    finished = False
    try:
        bench.run()
        finished = True
    finally:  # what was measured is written even when a later step fails (and says so)
        doc, written = save(bench, sizes, args.out, time.monotonic() - started, finished)
        if not finished:
            progress(f"stopped early; what was measured is in {', '.join(map(str, written))}")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(report.table(bench.results)))
        print(f"\nwritten: {', '.join(str(p) for p in written)}")
    bad = [name for name, found in bench.verified.items() if found.get("differences")]
    if bad:
        print(
            f"make bench: the final copy differs from the master's for {', '.join(bad)}",
            file=sys.stderr,
        )
        return 1 if any(name.endswith(" ours") for name in bad) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
