"""How long work reports progress: a callable that takes one line (``print``, or a task's
prefixed writer in ``tasks.py``)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]
"""Receives one line of progress at a time."""
