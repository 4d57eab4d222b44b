"""Applying a launch plan: every kind of step has its verb and the method that performs it."""

from __future__ import annotations

from typing import get_args

from ops.aws.launch.apply import HANDLERS
from ops.aws.launch.model import VERBS, ActionKind


def test_every_kind_of_step_has_a_handler_and_a_verb() -> None:
    kinds = set(get_args(ActionKind))
    assert len(kinds) == 12
    assert set(HANDLERS) == kinds
    assert set(VERBS) == kinds
