"""Trees that hold every kind of file GitLab's data can hold, written inside a container."""

from __future__ import annotations

# Run with python3 in the writer container, as root, against /source.
EVERY_KIND = r"""
import os
root = b"/source"
def p(*parts): return os.path.join(root, *parts)
os.makedirs(p(b"data", b"git-data", b"repositories", b"group", b"project.git", b"refs", b"heads"), exist_ok=True)
os.makedirs(p(b"data", b"empty", b"nested-empty"), exist_ok=True)
os.makedirs(p(b"config"), exist_ok=True)
os.makedirs(p(b"logs"), exist_ok=True)
def write(path, data, mode=0o644, owner=(0, 0), mtime_ns=None):
    with open(path, "wb") as f: f.write(data)
    os.chown(path, *owner); os.chmod(path, mode)
    if mtime_ns: os.utime(path, ns=(mtime_ns, mtime_ns))
write(p(b"config", b"gitlab-secrets.json"), b'{"secret": "not really"}', 0o600, (0, 0))
write(p(b"config", b"gitlab.rb"), b"external_url 'http://x'\n", 0o644, (998, 998), 1_600_000_000_123_456_789)
write(p(b"data", b"git-data", b"repositories", b"group", b"project.git", b"HEAD"), b"ref: refs/heads/main\n", 0o644, (998, 998))
write(p(b"data", b"git-data", b"repositories", b"group", b"project.git", b"refs", b"heads", b"main"), b"0" * 40 + b"\n", 0o644, (998, 998))
write(p(b"data", b"setuid-tool"), b"#!/bin/sh\n", 0o4755, (0, 996))
write(p(b"data", b"odd owner"), b"12345:54321", 0o640, (12345, 54321))
write(p(b"data", b"name with spaces"), b"spaces", 0o644, (998, 998))
write(p(b"data", b"name\nwith\nnewlines"), b"newlines", 0o644, (998, 998))
write(p(b"data", b"-leading-dash"), b"dash", 0o644, (998, 998))
write(p(b"data", b"--delete"), b"looks like an option", 0o644, (998, 998))
write(p(b"data", b"not-utf8-\xff\xfe\xc3"), b"bytes", 0o644, (998, 998))
write(p(b"data", b"big.pack"), os.urandom(3 * 1024 * 1024), 0o444, (998, 998))
os.link(p(b"data", b"big.pack"), p(b"data", b"big-hardlink.pack"))
os.link(p(b"data", b"odd owner"), p(b"config", b"odd owner link"))
with open(p(b"data", b"sparse.img"), "wb") as f:
    f.write(b"head"); f.seek(64 * 1024 * 1024); f.write(b"tail")
os.chown(p(b"data", b"sparse.img"), 996, 996)
os.symlink(b"git-data/repositories", p(b"data", b"repos-link"))
os.symlink(b"/etc/passwd", p(b"data", b"absolute-link-out-of-tree"))
os.symlink(b"../../../../../etc/shadow", p(b"data", b"relative-link-out-of-tree"))
os.symlink(b"does-not-exist", p(b"data", b"dangling"))
os.lchown(p(b"data", b"dangling"), 998, 998)
os.mkfifo(p(b"data", b"a-fifo")); os.chown(p(b"data", b"a-fifo"), 998, 998)
os.chmod(p(b"data", b"empty"), 0o1777)
os.chown(p(b"data", b"empty", b"nested-empty"), 998, 998)
os.utime(p(b"data", b"empty", b"nested-empty"), ns=(1_500_000_000_000_000_001, 1_500_000_000_000_000_001))
os.utime(p(b"data", b"repos-link"), ns=(1_400_000_000_000_000_000,) * 2, follow_symlinks=False)
"""


def files(count: int, size: int, folder: str = "data/many") -> str:
    """A script writing ``count`` files of ``size`` random bytes under /source/``folder``."""
    return (
        "import os\n"
        f"d = '/source/{folder}'\n"
        "os.makedirs(d, exist_ok=True)\n"
        f"for i in range({count}):\n"
        f"    open(os.path.join(d, f'f{{i:06d}}'), 'wb').write(os.urandom({size}))\n"
    )
