"""The master's change watcher: inotify on the source tree, through ``inotifywait``.

It says when a batch of changes is due (``batch`` seconds of quiet, or ``max_delay`` at most) and
whether changes are pending. When inotify cannot watch the tree (watches exhausted), it says so
and the sender carries on with timed passes alone.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

from gitlab_sync.config import Log


def watch_exclude(root: Path) -> str:
    """inotifywait's --exclude for PostgreSQL's data and logs under ``root``."""
    base = re.escape(str(root).rstrip("/"))
    return f"^{base}/(data/postgresql|logs/postgresql)(/|$)"


class Watcher:
    """inotify on the source tree through ``inotifywait``; says when a batch of changes is due."""

    def __init__(self, root: Path, log: Log, exclude: str = ""):
        self.root, self.log, self.exclude = root, log, exclude
        self.mode = "starting"
        self.note = ""
        self._first = 0.0
        self._last = 0.0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    def start(self, ready_within: float = 120.0) -> None:
        """Start watching; returns once the watches are set up (or failed, or time ran out)."""
        self._ready = threading.Event()
        threading.Thread(target=self._read, name="inotify", daemon=True).start()
        self._ready.wait(ready_within)

    def _read(self) -> None:
        self._proc = subprocess.Popen(
            [
                "inotifywait",
                "-m",
                "-r",
                *(["--exclude", self.exclude] if self.exclude else []),
                "--format",
                "%e",
                "-e",
                "modify,attrib,close_write,move,create,delete,delete_self,move_self",
                str(self.root),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        errors: list[str] = []
        reader = threading.Thread(target=self._read_stderr, args=(errors,), daemon=True)
        reader.start()
        for _line in self._proc.stdout or ():
            self.poke()
        code = self._proc.wait()
        reader.join(5)  # every line of stderr read before it is judged
        err = " ".join(errors)
        if "upper limit on inotify" in err:
            self.note = (
                "inotify watches exhausted (raise fs.inotify.max_user_watches); "
                "falling back to timed passes"
            )
        else:
            self.note = f"inotify stopped (exit {code}): {err.strip()[:200]}; timed passes only"
        self.mode = "timer"
        self.log(self.note)
        self._ready.set()

    def _read_stderr(self, errors: list[str]) -> None:
        stderr = self._proc.stderr if self._proc else None
        for line in stderr or ():
            if "Watches established" in line:
                self.mode = "inotify"
                self._ready.set()
            elif "Setting up watches" not in line:
                errors.append(line.strip())

    def poke(self) -> None:
        """Count a change seen some other way than inotify (PostgreSQL's transactions)."""
        now = time.monotonic()
        with self._lock:
            if not self._first:
                self._first = now
            self._last = now

    def due(self, now: float, batch: float, max_delay: float) -> bool:
        with self._lock:
            if not self._first:
                return False
            return now - self._last >= batch or now - self._first >= max_delay

    def pending(self) -> bool:
        """Whether changes were seen that no pass has taken yet."""
        with self._lock:
            return bool(self._first)

    def take(self) -> None:
        with self._lock:
            self._first = self._last = 0.0

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
