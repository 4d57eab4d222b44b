"""Medians, spreads and percentiles: the only arithmetic the benchmark's figures go through."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not between 0 and 100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """A figure over repeated runs: its median and the spread (lowest, highest) around it."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no runs to summarise")
        return cls(percentile(values, 50), min(values), max(values), len(values))

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "low": self.low, "high": self.high, "runs": self.runs}

    def text(self, unit: str, digits: int = 2) -> str:
        if self.runs == 1:
            return f"{self.median:.{digits}f} {unit}"
        return f"{self.median:.{digits}f} {unit} ({self.low:.{digits}f}-{self.high:.{digits}f})"


@dataclass(frozen=True)
class Lag:
    """How long changes took to reach the slave's newest complete copy."""

    changes: int
    seen: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, lags: Sequence[float | None]) -> Lag:
        """``None`` is a change never seen: it counts as infinitely late, never as on time."""
        if not lags:
            raise ValueError("no changes")
        padded = [math.inf if lag is None else lag for lag in lags]
        seen = sum(1 for lag in lags if lag is not None)
        return cls(len(lags), seen, nearest_rank(padded, 50), nearest_rank(padded, 99), max(padded))


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile by nearest rank: always one of the values (``inf`` included)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * q / 100) - 1)]


def exponent(n1: float, t1: float, n2: float, t2: float) -> float:
    """``k`` in ``t = c * n**k`` through two points: 0 is a cost that does not grow with ``n``,
    1 a cost proportional to it."""
    if min(n1, t1, n2, t2) <= 0 or n1 == n2:
        raise ValueError(f"no growth through ({n1}, {t1}) and ({n2}, {t2})")
    return math.log(t2 / t1) / math.log(n2 / n1)
