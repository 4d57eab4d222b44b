"""Run an Invoke task as a command, as an operator would (:func:`ops.rehearsal.commands.inv`)."""

from __future__ import annotations

from ops.rehearsal.commands import inv

__all__ = ["inv"]
