"""Keys made at pairing time, and the SSH plumbing around them.

Each sidecar makes two ed25519 keys in its state volume the first time it needs them: a client
key (used when it is the master) and a host key (presented by its receiver when it is the
slave). Only public keys ever leave the volume; private keys never appear in an argument, an
environment variable, a log line or the image.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

from gitlab_sync.config import Pairing, Paths, SyncError, write_text
from gitlab_sync.ssh_errors import SshFailure, classify

_PUBKEY = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]{40,}( \S.*)?$")
FORCED_COMMAND = "/usr/local/bin/gitlab-sync serve"


def client_key(paths: Paths) -> Path:
    return paths.ssh / "id_ed25519"


def host_key(paths: Paths) -> Path:
    return paths.ssh / "host_ed25519_key"


def ensure_keys(paths: Paths) -> None:
    """Make the client and host keys if they are not there yet (idempotent)."""
    paths.state.mkdir(parents=True, exist_ok=True)
    paths.ssh.mkdir(mode=0o700, exist_ok=True)
    os.chmod(paths.ssh, 0o700)
    comment = f"gitlab-sync@{socket.gethostname()}"
    for key in (client_key(paths), host_key(paths)):
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )


def public_keys(paths: Paths) -> dict[str, str]:
    ensure_keys(paths)
    return {
        "client": client_key(paths).with_suffix(".pub").read_text().strip(),
        "host": Path(f"{host_key(paths)}.pub").read_text().strip(),
    }


def check_public_key(text: str) -> str:
    """``text`` if it is one OpenSSH public key line; a private key is refused loudly."""
    value = " ".join(text.split())
    if "PRIVATE KEY" in text:
        raise SyncError("that is a private key; give the peer's public key (gitlab-sync key)")
    if not _PUBKEY.match(value):
        raise SyncError(
            "malformed key: expected an OpenSSH public key line like 'ssh-ed25519 AAAA...'"
        )
    return value


def _key_only(text: str) -> str:
    return " ".join(text.split()[:2])


def known_hosts(paths: Paths) -> Path:
    return paths.ssh / "known_hosts"


def authorized_keys(paths: Paths) -> Path:
    return paths.ssh / "authorized_keys"


def write_trust(paths: Paths, pairing: Pairing | None) -> None:
    """Write known_hosts (master) and authorized_keys (slave) for ``pairing``; clear the other.

    The slave lets the master's key run exactly one command, the receiver, with no shell, no
    forwarding and no terminal (``restrict``).
    """
    ensure_keys(paths)
    hosts, auth = "", ""
    if pairing and pairing.role == "master":
        peer = pairing.peer
        name = peer.host if peer.port == 22 else f"[{peer.host}]:{peer.port}"
        hosts = f"{name} {_key_only(pairing.peer_key)}\n"
    elif pairing and pairing.role == "slave":
        auth = f'restrict,command="{FORCED_COMMAND}" {_key_only(pairing.peer_key)} master\n'
    # The daemon, ``gitlab-sync start`` and the sender all write these, at the same moments.
    write_text(known_hosts(paths), hosts)
    write_text(authorized_keys(paths), auth)


def ssh_argv(paths: Paths, pairing: Pairing, connect_timeout: int = 10) -> list[str]:
    """The master's ssh command to the slave's receiver: host key checked, no prompt, ever."""
    return [
        "ssh",
        "-i",
        str(client_key(paths)),
        "-p",
        str(pairing.peer.port),
        "-l",
        "root",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts(paths)}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "-o",
        "ServerAliveInterval=10",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPath=/run/gitlab-sync/ssh-%C",
        "-o",
        "ControlPersist=60",
        "-o",
        "LogLevel=ERROR",
    ]


def remote(
    paths: Paths,
    pairing: Pairing,
    words: list[str],
    timeout: float = 60.0,
    input_text: str | None = None,
) -> str:
    """Run one receiver verb on the slave (``input_text`` on its stdin); its output.

    Failures become SyncError.
    """
    Path("/run/gitlab-sync").mkdir(parents=True, exist_ok=True)
    argv = [*ssh_argv(paths, pairing), pairing.peer.host, "gitlab-sync-recv", *words]
    try:
        done = subprocess.run(
            argv,
            input=input_text if input_text is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SyncError(
            f"the slave at {pairing.peer} did not answer within {timeout:.0f} s"
        ) from None
    if done.returncode != 0:
        raise SyncError(explain_ssh_failure(str(pairing.peer), done.returncode, done.stderr))
    return done.stdout


# The sentence each kind of ssh failure becomes ({peer}, {text}: its last line).
_WRONG_HOST_KEY = (
    "the slave at {peer} presented a host key that is not the one paired; refusing to send"
)
_UNREACHABLE = "the slave at {peer} is unreachable: {text}"
_SENTENCES: dict[SshFailure, str] = {
    SshFailure.HOST_KEY_CHANGED: _WRONG_HOST_KEY,
    SshFailure.HOST_KEY_UNKNOWN: _WRONG_HOST_KEY,
    SshFailure.KEY_REFUSED: (
        "the slave at {peer} refused this master's key (pair again with gitlab-sync add)"
    ),
    SshFailure.CONNECTION_REFUSED: _UNREACHABLE,
    SshFailure.TIMED_OUT: _UNREACHABLE,
    SshFailure.NO_ROUTE: _UNREACHABLE,
    SshFailure.UNRESOLVED: "the slave's address {peer} does not resolve: {text}",
    SshFailure.CLOSED: (
        "the slave at {peer} closed the connection before SSH began: no receiver there"
    ),
}


def explain_ssh_failure(peer: str, code: int, stderr: str) -> str:
    """One sentence for an ssh failure to the slave's receiver."""
    text = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}"
    kind = classify(stderr, among=_SENTENCES)
    if kind is not None:
        return _SENTENCES[kind].format(peer=peer, text=text)
    ours = [line for line in stderr.splitlines() if "gitlab-sync receiver:" in line]
    if ours:  # the receiver said why (fenced, not a slave, ...)
        return f"the slave at {peer} {ours[-1].split('gitlab-sync receiver:', 1)[1].strip()}"
    return f"the slave at {peer} refused: {text}"
