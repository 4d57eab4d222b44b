"""One way to wait: poll a condition until it holds or a deadline passes.

Deadlines and intervals are parameters and the clock is injectable, so tests pass a fast one.
The condition's own errors are not swallowed: a wait that cannot succeed fails at once.
Standard library only (the sidecar uses it, and so do ``ops`` and the tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    ready: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    error: Callable[[str], Exception] = TimeoutError,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call ``ready`` every ``interval`` s until it returns something truthy, and return that.

    After ``timeout`` s raises ``error("timed out after N s waiting for WHAT (DETAIL)")``;
    ``detail``, when given, says what was seen last.
    """
    deadline = clock() + timeout
    while True:
        value = ready()
        if value:
            return value
        if clock() >= deadline:
            seen = detail() if detail else ""
            raise error(
                f"timed out after {timeout:g} s waiting for {what}" + (f" ({seen})" if seen else "")
            )
        sleep(interval)
