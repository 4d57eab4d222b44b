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

from bench import report
from bench.metric import METRICS, QUICK, Sizes, metric_from_dict
from bench.run import Bench

RESULTS = Path(__file__).with_name("results")


def parse(argv: list[str]) -> argparse.Namespace:
    default = Sizes()
    parser = argparse.ArgumentParser(
        prog="make bench",
        description=(
            "Measure replication lag under churn, pass costs, the first full sync, snapshot "
            "cost, memory and the drill's RTO, against lsyncd and bare rsync on the same tree "
            "and transport. Everything runs in containers on the local Docker engine; nothing "
            "touches AWS. Writes bench/results/latest.json, latest.md and lag.png."
        ),
        epilog="Sizes default to the issue's; --quick is a smoke run of a few minutes.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one drill, ~4 min")
    parser.add_argument("--only", default=",".join(METRICS), help="comma-separated metrics")
    parser.add_argument("--files", type=int, help=f"files in the tree ({default.files:,})")
    parser.add_argument("--gib", type=float, help=f"size of the tree ({default.bytes >> 30} GiB)")
    parser.add_argument("--rate", type=float, help=f"changes a second ({default.rate:g})")
    parser.add_argument("--seconds", type=float, help=f"churn duration ({default.seconds:g} s)")
    parser.add_argument("--runs", type=int, help=f"repeats of each timed pass ({default.runs})")
    parser.add_argument("--rto-runs", type=int, help=f"drills for the RTO ({default.rto_runs})")
    parser.add_argument("--memory-files", help="tree sizes for the memory figure (100000,1000000)")
    parser.add_argument(
        "--storage",
        choices=("tmpfs", "disk"),
        help="where the trees live: in memory (default, repeatable) or on Docker's disk",
    )
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
    for name in ("files", "rate", "seconds", "runs", "rto_runs", "gib"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be above zero, got {value}")
    return args


def sizes_of(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    changes: dict[str, object] = {}
    for name in ("files", "rate", "seconds", "runs", "rto_runs", "storage"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.gib is not None:
        changes["bytes"] = int(args.gib * (1 << 30))
    if args.memory_files:
        try:
            changes["memory_files"] = tuple(int(n) for n in args.memory_files.split(","))
        except ValueError:
            raise SystemExit(
                f"make bench: --memory-files takes numbers, got {args.memory_files!r}"
            ) from None
    return dataclasses.replace(sizes, **changes)  # type: ignore[arg-type]


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
    started = time.monotonic()

    def progress(line: str) -> None:
        at = time.monotonic() - started
        print(f"bench {int(at // 60):02d}:{at % 60:04.1f} {line}", file=sys.stderr, flush=True)

    progress(f"sizes: {json.dumps(sizes.to_dict())}")
    bench = Bench(sizes, progress, tuple(args.only.split(",")))
    metrics = bench.run()
    doc = report.document(
        metrics,
        sizes,
        bench.configs,
        bench.tree,
        bench.verified,
        time.monotonic() - started,
        report.machine(),
    )
    doc["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    written = report.write(doc, metrics, args.out)
    if bench.lags:
        written.append(report.plot(bench.lags, args.out / "lag.png"))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(report.table(metrics)))
        print(f"\nwritten: {', '.join(str(p) for p in written)}")
    bad = [name for name, found in bench.verified.items() if found.get("differences")]
    if bad:
        print(
            f"make bench: the final copy differs from the master's for {', '.join(bad)}",
            file=sys.stderr,
        )
        return 1 if "ours" in bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
