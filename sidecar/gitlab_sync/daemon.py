"""The sidecar's main process: does what the pairing in the state volume says, and keeps at it.

It re-reads the pairing twice a second, so ``gitlab-sync add/start/stop/rm`` only write the
pairing and wait for the daemon to follow. After a restart it reads the same pairing and goes
back to what it was doing: a slave receives, a running master sends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from gitlab_sync import frozen_pass, keys, metrics
from gitlab_sync.config import Pairing, Paths, Tunables, iso, load_pairing, write_json
from gitlab_sync.sender import Sender
from gitlab_sync.snapshots import Area
from gitlab_sync.watcher import CHANGE_LIMIT, POSTGRESQL_OWN, Watcher

SSHD_CONFIG = "/etc/gitlab-sync/sshd_config"


def log(message: str) -> None:
    print(f"{iso(dt.datetime.now(dt.UTC))} gitlab-sync: {message}", flush=True)


class Daemon:
    def __init__(self, paths: Paths, tunables: Tunables):
        self.paths, self.tunables = paths, tunables
        self.pairing: Pairing | None = None
        self.sshd: subprocess.Popen[bytes] | None = None
        self.sender: Sender | None = None
        self.sender_thread: threading.Thread | None = None
        self.watcher: Watcher | None = None
        self.started_at = iso(dt.datetime.now(dt.UTC))
        self.done = threading.Event()

    def run(self) -> int:
        keys.ensure_keys(self.paths)
        write_json(self.paths.tunables, dataclasses.asdict(self.tunables), mode=0o644)
        Path("/run/gitlab-sync").mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        threading.Thread(target=self._empty_trash, name="trash", daemon=True).start()
        self._start_metrics()
        log("started")
        while not self.done.is_set():
            self._reconcile(load_pairing(self.paths))
            self._heartbeat()
            self.done.wait(0.5)
        self._reconcile(None)
        self._heartbeat()
        log("stopped")
        return 0

    def _start_metrics(self) -> None:
        """``/metrics`` on its own thread, and the textfile when METRICS_TEXTFILE_DIR is set:
        both read the status files, never wait on a pass."""
        try:
            metrics.serve(self.paths, log)
            log(f"metrics on :{metrics.PORT}/metrics")
        except OSError as exc:
            log(f"metrics not served: port {metrics.PORT}: {exc.strerror or exc}")
        directory = metrics.textfile_dir()
        if directory is not None:
            threading.Thread(
                target=metrics.textfile_loop,
                args=(self.paths, directory, log, self.done),
                name="textfile",
                daemon=True,
            ).start()
            log(f"metrics textfile in {directory}")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.done.set()

    def _reconcile(self, pairing: Pairing | None) -> None:
        if pairing != self.pairing:
            keys.write_trust(self.paths, pairing)
            if self.pairing is not None or pairing is not None:
                log(f"pairing: {_describe(pairing)}")
        want_receiver = pairing is not None and pairing.role == "slave"
        want_sender = pairing is not None and pairing.role == "master" and pairing.running
        if self.sender and (not want_sender or pairing != self.pairing):
            self._stop_sender()
        if self.sshd and (not want_receiver or (self.sshd.poll() is not None)):
            self._stop_sshd()
        self.pairing = pairing
        if want_receiver and self.sshd is None:
            self._start_sshd()
        if want_sender and self.sender is None and pairing is not None:
            self._start_sender(pairing)

    def _start_sshd(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.sshd = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", SSHD_CONFIG], stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.sshd.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", 2222), timeout=1).close()
                log("receiver listening")
                return
            except OSError:
                time.sleep(0.05)
        log("receiver did not start listening")

    def _stop_sshd(self) -> None:
        if self.sshd is not None:
            if self.sshd.poll() is None:
                self.sshd.terminate()
                self.sshd.wait(10)
            else:
                log(f"receiver exited with {self.sshd.returncode}; restarting")
            self.sshd = None

    def _start_sender(self, pairing: Pairing) -> None:
        self.sender = Sender(self.paths, pairing, self.tunables, log)
        log(f"layout: {self.sender.layout.method} ({self.sender.layout.why})")
        if self.sender.layout.method == "snapshots":
            # Every path is watched and kept, and cut at the markers of each pass.
            self.watcher = Watcher(
                self.paths.source, log, marks=frozen_pass.folder(self.paths), limit=change_limit()
            )
        else:
            self.watcher = Watcher(self.paths.source, log, exclude=POSTGRESQL_OWN)
        watcher, sender = self.watcher, self.sender

        def work() -> None:
            watcher.start()
            sender.loop(watcher)

        self.sender_thread = threading.Thread(target=work, name="sender", daemon=True)
        self.sender_thread.start()
        log(f"sending to {pairing.peer}")

    def _stop_sender(self) -> None:
        if self.sender is not None:
            self.sender.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.sender_thread is not None:
            self.sender_thread.join(30)
        self.sender = self.sender_thread = self.watcher = None
        log("sending stopped")

    def _heartbeat(self) -> None:
        write_json(
            self.paths.daemon,
            {
                "pid": os.getpid(),
                "started_at": self.started_at,
                "heartbeat": iso(dt.datetime.now(dt.UTC)),
                "receiving": self.sshd is not None and self.sshd.poll() is None,
                "sending": self.sender_thread is not None and self.sender_thread.is_alive(),
                "watch": self.watcher.mode if self.watcher else None,
                "watch_note": self.watcher.note if self.watcher else "",
                # changes seen that no pass has taken yet (the tests wait for a still master)
                "changes_pending": bool(self.watcher and self.watcher.pending()),
            },
        )

    def _empty_trash(self) -> None:
        area = Area(self.paths.sync)
        while not self.done.is_set():
            try:
                if area.empty_trash():
                    log("pruned snapshots deleted")
            except OSError as exc:
                log(f"could not empty the trash: {exc}")
            time.sleep(5)


def change_limit() -> int:
    """SYNC_MAX_CHANGES: paths kept between two passes at most (beyond, a full pass is sent)."""
    text = os.environ.get("SYNC_MAX_CHANGES", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else CHANGE_LIMIT


def _describe(pairing: Pairing | None) -> str:
    if pairing is None:
        return "none"
    return f"{pairing.role} of {pairing.peer}, epoch {pairing.epoch}, running={pairing.running}"


def main() -> int:
    if sys.platform != "linux":
        print("gitlab-sync daemon runs only inside the gitlab-rsync container", file=sys.stderr)
        return 1
    return Daemon(Paths.from_env(), Tunables.from_env()).run()
