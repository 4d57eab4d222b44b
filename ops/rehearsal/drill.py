"""``inv drill``: the whole disaster-recovery rehearsal, in the local sandbox.

The sandbox comes up (moto for AWS, two sshd "instances", the stand-in GitLab, the Elastic IP's
forwarder), the pair is made with ``inv pair``'s code, a realistic load writes commits, rows and
uploads through the public address, and at a random moment the master dies: its containers are
SIGKILLed, its host stops answering, AWS says the instance is stopped. ``inv promote-slave``'s
code promotes the slave. Then, through the public address: every project clones, every write
acknowledged before the snapshot's pass began is there, every repository passes fsck. The old
master comes back with its sidecar running, and nothing it does reaches the new master. It is
taken back as the new slave (``inv rebuild-slave --reuse``), and the new pair syncs.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker

from gitlab_sync.config import iso
from gitlab_sync.status import PassSummary, moment
from gitlab_sync.waits import wait_until
from ops import settings as settings_mod
from ops.aws import client as aws
from ops.aws import dns, inventory
from ops.aws.writer import Ec2Writer
from ops.checks import Check
from ops.dr import pair, promote, rebuild, sidecar, topology
from ops.errors import OpsError
from ops.hosts.engine import Engine, labelled
from ops.progress import Progress
from ops.rehearsal import load, prometheus, sandbox, teardown
from ops.rehearsal import standin as gl
from ops.rehearsal.commands import inv
from ops.rehearsal.layout import SandboxLayout, State
from ops.settings import Settings

T = TypeVar("T")

RECEIVER_REFUSALS = (
    re.compile(r"refused: sender epoch \d+ is not this slave's epoch \d+ \(fenced\)"),
    re.compile(r"refused: this sidecar is not a slave[^;]*"),
)
"""What a slave's receiver says when it turns a sender away (``gitlab_sync.receiver``), as the
sender reports it in its pass's error: "the slave at ADDRESS refused: ..."."""


def receiver_refusal(error: str) -> str:
    """The receiver's own words of refusal in a pass's error, or "" when it holds none (a
    timeout, an unreachable host, no receiver listening, a key refused by sshd)."""
    found = next((m for m in (p.search(error) for p in RECEIVER_REFUSALS) if m), None)
    return found.group(0) if found else ""


def fenced_in_status(done: subprocess.CompletedProcess[str], instance_id: str) -> Check:
    """The drill's check that ``inv status --json`` (run as ``done``) lists the instance as
    fenced: its check ``fenced <id>`` is there and passes."""
    name, wanted = "inv status shows it fenced", f"fenced {instance_id}"
    try:
        data = json.loads(done.stdout)
        checks = [c for c in data.get("checks", []) if isinstance(c, dict)]
    except (ValueError, AttributeError):
        said = (done.stderr.strip().splitlines() or ["nothing on stderr"])[-1]
        return Check(name, False, f"inv status --json exited {done.returncode}, no JSON: {said}")
    found = next((c for c in checks if c.get("name") == wanted), None)
    if found is None:
        return Check(name, False, f"inv status (exit {done.returncode}) has no check {wanted!r}")
    ok = found.get("ok") is True
    return Check(name, ok, f"{wanted} {'ok' if ok else 'FAILED'}: {found.get('detail', '')}")


class DrillError(OpsError):
    """The rehearsal could not go on."""


@dataclass
class DrillReport:
    steps: list[tuple[str, float]] = field(default_factory=list)
    verifications: list[Check] = field(default_factory=list)
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    promotion: dict[str, Any] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.verifications) and all(v.ok for v in self.verifications)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rto_seconds": self.rto_seconds,
            "rpo_seconds": self.rpo_seconds,
            "steps": [{"name": n, "seconds": round(s, 3)} for n, s in self.steps],
            "verifications": [
                {**asdict(v), "result": "pass" if v.ok else "fail"} for v in self.verifications
            ],
            "written": self.written,
            "promotion": self.promotion,
        }

    def lines(self) -> list[str]:
        rto = f"{self.rto_seconds:.1f} s" if self.rto_seconds is not None else "-"
        rpo = f"{self.rpo_seconds:.1f} s" if self.rpo_seconds is not None else "-"
        out = [f"drill {'PASSED' if self.ok else 'FAILED'}: RTO {rto}, RPO {rpo}", "steps:"]
        out += [f"  {name:34} {seconds:8.2f} s" for name, seconds in self.steps]
        promo = self.promotion.get("steps", [])
        if promo:
            out.append("promotion steps:")
            out += [f"  {s['name']:34} {s['seconds']:8.2f} s" for s in promo]
        if self.promotion.get("restore"):
            out.append(f"  ({self.promotion['restore']})")
        out.append("verifications:")
        out += [
            f"  {'pass' if v.ok else 'FAIL'} {v.name:30} {v.detail}" for v in self.verifications
        ]
        out.append("written: " + ", ".join(f"{k} {v}" for k, v in self.written.items()))
        out += [f"registry: {v.detail}" for v in self.verifications if v.name == "registry"]
        return out


class Drill:
    def __init__(self, directory: Path, progress: Progress, load_seconds: float, seed: int | None):
        self.directory, self.progress = directory, progress
        self.load_seconds = load_seconds
        self.random = random.Random(seed)  # noqa: S311 - when to kill, not a secret
        self.report = DrillReport()
        self.revived_at = dt.datetime.now(dt.UTC)  # set again when the old master revives

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.progress(f"== {name}")
        started = time.monotonic()
        yield
        self.report.steps.append((name, time.monotonic() - started))

    def timed(self, name: str, work: Callable[[], T]) -> T:
        with self.step(name):
            return work()

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.report.verifications.append(Check(name, ok, detail))
        self.progress(f"{'pass' if ok else 'FAIL'} {name}: {detail}")

    @property
    def layout(self) -> SandboxLayout:
        return SandboxLayout(self.directory.resolve())

    def settings(self) -> Settings:
        return settings_mod.load({}, env_file=self.layout.env_file)

    def side(self, settings: Settings, instance_id: str, role: inventory.Role) -> topology.Side:
        state = inventory.describe_pair(settings, aws.ec2_client(settings))
        host = next(h for h in state.hosts if h.instance_id == instance_id)
        return topology.instance_side(
            role, settings, host.instance_id, host.public_ip, host.private_ip
        )

    def run(self) -> DrillReport:
        state = self.timed("sandbox up", lambda: sandbox.up(self.directory, self.progress))
        settings = self.settings()
        url = state.gitlab_url
        self.timed("pair", lambda: pair.pair(settings, self.progress, timeout=300))
        self.timed("GitLab ready through the Elastic IP", lambda: gl.wait_ready(url, 300))
        ec2 = aws.ec2_client(settings)
        pair_state = inventory.describe_pair(settings, ec2)
        if pair_state.master is None or pair_state.slave is None:
            raise DrillError("after inv pair, AWS should hold one master and one slave")
        old_master, old_slave = pair_state.master.instance_id, pair_state.slave.instance_id
        master_side = self.side(settings, old_master, "master")

        with Engine.open(master_side.host, master_side.settings) as engine:
            writer = load.Load(
                url, lambda: engine.container(sidecar.GITLAB), registry=state.registry_address
            )
            self.timed("load: set-up", writer.setup)
            with self.step("load until the master dies"):
                writer.start()
                time.sleep(self.load_seconds * self.random.uniform(0.4, 1.0))
                prom = prometheus.Prometheus(state.prometheus_pid, state.prometheus_url)
                slave_name = self.instance_name(old_slave)
                firing_before = prom.firing(prometheus.LAG_ALERT)
                died = self.kill_stack(settings, old_master)
                # Its writes now fail at once (nothing is left to acknowledge one); once the
                # host is silent, one through its ssh would hang until ssh gives up on it.
                written = writer.stop()
                self.silence_host(settings, old_master)
        with self.step("lag alert fires"):
            self.check_lag_alert(prom, slave_name, firing_before, died)
        self.report.written = {
            "commits": len(written.commits),
            "rows": len(written.rows),
            "uploads": len(written.uploads),
            "tags pushed": written.registry.acknowledged("push"),
            "tags deleted": written.registry.acknowledged("delete"),
            "failed": len(written.errors) + len(written.registry.errors),
        }

        before = self.promote(settings, ec2, old_slave)
        new_master = self.side(settings, old_slave, "master")
        with (
            self.step("verify through the Elastic IP"),
            Engine.open(new_master.host, new_master.settings) as engine,
        ):
            for found in load.verify(
                url, engine.container(sidecar.GITLAB), written, before, state.registry_address
            ):
                self.check(found.name, found.ok, found.detail)
            lost = sum(1 for _p, _s, at in written.commits if at >= before)
            self.progress(
                f"{lost} commits acknowledged after the snapshot's pass began "
                "(the RPO window) may be missing"
            )

        with self.step("revive the old master"):
            self.revive(settings, old_master)
        with self.step("check the old master reaches nothing"):
            self.check_fenced(settings, old_master, old_slave)

        with self.step("rebuild-slave --reuse the old master"):
            rebuild.rebuild_slave(settings, self.progress, reuse=old_master, timeout=300)
        with self.step("check the new pair syncs"):
            self.check_new_pair(settings, url, old_slave, old_master)
        with self.step("Prometheus shows the new pair"):
            names = self.instance_name(old_slave), self.instance_name(old_master)
            found = prometheus.shows_roles(prom, *names, timeout=120)
            self.check(found.name, found.ok, found.detail)
        return self.report

    def check_lag_alert(
        self, prom: prometheus.Prometheus, slave: str, before: list[dict[str, str]], died: float
    ) -> None:
        """The lag alert was quiet before the master died (at ``died``, a ``time.monotonic()``),
        and fires for the slave after."""
        fired = prometheus.alert_fired(
            prom, prometheus.LAG_ALERT, slave, timeout=prometheus.SANDBOX_LAG_ALERT + 60, died=died
        )
        quiet_before = not any(a.get("instance") == slave for a in before)
        self.check(
            fired.name,
            fired.ok and quiet_before,
            fired.detail + ("" if quiet_before else "; but it fired before the master died"),
        )

    def kill_stack(self, settings: Settings, instance_id: str) -> float:
        """The master dies: SIGKILL its stack's containers (GitLab and its sidecar); the
        ``time.monotonic()`` of its death."""
        side = self.side(settings, instance_id, "master")
        client = docker.from_env()
        project = side.settings.project_name
        for container in labelled(client, f"com.docker.compose.project={project}", stopped=False):
            container.kill(signal="SIGKILL")
        return time.monotonic()

    def silence_host(self, settings: Settings, instance_id: str) -> None:
        """The dead master's host goes silent (its sshd container paused) and AWS says it
        stopped."""
        name = self.instance_name(instance_id)
        docker.from_env().containers.get(self.layout.container(name)).pause()
        Ec2Writer(settings, aws.ec2_client(settings)).stop_instance(instance_id)
        self.progress(f"master {instance_id} killed: containers SIGKILLed, host silent, stopped")

    def instance_name(self, instance_id: str) -> str:
        record = State.load(self.layout)
        name = record.instance_name(instance_id) if record else None
        if name is None:
            raise DrillError(f"no instance {instance_id} in the sandbox in {self.layout.root}")
        return name

    def revive(self, settings: Settings, instance_id: str) -> None:
        """The old master's host comes back, as after a reboot: engine, sidecar, GitLab."""
        self.revived_at = dt.datetime.now(dt.UTC)
        Ec2Writer(settings, aws.ec2_client(settings)).start_instance(instance_id)
        client = docker.from_env()
        client.containers.get(self.layout.container(self.instance_name(instance_id))).unpause()
        side = self.side(settings, instance_id, "master")
        for container in labelled(
            client, f"com.docker.compose.project={side.settings.project_name}"
        ):
            container.start()
        self.progress(f"old master {instance_id} is back, its sidecar running")

    def check_fenced(self, settings: Settings, old_master: str, new_master: str) -> None:
        """The old master tries to send (its sidecar resumes): a receiver refuses it, zero bytes
        reach the new master, and ``inv status`` lists it as fenced."""
        new = self.side(settings, new_master, "master")
        old = self.side(settings, old_master, "master")
        with Engine.open(new.host, new.settings) as engine:
            before = sidecar.run(engine, "manifest", "/sync", "--digest").strip()
        with Engine.open(old.host, old.settings) as engine:
            self.check_refused(engine)
        with Engine.open(new.host, new.settings) as engine:
            after = sidecar.run(engine, "manifest", "/sync", "--digest").strip()
        self.check(
            "zero bytes reach the new master",
            before == after,
            "the new master's sync area is unchanged"
            if before == after
            else "the new master's sync area changed",
        )
        try:
            done = inv("status", "--json", env_file=self.layout.env_file, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.check("inv status shows it fenced", False, f"inv status --json: {exc}")
            return
        found = fenced_in_status(done, old_master)
        self.check(found.name, found.ok, found.detail)

    def check_refused(self, old_master: Engine, timeout: float = 60.0) -> None:
        """A pass the old master began after its revival is refused by the receiver itself."""
        seen: list[PassSummary | None] = [None]

        def refused() -> str:
            """The error of a pass refused by the receiver since the revival ("" for none)."""
            last = seen[0] = sidecar.status(old_master).last_pass
            if last is None or not receiver_refusal(last.error):
                return ""
            started = last.started
            return last.error if started is None or started >= self.revived_at else ""

        def last_seen() -> str:
            last = seen[0]
            if last is None:
                return "no pass seen"
            return f"its last pass, {last.outcome or last.phase}: {last.error or 'no error'}"

        try:
            error = wait_until(
                refused,
                timeout=timeout,
                what="a receiver's refusal of the old master's pass",
                interval=1.0,
                detail=last_seen,
            )
        except TimeoutError as exc:
            self.check("old master's sending refused", False, str(exc))
            return
        self.check("old master's sending refused", True, error)

    def promote(self, settings: Settings, ec2: Any, new_master: str) -> dt.datetime:
        """inv promote-slave, recorded in the report; the instant of the snapshot it started
        from (what was acknowledged before it must be there)."""
        with self.step("promote-slave"):
            result, _plan = promote.promote(settings, promote.Flags(), self.progress)
        if result is None:
            raise DrillError("promotion returned no report")
        self.report.promotion = result.to_dict()
        self.report.rto_seconds, self.report.rpo_seconds = result.rto_seconds, result.rpo_seconds
        snapshot_started = next(
            (
                d.get("snapshot_started_at")
                for n, _s, d in result.steps
                if n == "start-slave-gitlab"
            ),
            None,
        )
        before = moment(str(snapshot_started or "")) or dt.datetime.now(dt.UTC)

        if settings.dns_zone:
            self.check_record(settings, ec2, new_master, result.to_dict())
        return before

    def check_record(
        self, settings: Settings, ec2: Any, new_master: str, promotion: dict[str, Any]
    ) -> None:
        """With a DNS record (SANDBOX_DNS=name), promotion moved it to the new master: Route 53
        (moto) holds the new master's address, and the report says so."""
        moved = inventory.describe_pair(settings, ec2)
        want = dns.target_ip(settings, moved)
        route53 = aws.route53_client(settings)
        name = dns.record_name(settings)
        held = dns.read_record(route53, dns.find_zone(settings, route53), name)
        host = next(h for h in moved.hosts if h.instance_id == new_master)
        said = json.dumps(promotion)
        ok = (
            want is not None
            and held.values == (want,)
            and want in {host.private_ip, host.public_ip}
        )
        reported = f"DNS {name} -> {want}" in said
        detail = f"{name}: {held.text()} (the new master {new_master})"
        if not reported:
            detail += "; the promotion's report does not say it moved the record"
        self.check("DNS record moved", ok and reported, detail)

    def check_new_pair(self, settings: Settings, url: str, master: str, slave: str) -> None:
        pushed_at = dt.datetime.now(dt.UTC)
        sha = gl.push_commit(
            url,
            "drill/after-rebuild",
            Path(self.directory) / "after-rebuild",
            files={"after.txt": b"the new pair syncs\n"},
        )
        side = self.side(settings, slave, "slave")

        with Engine.open(side.host, side.settings) as engine:

            def after_push() -> str:
                """When the newest snapshot's pass began, if after the push ("" if not)."""
                started = sidecar.status(engine).newest_started
                return iso(started) if started and started > pushed_at else ""

            try:
                started = wait_until(
                    after_push, timeout=120, what="a complete pass after the push", interval=1.0
                )
            except TimeoutError:
                self.check("the new pair syncs", False, "no complete pass after the push")
                return
        self.check(
            "the new pair syncs",
            True,
            f"commit {sha[:10]} pushed to the new master is in a snapshot started {started}",
        )


def drill(
    directory: Path,
    progress: Progress,
    load_seconds: float = 20.0,
    seed: int | None = None,
    keep: bool = False,
) -> DrillReport:
    """Run the rehearsal; the sandbox is removed at the end unless ``keep``."""
    runner = Drill(directory, progress, load_seconds, seed)
    try:
        report = runner.run()
    except BaseException:
        if not keep:  # the drill's own error goes on; what could not be removed is said
            for line in teardown.remove_all(directory, lambda _line: None).left:
                progress(line)
        raise
    if not keep:
        left = teardown.remove_all(directory, lambda _line: None).left
        for line in left:
            progress(line)
        if left:
            raise DrillError(f"the drill's sandbox in {directory} is not all removed")
    return report
