"""The master's change watcher: batching, and the fall-back to timed passes.

``inotifywait`` is replaced by a script printing what the real one prints, so the kernel's
watch limit can be hit without changing the machine's sysctl.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gitlab_sync.watcher import Watcher

EXHAUSTED = """#!/bin/sh
echo "Setting up watches.  Beware: since -r was given, this may take a while!" >&2
echo "Failed to watch $8; upper limit on inotify watches reached!" >&2
echo "Please increase the amount of inotify watches allowed per user via" >&2
exit 1
"""

EVENTS = """#!/bin/sh
echo "Setting up watches.  Beware: since -r was given, this may take a while!" >&2
echo "Watches established." >&2
sleep 0.3
echo MODIFY; echo CREATE; echo CLOSE_WRITE,CLOSE
exec sleep 30
"""


def _fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    tool = tmp_path / "bin" / "inotifywait"
    tool.parent.mkdir()
    tool.write_text(script)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}:/usr/bin:/bin")


def test_exhausted_watches_fall_back_to_timed_passes_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake(tmp_path, monkeypatch, EXHAUSTED)
    notes: list[str] = []
    watcher = Watcher(tmp_path, notes.append)
    watcher.start(ready_within=5)
    assert watcher.mode == "timer"
    assert "inotify watches exhausted" in watcher.note
    assert "timed passes" in notes[-1]


def test_events_are_batched_until_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(tmp_path, monkeypatch, EVENTS)
    watcher = Watcher(tmp_path, lambda _m: None)
    watcher.start(ready_within=5)
    try:
        assert watcher.mode == "inotify"
        assert not watcher.due(time.monotonic(), batch=0.1, max_delay=1)
        deadline = time.monotonic() + 5
        while not watcher.due(time.monotonic(), batch=0.1, max_delay=1):
            assert time.monotonic() < deadline, "the batch never became due"
            time.sleep(0.02)
        watcher.take()
        assert not watcher.due(time.monotonic() + 10, batch=0.1, max_delay=1)
    finally:
        watcher.stop()


def test_changes_are_pending_until_a_pass_takes_them() -> None:
    watcher = Watcher(Path("/nonexistent"), lambda _m: None)
    assert not watcher.pending()
    watcher.poke()
    assert watcher.pending()
    watcher.take()
    assert not watcher.pending()
