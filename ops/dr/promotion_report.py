"""What a promotion did, read back from its journal: every step's time, RTO, RPO, what is left.

The RTO runs from the promotion's first start (the journal's ``started_at``, which a resumed
promotion keeps) to the moment GitLab answered ready through the public address (the
``ready_at`` of move-address-and-tags): time between runs counts, as it does for the users.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gitlab_sync.status import moment
from ops.dr import layouts
from ops.dr.journal import Journal
from ops.dr.promotion_steps import STEPS
from ops.dr.snapshots import JOURNAL_KEY, Choice

LEFT = (
    "runners: they reach GitLab at the same address; a runner that failed three times backs "
    "off for an hour (restart it, or wait)",
    "a new slave: inv rebuild-slave (or inv rebuild-slave --reuse INSTANCE once the old master "
    "is repaired)",
    "a post-mortem: why did the master fail? (bundle below)",
)


@dataclass(frozen=True)
class PromotionReport:
    """What a promotion did: steps and their times, RTO, RPO, and what is left."""

    done: bool
    already: bool
    from_epoch: int
    to_epoch: int
    new_master: str
    old_master: str
    steps: tuple[tuple[str, float, dict[str, Any]], ...]
    rto_seconds: float | None
    rpo_seconds: float | None
    snapshot: str | None
    restore: str | None
    """How GitLab got its data, and how long it took: ``restored snapshot X by a writable
    btrfs snapshot in 0.02 s`` (or ``by a copy in N s``)."""
    left: tuple[str, ...]
    postmortem: str | None
    choice: str | None = None
    """With ``--snapshot``/``--before``: the snapshot promoted from, what that lost and whether
    it was verified (None: the newest)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = [{"name": n, "seconds": s, **d} for n, s, d in self.steps]
        return data

    def lines(self) -> list[str]:
        if self.already:
            return [already_promoted(self.new_master, self.to_epoch)]
        out = [
            f"promoted {self.new_master} (epoch {self.from_epoch} -> {self.to_epoch}); "
            f"old master {self.old_master} fenced"
        ]
        for name, seconds, detail in self.steps:
            shown = ", ".join(
                f"{k}={v}" for k, v in detail.items() if k not in {"seconds", "ended_at"}
            )
            out.append(f"  {name:24} {seconds:8.2f} s  {shown}")
        if self.restore:
            out.append(self.restore)
        if self.choice:
            out.append(self.choice)
        rto = f"{self.rto_seconds:.1f} s" if self.rto_seconds is not None else "-"
        rpo = f"{self.rpo_seconds:.1f} s" if self.rpo_seconds is not None else "-"
        out.append(
            f"RTO {rto} (start to ready through the public address); "
            f"RPO {rpo} (writes after snapshot {self.snapshot} may be lost)"
        )
        out += [f"left: {item}" for item in self.left]
        return out


def already_promoted(new_master: str, epoch: int) -> str:
    """The sentence for a promotion run again after it finished."""
    return f"already promoted: {new_master} is master at epoch {epoch}; nothing to do"


def rto_seconds(data: dict[str, Any]) -> float | None:
    """From the first start to GitLab ready through the public address (None until then)."""
    moved = data["steps"].get("move-address-and-tags")
    if moved is None:
        return None
    started = moment(str(data.get("started_at") or ""))
    ready = moment(str(moved.get("ready_at") or moved.get("ended_at") or ""))
    if started is None or ready is None:
        return None
    return round(max(0.0, (ready - started).total_seconds()), 3)


def rpo_seconds(data: dict[str, Any]) -> float | None:
    """The window of writes the snapshot may miss: its pass's start to the last contact."""
    fresh = data["steps"].get("freshness", {})
    started = data["steps"].get("start-slave-gitlab", {})
    used = moment(str(started.get("snapshot_started_at") or ""))
    until = moment(str(fresh.get("until") or ""))
    if used and until:
        return max(0.0, (until - used).total_seconds())
    window = fresh.get("window_seconds")
    return float(window) if isinstance(window, int | float) else None


def choice_line(recorded: dict[str, Any] | None) -> str | None:
    """``promoted from snapshot S (not the newest, N): the writes between S's instant and N's,
    M s, are not in it; S was verified at T: ok`` (None without a choice)."""
    if not recorded:
        return None
    choice = Choice.from_json(recorded)
    snap = choice.snapshot
    return f"promoted from {choice.loss()}; {snap.name} was {snap.verification()}"


def report_of(journal: Journal, already: bool = False) -> PromotionReport:
    """The report of the promotion ``journal`` records."""
    data = journal.data
    recorded = data["steps"]
    started = recorded.get("start-slave-gitlab")
    return PromotionReport(
        done=journal.finished,
        already=already,
        from_epoch=data["from_epoch"],
        to_epoch=data["to_epoch"],
        new_master=data["slave"],
        old_master=data["master"],
        steps=tuple(
            (n, float(recorded[n]["seconds"]), recorded[n]) for n in STEPS if n in recorded
        ),
        rto_seconds=rto_seconds(data),
        rpo_seconds=rpo_seconds(data),
        snapshot=started.get("snapshot") if started else None,
        restore=layouts.restored(started) if started else None,
        left=LEFT,
        postmortem=recorded.get("report", {}).get("postmortem"),
        choice=choice_line(data.get(JOURNAL_KEY)),
    )
