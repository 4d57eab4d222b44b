"""gitlab-dr's Invoke tasks: thin wrappers that parse flags, call ``ops`` and print.

Run ``inv --list`` for the tasks and ``inv --help TASK`` for one. Settings come from ``.env``
(or the file named by ``ENV_FILE``) and the environment; see ``.env.example``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from ops import settings as settings_mod
from ops.errors import OpsError, Refusal

F = TypeVar("F", bound=Callable[..., Any])


def edge(func: F) -> F:
    """Turn an ``ops`` error into a one-line message and an exit code (3 for a refusal)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Refusal as exc:
            raise Exit(f"refused: {exc}", 3) from exc
        except OpsError as exc:
            raise Exit(f"error: {exc}", 1) from exc

    return wrapper  # type: ignore[return-value]


def load_settings() -> settings_mod.Settings:
    """The validated settings (a bad one stops the task with a one-line error)."""
    try:
        return settings_mod.load()
    except OpsError as exc:
        raise Exit(f"error: {exc}", 2) from exc


@task
@edge
def settings(c: Any, json: bool = False) -> None:
    """Check the settings and print them (from .env or $ENV_FILE, and the environment)."""
    import dataclasses
    import json as json_mod

    values = dataclasses.asdict(load_settings())
    if json:
        print(json_mod.dumps(values, indent=2))
        return
    for key, value in values.items():
        print(f"{key.upper():22} {value}")


ns = Collection(settings)
