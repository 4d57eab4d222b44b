"""The daemon, the CLI and the sender write the same state files at the same moments.

``gitlab-sync start`` writes ``known_hosts`` while the daemon, seeing the pairing change, writes
it too: when both wrote through one temporary name, one of them lost the file under its feet
(FileNotFoundError), and when the loser was the daemon the container died and took the CLI with
it (``gitlab-sync start exited 137``, no output).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gitlab_sync
from gitlab_sync import keys
from gitlab_sync.config import Paths

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKf3m4yD5c7Vg2Qx0j9cT1uYtQx7kHkqz8m0Jt3JHq2b"

WRITER = """
import sys
from pathlib import Path
from gitlab_sync import keys
from gitlab_sync.config import Pairing, Paths, Peer, write_json
root = Path(sys.argv[1])
paths = Paths(state=root, source=root / "source", sync=root / "sync")
pairing = Pairing("master", Peer("slave"), sys.argv[2])
failures = 0
for n in range(int(sys.argv[3])):
    try:
        keys.write_trust(paths, pairing)
        write_json(paths.passes, {"n": n})
    except OSError as exc:
        failures += 1
        last = exc
print(failures, last if failures else "")
"""


def test_two_processes_writing_the_trust_files_at_once_both_succeed(tmp_path: Path) -> None:
    paths = Paths(state=tmp_path, source=tmp_path / "source", sync=tmp_path / "sync")
    keys.ensure_keys(paths)  # made once, as the daemon does at start
    package_root = str(Path(gitlab_sync.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": package_root}
    argv = [sys.executable, "-c", WRITER, str(tmp_path), KEY, "400"]
    writers = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    reports = [writer.communicate(timeout=120)[0].strip() for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0]
    assert [report.split()[0] for report in reports] == ["0", "0"], reports
    hosts = keys.known_hosts(paths).read_text()
    assert hosts == f"[slave]:2222 {KEY}\n"
    assert oct(keys.known_hosts(paths).stat().st_mode & 0o777) == "0o600"
    leftovers = [p.name for p in tmp_path.rglob(".*") if p.name.startswith((".known", ".auth"))]
    assert leftovers == []
