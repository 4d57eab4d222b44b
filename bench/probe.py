"""The benchmark's hands inside the containers: standard library only, run as ``python3 -``.

It is sent whole to a container's Python with its arguments (``bench.cluster.Box.probe``), so
the tree, the churn and the observation all happen next to the data, on the kernel's clock
that every container on the engine shares.

- ``tree ROOT FILES BYTES SEED``: a tree shaped like GitLab's data directory: repositories of
  many small loose objects and a few large packs, refs, and uploads.
- ``churn SOURCE OBSERVED RATE SECONDS DRAIN SEED``: RATE file changes a second on SOURCE
  (new objects, rewritten files, deletions) and, for each, the delay until OBSERVED (the
  slave's newest complete copy, seen through a read-only mount) shows it.
- ``ballast ROOT BYTES``: sparse files of 1 GiB (64 KiB of data each, holes after it) under
  the registry's blobs, so that a snapshot is BYTES larger at little memory or disk.
- ``compare A B``: every entry's type, mode, owner, size, mtime and (up to 1 MiB) content.
- ``rss OUT STOP``: the peak of the memory of every other process in the container (PSS,
  summed), sampled every 50 ms until the file STOP appears.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import sys
import threading
import time
import zlib
from pathlib import Path

REPOS = "data/git-data/repositories/@hashed"
UPLOADS = "data/gitlab-rails/uploads/@hashed"
BLOCK = 1 << 20


def _noise(rng: random.Random) -> bytes:
    return rng.randbytes(BLOCK)


def _write(path: Path, size: int, noise: bytes, tag: bytes) -> None:
    """``size`` bytes: ``tag`` then slices of ``noise`` (incompressible, distinct per file)."""
    with open(path, "wb") as handle:
        handle.write(tag[:size])
        left = size - min(size, len(tag))
        offset = zlib.crc32(tag) % BLOCK
        while left > 0:
            piece = noise[offset : offset + left]
            handle.write(piece)
            left -= len(piece)
            offset = 0


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(low * (high / low) ** rng.random())


def make_tree(
    root: Path, files: int, total_bytes: int, seed: int, small_max: int = 16 << 10
) -> dict[str, object]:
    """About ``files`` files and ``total_bytes`` bytes under ``root``: 90% loose objects of
    100 B to ``small_max``, 9% uploads of 1 KiB to 16 times that, refs, and large packs
    taking the rest."""
    started = time.monotonic()
    rng = random.Random(seed)
    noise = _noise(rng)
    repos = max(1, files // 1000)
    packs = max(1, min(repos, files // 2000))
    uploads = files * 9 // 100
    loose = files - uploads - packs - repos * 3
    written = entries = 0
    repo_dirs = []
    for r in range(repos):
        digest = hashlib.sha256(f"repo{r}".encode()).hexdigest()
        repo = root / REPOS / digest[:2] / digest[2:4] / f"{digest}.git"
        (repo / "refs/heads").mkdir(parents=True, exist_ok=True)
        (repo / "objects/pack").mkdir(parents=True, exist_ok=True)
        written += (repo / "HEAD").write_text("ref: refs/heads/main\n")
        written += (repo / "config").write_text("[core]\n\tbare = true\n")
        written += (repo / "refs/heads/main").write_text(
            hashlib.sha1(digest.encode()).hexdigest() + "\n"
        )
        repo_dirs.append(repo)
        entries += 3
    for i in range(loose):
        name = hashlib.sha1(f"object{i}".encode()).hexdigest()
        folder = repo_dirs[i % repos] / "objects" / name[:2]
        folder.mkdir(exist_ok=True)
        size = _log_uniform(rng, min(100, small_max // 2), small_max)
        _write(folder / name[2:], size, noise, name.encode())
        written += size
    for i in range(uploads):
        name = hashlib.sha256(f"upload{i}".encode()).hexdigest()
        folder = root / UPLOADS / name[:2] / name[2:4] / name[4:36]
        folder.mkdir(parents=True, exist_ok=True)
        size = _log_uniform(rng, min(1 << 10, small_max), small_max * 16)
        _write(folder / f"file{i}.bin", size, noise, name.encode())
        written += size
    pack_size = max(1 << 20, (total_bytes - written) // packs)
    for i in range(packs):
        name = hashlib.sha1(f"pack{i}".encode()).hexdigest()
        _write(
            repo_dirs[i % repos] / "objects/pack" / f"pack-{name}.pack", pack_size, noise, b"PACK"
        )
        written += pack_size
    entries += loose + uploads + packs
    return {
        "files": entries,
        "bytes": written,
        "repositories": repos,
        "packs": packs,
        "seconds": round(time.monotonic() - started, 3),
    }


BALLAST = "data/gitlab-rails/shared/registry/docker/registry/v2/blobs/sha256"


def ballast(root: Path, total: int) -> dict[str, object]:
    """Sparse files adding up to ``total`` bytes: each 1 GiB (the last what is left) with
    64 KiB of distinct data at its start, the rest a hole. Files already there at their size
    are kept (a larger ballast adds to a smaller one)."""
    made = allocated = 0
    count = 0
    while made < total:
        size = min(1 << 30, total - made)
        digest = hashlib.sha256(f"ballast{count}".encode()).hexdigest()
        path = root / BALLAST / digest[:2] / digest / "data"
        if not path.exists() or path.stat().st_size != size:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as handle:
                handle.write((digest.encode() * 1024)[: min(size, 64 << 10)])
                handle.truncate(size)
        allocated += path.stat().st_blocks * 512
        made += size
        count += 1
    return {"files": count, "bytes": made, "allocated": allocated}


def _rewrite(path: Path, head: bytes, rng: random.Random, temp_name: str) -> None:
    """New content for ``path``: ``head`` and 60 B to 8 KiB of noise, written aside and renamed
    over it, as git and GitLab replace files (never half-written for a reader)."""
    temp = path.with_name(temp_name)
    temp.write_bytes(head + rng.randbytes(_log_uniform(rng, 60, 8 << 10)))
    os.rename(temp, path)


def _small_files(root: Path, limit: int = 64 << 10) -> list[str]:
    """Loose objects and uploads (not refs, HEAD or packs): what the churn rewrites or deletes."""
    found = []
    for folder, _dirs, names in os.walk(root / "data"):
        for name in names:
            if name in {"HEAD", "config", "main"} or name.endswith(".pack"):
                continue
            path = os.path.join(folder, name)
            if os.lstat(path).st_size <= limit:
                found.append(os.path.relpath(path, root))
    found.sort()
    return found


# One change: its number, kind, when it was written (s from the start) and its lag (None:
# never seen on the slave).
Record = tuple[int, str, float, float | None]


class Churn:
    """Writes the changes on schedule while a second thread watches for each on the slave."""

    def __init__(self, source: Path, observed: Path, rate: float, seed: int):
        self.source, self.observed, self.rate = source, observed, rate
        self.rng = random.Random(seed)
        self.pool = _small_files(source)
        self.rng.shuffle(self.pool)
        self.dirs = sorted({str(Path(p).parent) for p in self.pool if "/objects/" in p})
        self.pending: dict[str, tuple[int, str, bytes, float]] = {}
        self.lock = threading.Lock()
        self.records: list[Record] = []
        self.writing = True
        self.start = 0.0

    def change(self, seq: int) -> None:
        roll = self.rng.random()
        tag = f"CHANGE {seq:08d} {self.rng.getrandbits(64):016x}\n".encode()
        if roll < 0.6 or not self.pool:
            kind = "create"
            rel = f"{self.rng.choice(self.dirs)}/{hashlib.sha1(tag).hexdigest()[2:]}"
        else:
            kind = "modify" if roll < 0.9 else "delete"
            rel = self.pool.pop()
        path = self.source / rel
        if kind == "delete":
            path.unlink()
        else:
            _rewrite(path, tag, self.rng, f".tmp-{seq}")
        now = time.monotonic()
        with self.lock:
            self.pending[rel] = (seq, kind, tag, now)

    def seen(self, rel: str, kind: str, tag: bytes) -> bool:
        path = self.observed / rel
        if kind == "delete":
            return not os.path.lexists(path)
        try:
            with open(path, "rb") as handle:
                return handle.read(len(tag)) == tag
        except OSError:
            return False

    def watch(self) -> None:
        while True:
            with self.lock:
                pending = list(self.pending.items())
            if not pending and not self.writing:
                return
            for rel, (seq, kind, tag, at) in pending:
                if self.seen(rel, kind, tag):
                    now = time.monotonic()
                    with self.lock:
                        del self.pending[rel]
                        self.records.append((seq, kind, round(at - self.start, 4), now - at))
                        if kind == "modify":
                            self.pool.insert(0, rel)  # may change again, after it was seen
            time.sleep(0.02)

    def run(self, seconds: float, drain: float) -> dict[str, object]:
        watcher = threading.Thread(target=self.watch, daemon=True)
        self.start = time.monotonic()
        watcher.start()
        total = int(seconds * self.rate)
        for seq in range(total):
            due = self.start + seq / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.change(seq)
        wrote_for = time.monotonic() - self.start
        self.writing = False
        watcher.join(drain)
        with self.lock:
            missing: list[Record] = [
                (seq, kind, round(at - self.start, 4), None)
                for _rel, (seq, kind, _tag, at) in self.pending.items()
            ]
            self.pending.clear()
        records = sorted(self.records + missing)
        return {
            "changes": total,
            "wrote_for_s": round(wrote_for, 3),
            "never_seen": len(missing),
            "records": [
                [seq, kind, at, None if lag is None else round(lag, 4)]
                for seq, kind, at, lag in records
            ],
        }


def touch(root: Path, count: int, seed: int) -> dict[str, object]:
    """Rewrite ``count`` small files, each to new content (what a change-triggered pass sends)."""
    rng = random.Random(seed)
    chosen = rng.sample(_small_files(root), count)
    for rel in chosen:
        path = root / rel
        _rewrite(path, f"TOUCH {seed}\n".encode(), rng, f".tmp-touch-{seed}")
    return {"changed": len(chosen)}


def entries(root: Path) -> dict[str, tuple[object, ...]]:
    """What :func:`compare` compares of each entry under ``root``, by relative path: type,
    mode, owner, size, mtime (not a directory's) and a small file's digest."""
    out: dict[str, tuple[object, ...]] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, root)
            kind = stat.S_IFMT(info.st_mode)
            digest = ""
            if stat.S_ISREG(info.st_mode) and info.st_size <= BLOCK:
                with open(path, "rb") as handle:
                    digest = hashlib.blake2b(handle.read(), digest_size=16).hexdigest()
            mtime = info.st_mtime_ns if not stat.S_ISDIR(info.st_mode) else 0
            size = info.st_size if not stat.S_ISDIR(info.st_mode) else 0
            out[rel] = (
                kind,
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                size,
                mtime,
                digest,
            )
    return out


def compare(a: Path, b: Path) -> dict[str, object]:
    """The differences between two trees (directory mtimes aside: a pass sets them later)."""
    left, right = entries(a), entries(b)
    differ = sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))
    return {"entries": len(left), "differences": len(differ), "first": differ[:10]}


def _pss_kib(pid: str) -> int:
    """A process's proportional set size: its RSS with shared pages split among their users,
    so forked rsync processes are not counted twice. VmRSS where smaps_rollup is missing."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):  # gone, or a kernel thread's empty rollup
        pass
    try:
        for line in Path(f"/proc/{pid}/status").read_text(errors="replace").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss(out: Path, stop: Path) -> None:
    """The peak of the container's memory (summed PSS), sampled every 50 ms until ``stop``."""
    me = str(os.getpid())
    peak = 0
    top: dict[str, int] = {}
    while not stop.exists():
        now: dict[str, int] = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == me:
                continue
            try:
                name = Path(f"/proc/{pid}/comm").read_text(errors="replace").strip()
            except OSError:  # the process has gone
                continue
            now[name] = now.get(name, 0) + _pss_kib(pid)
        total = sum(now.values())
        if total > peak:
            peak, top = total, now
        time.sleep(0.05)
    out.write_text(json.dumps({"peak_kib": peak, "by_process_kib": top}))


def main(argv: list[str]) -> int:
    verb, args = argv[0], argv[1:]
    if verb == "tree":
        result: object = make_tree(
            Path(args[0]), int(args[1]), int(args[2]), int(args[3]), int(args[4])
        )
    elif verb == "touch":
        result = touch(Path(args[0]), int(args[1]), int(args[2]))
    elif verb == "churn":
        churn = Churn(Path(args[0]), Path(args[1]), float(args[2]), int(args[5]))
        result = churn.run(float(args[3]), float(args[4]))
    elif verb == "ballast":
        result = ballast(Path(args[0]), int(args[1]))
    elif verb == "compare":
        result = compare(Path(args[0]), Path(args[1]))
    elif verb == "rss":
        rss(Path(args[0]), Path(args[1]))
        return 0
    else:
        print(f"probe: unknown verb {verb!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
