"""A promotion's journal (``STATE_DIR/promotions/PROJECT-epochN.json``): which steps are done,
when, and what they found, so that a promotion cut short resumes where it stopped.

``started_at`` is the wall-clock moment the promotion first began; it does not move when the
promotion is resumed, and the RTO counts from it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gitlab_sync.config import iso
from ops.aws.inventory import PairState
from ops.errors import OpsError
from ops.settings import Settings


class Journal:
    """One promotion's record, saved atomically after every change."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data

    @classmethod
    def folder(cls, settings: Settings) -> Path:
        return Path(settings.state_dir) / "promotions"

    @classmethod
    def all_of(cls, settings: Settings) -> list[Journal]:
        """This project's journals, oldest epoch first."""
        folder = cls.folder(settings)
        if not folder.is_dir():
            return []
        return [
            cls.read(path) for path in sorted(folder.glob(f"{settings.project_name}-epoch*.json"))
        ]

    @classmethod
    def read(cls, path: Path) -> Journal:
        """The journal saved at ``path``."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OpsError(f"the promotion journal {path} cannot be read: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
            raise OpsError(f"the promotion journal {path} is not a journal")
        return cls(path, data)

    @staticmethod
    def choose(journals: Sequence[Journal], epoch: int) -> Journal | None:
        """The unfinished promotion, else the finished one that made ``epoch``."""
        found = [j for j in journals if not j.finished or j.data.get("to_epoch") == epoch]
        unfinished = [j for j in found if not j.finished]
        chosen = unfinished or found
        return chosen[-1] if chosen else None

    @classmethod
    def open_for(cls, settings: Settings, state: PairState) -> Journal | None:
        """The unfinished promotion of this project, or the finished one for this epoch."""
        return cls.choose(cls.all_of(settings), state.epoch)

    @classmethod
    def unfinished(cls, settings: Settings) -> Journal | None:
        """The promotion of this project that was cut short, if any."""
        return next((j for j in reversed(cls.all_of(settings)) if not j.finished), None)

    @classmethod
    def new(
        cls,
        settings: Settings,
        *,
        epoch: int,
        master: str,
        slave: str,
        planned: bool,
        started: dt.datetime,
    ) -> Journal:
        """The journal of a promotion from ``epoch`` that began at ``started``, saved."""
        path = cls.folder(settings) / f"{settings.project_name}-epoch{epoch}.json"
        data = {
            "project": settings.project_name,
            "from_epoch": epoch,
            "to_epoch": epoch + 1,
            "master": master,
            "slave": slave,
            "planned": planned,
            "started_at": iso(started),
            "steps": {},
            "done": False,
        }
        journal = cls(path, data)
        journal.save()
        return journal

    @property
    def finished(self) -> bool:
        return bool(self.data.get("done"))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        tmp.replace(self.path)

    def done(self, step: str) -> bool:
        return step in self.data["steps"]

    def steps_done(self) -> tuple[str, ...]:
        """The steps recorded, in the order they ended."""
        steps: dict[str, dict[str, Any]] = self.data["steps"]
        return tuple(sorted(steps, key=lambda name: str(steps[name].get("ended_at", ""))))

    def record(
        self,
        step: str,
        started: float,
        ended: float,
        detail: dict[str, Any],
        at: dt.datetime | None = None,
    ) -> None:
        """Record ``step`` as done: its seconds (monotonic ``started`` to ``ended``), when it
        ended (``at``, wall clock; now by default) and what it found."""
        self.data["steps"][step] = {
            "seconds": round(ended - started, 3),
            "ended_at": iso(at or dt.datetime.now(dt.UTC)),
            **detail,
        }
        self.save()
