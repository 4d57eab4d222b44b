"""``inv sandbox.down``: remove everything a sandbox started, and say what could not be removed.

Found by the record (``state.json``) and by the names, labels and paths derived from the folder,
so a lost record leaves nothing behind. Every removal is tried; what is already gone is skipped;
whatever is left is one line each, and :func:`down` then fails naming how many. The instances'
filesystems go after the containers that used them, and the folder only once they are gone (a
filesystem still mounted in it keeps it, its loop file in place for the next try).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import docker

from ops import settings as settings_mod
from ops.errors import OpsError, SandboxError
from ops.hosts.engine import labelled
from ops.hosts.ssh import parse_host, ssh_argv
from ops.progress import Progress
from ops.rehearsal import volumes
from ops.rehearsal.layout import DEFAULT_DIR, LABEL, NAMES, USER, SandboxLayout, State
from ops.rehearsal.local import Cleanup, DockerFailure, base_image, explain, remove_container
from ops.rehearsal.processes import FORWARDER, MOTO, PROMETHEUS, stop, strays

WHAT = {FORWARDER: "the forwarder", MOTO: "the moto server", PROMETHEUS: "Prometheus"}


def down(directory: Path = DEFAULT_DIR, progress: Progress = print) -> list[str]:
    """Remove everything the sandbox in ``directory`` started; return what was removed.

    Idempotent. When something could not be removed, a :class:`SandboxError` says how many
    things are left, after a line for each (and after every other removal was tried).
    """
    cleanup = remove_all(directory, progress)
    if cleanup.left:
        raise SandboxError(
            f"sandbox.down left {len(cleanup.left)} thing(s) of the sandbox in "
            f"{directory.resolve()} (each named above); free them and run it again"
        )
    if not cleanup.removed:
        progress(f"nothing to remove: no sandbox in {directory.resolve()}")
    return cleanup.removed


def remove_all(directory: Path, progress: Progress) -> Cleanup:
    """Try every removal (processes, SSH connections, stacks, hosts, volumes, the instances'
    filesystems, the folder)."""
    layout = SandboxLayout(directory.resolve())
    state = State.load(layout)
    cleanup = Cleanup(progress)
    if state is not None:
        _stop(cleanup, state.forwarder_pid, FORWARDER, "")
        _stop(cleanup, state.moto_pid, MOTO, "")
        _stop(cleanup, state.prometheus_pid, PROMETHEUS, "")
        _close_ssh(cleanup, layout, state)
    for pid, marker in strays(layout):
        _stop(cleanup, pid, marker, ", left running")
    try:
        client: docker.DockerClient | None = docker.from_env()
    except DockerFailure as exc:
        client = None
        cleanup.failed("the sandbox's containers", f"no local Docker engine: {explain(exc)}")
    if client is not None:
        for name in NAMES:
            cleanup.project(client, layout.stack(name))
        _remove_hosts(cleanup, client, layout)
    if not volumes.remove(layout, cleanup):
        cleanup.failed(str(layout.root), "kept while a filesystem in it is left")
    elif layout.root.exists():
        _remove_tree(cleanup, client, layout.root)
    return cleanup


def _stop(cleanup: Cleanup, pid: int, marker: str, how: str) -> None:
    what = WHAT[marker]
    try:
        if stop(pid, marker):
            cleanup.done(f"stopped {what}{how} (pid {pid})")
    except (OSError, TimeoutError) as exc:
        cleanup.failed(f"{what} (pid {pid})", str(exc))


def _close_ssh(cleanup: Cleanup, layout: SandboxLayout, state: State) -> None:
    """End the shared SSH connections (ControlMaster) to the sandbox's hosts, if any."""
    if not layout.env_file.is_file():
        return
    try:
        settings = settings_mod.load(environ={}, env_file=layout.env_file)
    except OpsError:
        return  # no settings, no connection was ever made with them
    for inst in state.instances:
        try:
            host = parse_host("sandbox", str(inst["ssh"]), USER, "state.json")
            argv = ssh_argv(host, settings, [])
        except OpsError:
            continue  # no ssh client, or a record that names no host: nothing to close
        argv[argv.index("-T")] = "-O"
        argv.insert(argv.index("-O") + 1, "exit")
        try:
            # Exits non-zero when no connection is shared: then there is nothing to end.
            subprocess.run(argv, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            cleanup.failed(f"the shared SSH connection to {inst['ssh']}", str(exc))


def _remove_hosts(cleanup: Cleanup, client: docker.DockerClient, layout: SandboxLayout) -> None:
    try:
        found = labelled(client, f"{LABEL}={layout.root}")
    except DockerFailure as exc:
        cleanup.failed("the sandbox's host containers", f"listing them failed: {explain(exc)}")
        return
    cleanup.volumes(client, cleanup.containers(found, "host container"))


def _remove_tree(cleanup: Cleanup, client: docker.DockerClient | None, root: Path) -> None:
    """Remove ``root``; files the containers made under other owners go through a container."""
    try:
        shutil.rmtree(root)
    except OSError as exc:
        if client is None:
            cleanup.failed(str(root), str(exc))
            return
        try:
            _empty_as_root(client, root)
            shutil.rmtree(root)
        except (OpsError, OSError, *DockerFailure) as again:
            cleanup.failed(str(root), str(again))
            return
    cleanup.done(f"removed {root}")


def _empty_as_root(client: docker.DockerClient, root: Path) -> None:
    """Empty ``root`` from a container of the base image, as root; the container is removed."""
    container = client.containers.create(
        base_image(),
        ["sh", "-c", "rm -rf /sandbox/* /sandbox/.[!.]*"],
        volumes={str(root): {"bind": "/sandbox", "mode": "rw"}},
    )
    try:
        container.start()
        code = int(container.wait(timeout=120).get("StatusCode", -1))
        if code != 0:
            tail = bytes(container.logs()).decode(errors="replace").strip().splitlines()
            raise SandboxError(f"emptying it as root exited {code}: {(tail or [''])[-1]}")
    finally:
        remove_container(container)
