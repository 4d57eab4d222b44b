"""``inv verify-slave``: a snapshot is known good only once a GitLab has started on it and answered.

On the slave, the snapshot (default ``current``) is prepared as a writable copy in the sync
area itself (``SYNC_HOME/.verify/<name>``, by the sidecar's ``gitlab-sync prepare``: an O(1)
btrfs snapshot on the snapshots' own filesystem, a copy on the fallback). ``Area.names()``
lists only ``snapshots/`` and the receiver touches only ``.incoming``, ``current`` and
``.trash``, so nothing else in the area sees the copy. A throwaway GitLab of ``GITLAB_IMAGE``
starts on it, mounted as the stack mounts GITLAB_HOME, with the stack's GitLab environment
(its ``GITLAB_OMNIBUS_CONFIG``) but no network at all (``network_mode: none``): no port is open
to clients, and no mail, webhook or runner call leaves it. The drill's checks then run in it
(:mod:`ops.rehearsal.verify`): readiness, PostgreSQL out of recovery, every repository
fsck-clean with every ref resolving, local uploads the database names there, every registry
link resolving to a blob. The result is recorded in the snapshot's metadata (``gitlab-sync
mark-verified``, fed on stdin) and the container (with its volumes) and the copy are always
thrown away, also on a failure or Ctrl-C; a leftover of a run killed outright is removed at the
start of the next. One verification at a time per slave: the next one removes what it finds.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker.errors
import requests.exceptions
from docker.models.containers import Container

from ops.checks import Check
from ops.dr import readiness, sidecar, snapshots, topology
from ops.dr.readiness import Readiness
from ops.dr.snapshots import Listing, Snapshot
from ops.errors import HostError, Refusal, SidecarError
from ops.hosts.compose import PROJECT_LABEL
from ops.hosts.engine import ONE_OFF_LABEL, Engine, labelled
from ops.hosts.ssh import last_line
from ops.rehearsal import registry as reg
from ops.rehearsal import standin as gl
from ops.rehearsal import verify as drill
from ops.rehearsal.verify import Verification
from ops.settings import Settings

VERIFY_DIR = ".verify"
"""The copies' folder in SYNC_HOME (the sidecar's ``gitlab_sync.cli_data.VERIFY_DIR``)."""

ONE_OFF = "verify"
"""The throwaway GitLab's one-off name: its container is ``PROJECT-verify``."""

SNAPSHOT_LABEL = "gitlab-dr.verify-snapshot"
"""The label naming the snapshot a throwaway GitLab runs on."""

MOUNTS = (("config", "/etc/gitlab"), ("logs", "/var/log/gitlab"), ("data", "/var/opt/gitlab"))
"""GITLAB_HOME's folders and where GitLab sees them, as the stack mounts them."""

CURL = "/opt/gitlab/embedded/bin/curl"
READINESS_URL = "http://localhost/-/readiness?all=1"
POLL = 1.0

# Local uploads the database names (Omnibus's uploads table, store 1 = local; a path under
# uploads/ is relative to gitlab-rails/uploads): each must be a file. Project uploads (a path
# without that prefix, under the project's folder) are counted, not resolved. The stand-in has
# no uploads table: "none".
_UPLOADS_SCRIPT = r"""
root=/var/opt/gitlab/gitlab-rails/uploads
q() { gitlab-psql -X -q -v ON_ERROR_STOP=1 -tA -c "$1"; }
has=$(q "SELECT count(*) FROM information_schema.columns WHERE table_name = 'uploads'
         AND column_name IN ('path', 'store')") || exit 2
[ "$has" = 2 ] || { echo none; exit 0; }
q "SELECT path FROM uploads WHERE store = 1 OR store IS NULL" | while IFS= read -r p; do
  case $p in
    uploads/*) if [ -f "$root/${p#uploads/}" ]; then echo "ok"; else echo "MISSING $p"; fi ;;
    *) echo "project" ;;
  esac
done
"""


@dataclass(frozen=True)
class Outcome:
    """One verification: the snapshot, every check, how the copy was made, what was recorded."""

    snapshot: str
    verification: Verification
    prepared: dict[str, Any]
    recorded: dict[str, Any]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.verification.ok

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "ok": self.ok,
            "checks": checks_json(self.verification),
            "summary": summary(self.verification),
            "failures": self.verification.failures(),
            "copy": self.prepared,
            "recorded": self.recorded,
            "seconds": round(self.seconds, 3),
        }

    def render(self) -> list[str]:
        how = self.prepared.get("method", "?")
        return [
            f"snapshot {self.snapshot}: a throwaway GitLab on a writable copy ({how} in "
            f"{self.prepared.get('seconds', 0)} s), no network",
            *(f"  {line}" for line in self.verification.render()),
            f"{'verified' if self.ok else 'FAILED'}: {summary(self.verification)} "
            f"(recorded in the snapshot's metadata; {self.seconds:.0f} s)",
        ]


def checks_json(verification: Verification) -> list[dict[str, Any]]:
    return [
        {"name": c.name, "ok": c.ok, "detail": c.detail, "hint": c.hint}
        for c in verification.checks
    ]


def summary(verification: Verification) -> str:
    """``all 5 checks passed``, or ``2 of 5 checks failed: repositories, postgresql``."""
    failed = [c.name for c in verification.checks if not c.ok]
    if not failed:
        return f"all {len(verification.checks)} checks passed"
    return f"{len(failed)} of {len(verification.checks)} checks failed: {', '.join(failed)}"


def result(verification: Verification) -> dict[str, Any]:
    """What ``gitlab-sync mark-verified --result -`` reads."""
    return {
        "ok": verification.ok,
        "checks": checks_json(verification),
        "summary": summary(verification),
    }


def pick(listing: Listing, name: str) -> Snapshot:
    """The snapshot to verify: ``name``, else ``current`` (else the newest); or a refusal."""
    if listing.newest is None:
        raise Refusal("the slave has no complete snapshot to verify")
    wanted = name or listing.current or listing.newest.name
    found = listing.named(wanted)
    if found is None:
        raise Refusal(
            f"the slave has no snapshot {wanted} (it keeps {len(listing.snapshots)}); "
            "inv snapshots lists them"
        )
    return found


def copy_paths(settings: Settings, name: str) -> tuple[str, str]:
    """The copy of snapshot ``name``: its path on the host and in the sidecar (at /sync)."""
    host = posixpath.join(posixpath.normpath(settings.sync_home), VERIFY_DIR, name)
    return host, f"/sync/{VERIFY_DIR}/{name}"


def volumes(host_copy: str) -> dict[str, dict[str, str]]:
    """The copy's config, logs and data mounted where the stack mounts GITLAB_HOME's."""
    return {
        posixpath.join(host_copy, folder): {"bind": path, "mode": "rw"} for folder, path in MOUNTS
    }


def options(engine: Engine, snapshot: str, host_copy: str) -> dict[str, Any]:
    """The throwaway GitLab's container: no published port, no network, no restart; the
    stack's labels and a one-off's, so a leftover is found and whatever removes the stack
    removes it; the stack's GitLab environment, hostname and shm size when it has one."""
    like = _stack_gitlab(engine)
    config = (like.attrs.get("Config") or {}) if like is not None else {}
    host_config = (like.attrs.get("HostConfig") or {}) if like is not None else {}
    out: dict[str, Any] = {
        "name": engine.one_off_name(ONE_OFF),
        "labels": {
            PROJECT_LABEL: engine.project,
            ONE_OFF_LABEL: ONE_OFF,
            SNAPSHOT_LABEL: snapshot,
        },
        "volumes": volumes(host_copy),
        "network_mode": "none",
        "environment": list(config.get("Env") or []),
        "hostname": config.get("Hostname") or engine.settings.gitlab_hostname,
        "detach": True,
    }
    if host_config.get("ShmSize"):
        out["shm_size"] = int(host_config["ShmSize"])
    return out


def _stack_gitlab(engine: Engine) -> Container | None:
    try:
        return engine.container(sidecar.GITLAB)
    except HostError:
        return None  # no gitlab service on the slave: the image's defaults


@contextlib.contextmanager
def _docker(engine: Engine, what: str) -> Iterator[None]:
    """What the SDK or its transport raise, as a one-line HostError."""
    try:
        yield
    except docker.errors.APIError as exc:
        said = last_line(str(exc.explanation or exc))
        raise HostError(f"{engine.host}: {what} failed: {said}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise HostError(f"{engine.host}: {what} failed: {last_line(str(exc))}") from exc


def leftovers(engine: Engine) -> list[Container]:
    """Throwaway GitLabs an earlier run left (killed before it could remove them)."""
    labels = [f"{PROJECT_LABEL}={engine.project}", f"{ONE_OFF_LABEL}={ONE_OFF}"]
    with _docker(engine, "listing throwaway GitLabs"):
        return labelled(engine.client, *labels)


def remove_container(engine: Engine) -> int:
    """Remove every throwaway GitLab of this stack, with its anonymous volumes; how many."""
    found = leftovers(engine)
    for container in found:
        with (
            _docker(engine, "removing the throwaway GitLab"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            container.remove(force=True, v=True)
    return len(found)


def discard(engine: Engine, sidecar_copy: str | None = None) -> None:
    """Throw the copy away (every copy under .verify when None), through the sidecar."""
    args = [sidecar_copy] if sidecar_copy else ["--all"]
    sidecar.run(engine, "discard-copy", *args, timeout=600)


def mark(engine: Engine, name: str, verification: Verification) -> dict[str, Any]:
    """Record the verdict in snapshot ``name``'s metadata; the record the sidecar wrote."""
    data = json.dumps(result(verification)).encode()
    argv = ["gitlab-sync", "mark-verified", name, "--result", "-", "--json"]
    done = engine.exec(sidecar.SERVICE, argv, stdin=data, timeout=600)
    if done.exit_code != 0:
        said = last_line(done.stderr.decode(errors="replace")).removeprefix(sidecar.ERROR_PREFIX)
        raise SidecarError(f"{engine.host}: gitlab-sync mark-verified failed: {said}")
    record: dict[str, Any] = json.loads(done.stdout).get("verified") or {}
    return record


# --- the checks, in the throwaway GitLab ---------------------------------------------------------


def probe(container: Container) -> Readiness:
    """``/-/readiness?all=1`` asked from inside the container (it has no network)."""
    argv = [CURL, "-sS", "--max-time", "5", "-w", "\n%{http_code}", READINESS_URL]
    try:
        done = gl.run_in(container, argv)
    except gl.GitLabClientError as exc:
        return Readiness(0, error=str(exc))
    body, _, code = done.output.rstrip("\n").rpartition("\n")
    status = int(code) if code.isdigit() else 0
    if status == 0:
        return Readiness(0, error=last_line(done.output) or "no answer")
    try:
        parsed = json.loads(body)
    except ValueError:
        return Readiness(status, error=body[:200])
    return Readiness(status, parsed if isinstance(parsed, dict) else None)


class _Stopped(Exception):
    """The throwaway GitLab stopped while readiness was awaited (its last log line)."""


def wait_ready(
    container: Container,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Check:
    """Readiness green within ``timeout`` (promotion's wait, asked inside the container); the
    container stopping ends the wait at once."""

    def ask() -> Readiness:
        container.reload()
        if container.status not in {"created", "running", "restarting"}:
            said = bytes(container.logs(tail=5)).decode(errors="replace")
            raise _Stopped(f"the GitLab container stopped ({container.status}): {last_line(said)}")
        return probe(container)

    try:
        waited = readiness.wait_ready(
            "localhost in the copy", timeout, interval=POLL, probe=ask, clock=clock, sleep=sleep
        )
    except _Stopped as exc:
        return Check("readiness", False, str(exc), "GitLab cannot start on this snapshot")
    except readiness.NotReady as exc:
        hint = "see the logs in the copy (inv verify-slave --timeout to wait longer)"
        return Check("readiness", False, str(exc), hint)
    return Check("readiness", True, f"green after {waited:.1f} s")


def check_uploads(container: Container) -> Check:
    """Every local upload the database names is a file in the copy."""
    try:
        done = gl.run_in(container, ["sh", "-c", _UPLOADS_SCRIPT])
    except gl.GitLabClientError as exc:
        return Check("uploads", False, str(exc), "PostgreSQL did not answer")
    lines = [line for line in done.output.splitlines() if line.strip()]
    if not done.ok:
        return Check("uploads", False, f"could not list uploads: {last_line(done.output)}")
    if lines == ["none"]:
        return Check("uploads", True, "no uploads table: nothing to resolve")
    missing = [line[8:] for line in lines if line.startswith("MISSING ")]
    found, project = lines.count("ok"), lines.count("project")
    if missing:
        return Check(
            "uploads",
            False,
            f"{len(missing)} of {len(missing) + found} local uploads missing: {missing[:5]}",
            "the database names uploads the snapshot lacks",
        )
    return Check(
        "uploads", True, f"{found} local uploads there ({project} project uploads not resolved)"
    )


def _guarded(name: str, run: Callable[[], list[Check]]) -> list[Check]:
    """A check that could not run is a failed check, never a crash of the whole verification."""
    try:
        return run()
    except (gl.GitLabClientError, reg.RegistryError, drill.VerifyError) as exc:
        return [Check(name, False, f"could not run: {exc}")]


def run_checks(
    container: Container, timeout: float, progress: Callable[[str], None]
) -> Verification:
    """The drill's checks on a copy with no expectations of what was written: readiness,
    PostgreSQL, repositories, uploads and registry links."""
    ready = wait_ready(container, timeout)
    progress(f"readiness: {ready.detail}")
    checks = [ready]
    checks += _guarded("postgresql", lambda: [drill.check_postgresql(container)])
    checks += _guarded("repositories", lambda: drill.check_repositories(container))
    checks += _guarded("uploads", lambda: [check_uploads(container)])
    checks += _guarded("registry links", lambda: drill.check_registry(container, {}))
    return Verification(tuple(checks))


# --- the flow ---------------------------------------------------------------------------------


def verify_on(
    engine: Engine,
    name: str = "",
    timeout: float | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> Outcome:
    """Verify snapshot ``name`` (default current) on the slave ``engine`` reaches."""
    begun = time.monotonic()
    chosen = pick(snapshots.read(engine), name)
    wait = engine.settings.ready_timeout if timeout is None else timeout
    host_copy, sidecar_copy = copy_paths(engine.settings, chosen.name)
    if remove_container(engine):
        progress("removed a throwaway GitLab an earlier run left")
    discard(engine)  # copies an earlier run left
    try:
        prepared = sidecar.run_json(
            engine, "prepare", sidecar_copy, "--snapshot", chosen.name, timeout=3600
        )
        progress(f"prepared a writable copy of {chosen.name} ({prepared.get('method')})")
        container = _start(engine, chosen.name, host_copy)
        progress(f"started a throwaway GitLab ({engine.settings.gitlab_image}), no network")
        with _docker(engine, "verifying in the throwaway GitLab"):
            verification = run_checks(container, wait, progress)
        recorded = mark(engine, chosen.name, verification)
    finally:
        remove_container(engine)
        discard(engine, sidecar_copy)
    return Outcome(chosen.name, verification, prepared, recorded, time.monotonic() - begun)


def _start(engine: Engine, snapshot: str, host_copy: str) -> Container:
    image = engine.settings.gitlab_image
    made = options(engine, snapshot, host_copy)
    try:
        with _docker(engine, "starting GitLab on the copy"):
            container: Container = engine.client.containers.run(image, **made)
    except HostError as exc:
        if isinstance(exc.__cause__, docker.errors.ImageNotFound):
            raise HostError(f"{engine.host}: the image {image} is not on the slave") from None
        raise
    return container


def verify(
    settings: Settings,
    name: str = "",
    timeout: float | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> Outcome:
    """``inv verify-slave``: the slave as ``inv status`` finds it, verified."""
    side = topology.locate("slave", settings, topology.read_aws(settings))
    if isinstance(side, topology.Absent):
        raise HostError(f"no slave to verify a snapshot on: {side.reason}")
    with Engine.open(side.host, side.settings) as engine:
        return verify_on(engine, name, timeout, progress)
