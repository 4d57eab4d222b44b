"""Test doubles shared by unit tests."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock that only moves when something sleeps: waits run instantly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
