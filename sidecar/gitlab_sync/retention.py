"""Which snapshots the slave keeps: tiers, as sanoid and AWS's point-in-time policies keep them.

A pass a second makes 86,400 snapshots a day; a fixed count of them keeps seconds of history
and makes every older point unreachable. So retention is by age, in tiers:

- every snapshot younger than ``every`` (default 15 minutes);
- the newest of each minute younger than ``minutely`` (2 hours),
- of each hour younger than ``hourly`` (2 days),
- of each UTC day younger than ``daily`` (8 days: a week is always there);
- nothing older than the longest span.

A tier is an age, not a stretch after the previous one: a snapshot stays while any tier keeps
it. The buckets nest (a day's newest is its last hour's newest, which is that hour's last
minute's newest), so the finest tier whose span covers a snapshot's age decides, and pruning
after each pass leaves exactly what pruning once at the end would. ``most`` (0: no limit)
caps the count on top of the tiers, oldest first: a safety valve for a small disk, and what a
test that needs a known number of snapshots sets.

The newest snapshot and the newest verified one are never pruned: promotion starts from the
one, and the other is the newest point known to start.

Pure: a function of names, now, the tiers and the protected names. A name is its instant in
UTC (:data:`NAME_FORMAT`), so names sort as time and their prefixes are the snapshot's UTC
day, hour and minute; the cut-offs are names too. Nothing is parsed: a pass a second keeps a
thousand snapshots, and each pass costs a sort of sorted names, a few bisections and one look
at each snapshot older than ``every``.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import compress, islice, repeat
from operator import eq, getitem

NAME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
"""A snapshot's name: the instant it holds, in UTC (``20261125T120000.000000Z``)."""
_WHOLE, _MINUTE, _HOUR, _DAY = len("20261125T120000.000000Z"), 13, 11, 8  # a name's prefixes


@dataclass(frozen=True)
class Tiers:
    """The retention policy: each span in seconds (0: that tier keeps nothing)."""

    every: float = 15 * 60.0
    minutely: float = 2 * 3600.0
    hourly: float = 2 * 86400.0
    daily: float = 8 * 86400.0
    most: int = 0  # at most this many snapshots, the oldest pruned first (0: no limit)

    def rules(self) -> tuple[tuple[float, int], ...]:
        """Each tier as (span, the length of the name prefix its buckets share)."""
        return (
            (self.every, _WHOLE),
            (self.minutely, _MINUTE),
            (self.hourly, _HOUR),
            (self.daily, _DAY),
        )

    @cached_property
    def _by_span(self) -> tuple[tuple[dt.timedelta, int], ...]:
        """The tiers that keep something, the longest span first (so the oldest cut-off)."""
        kept = sorted(((s, p) for s, p in self.rules() if s > 0), key=lambda r: -r[0])
        return tuple((_delta(span), prefix) for span, prefix in kept)


def _delta(span: float) -> dt.timedelta:
    try:
        return dt.timedelta(seconds=span)
    except OverflowError:
        return dt.timedelta.max


def cutoff(now: dt.datetime, span: float) -> str:
    """The name of the instant ``span`` seconds before ``now``: names above it are younger."""
    return _cutoff(now.astimezone(dt.UTC), _delta(span))


def _cutoff(utc: dt.datetime, span: dt.timedelta) -> str:
    try:
        moment = utc - span
    except OverflowError:
        return ""
    if moment.year < 1000:  # four digits or none: "" is older than every name
        return ""
    # NAME_FORMAT, written out: strftime takes three times as long, and this runs at each pass.
    return "%04d%02d%02dT%02d%02d%02d.%06dZ" % (  # noqa: UP031
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
    )


def to_prune(
    names: Sequence[str], now: dt.datetime, tiers: Tiers, protected: Collection[str] = ()
) -> list[str]:
    """The snapshots the tiers do not keep, oldest first; never the newest nor ``protected``."""
    ordered = sorted(names)
    if not ordered:
        return []
    kept = {ordered[-1], *protected}
    doomed = [name for name in _untiered(ordered, now, tiers) if name not in kept]
    over = len(ordered) - len(doomed) - tiers.most
    if tiers.most and over > 0:  # the cap: then the oldest of those kept, but the protected
        gone = set(doomed)
        spare = (name for name in ordered if name not in gone and name not in kept)
        doomed = sorted(gone.union(islice(spare, over)))
    return doomed


def _untiered(ordered: list[str], now: dt.datetime, tiers: Tiers) -> list[str]:
    """The names (oldest first) that no tier keeps."""
    # Where each tier begins in the ordered names (it covers from there to the newest), the
    # oldest first; each stretch between two beginnings is decided by the finest tier so far.
    utc = now.astimezone(dt.UTC)
    starts = [(bisect_right(ordered, _cutoff(utc, span)), p) for span, p in tiers._by_span]
    if not starts:
        return ordered
    ends = [start for start, _ in starts[1:]] + [len(ordered)]
    doomed = ordered[: starts[0][0]]  # older than every span
    finest = 0
    for (low, prefix), high in zip(starts, ends, strict=True):
        finest = max(finest, prefix)
        if finest == _WHOLE:
            break  # every snapshot from here on is kept
        # The newest of its bucket is the one whose next newer name starts differently
        # (map and compress keep this loop out of Python: it runs at every pass).
        keys = list(map(getitem, ordered[low : high + 1], repeat(slice(finest))))
        doomed += compress(ordered[low:high], map(eq, keys, keys[1:]))
    return doomed
