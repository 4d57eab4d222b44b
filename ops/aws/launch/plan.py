"""The launch plan, pure: from the settings and a :class:`~.model.World`, the steps and why.

Groups first (the instances start in them, and ``gitlab-slave`` refers to ``gitlab-open``),
then the master, the slave, their data volumes, the Elastic IP and GitLab's DNS record; or a
refusal, as a sentence. With them, what the pair costs a month.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ops.aws import dns
from ops.aws.inventory import (
    OPEN_GROUP,
    ROLES,
    SLAVE_GROUP,
    TAG_DATA_FOR,
    Instance,
    PairState,
    Role,
)
from ops.aws.launch.model import (
    ADMIN_SSH_PORT,
    DATA_DEVICE,
    GROUP_OF_ROLE,
    GROUPS,
    WHOLE_INTERNET,
    Action,
    Found,
    LaunchPlan,
    Rule,
    World,
)
from ops.aws.launch.price import monthly_cost
from ops.errors import Refusal, SettingError
from ops.settings import Settings

NETWORKS = ("ADMIN_CIDR", "CLIENT_CIDRS")
"""The settings every security group rule comes from: nothing is opened without them."""
NEEDED_BY = "inv launch needs them"


# --- the declared rules -------------------------------------------------------------------


def _cidr_rule(port: int, cidr: str, description: str) -> Rule:
    return Rule(port, port, cidr, "cidr", "tcp", description)


def desired_rules(settings: Settings) -> dict[str, tuple[Rule, ...]]:
    """The ingress rules of each group, from the settings.

    ``gitlab-open`` (the master): GitLab's client ports from ``CLIENT_CIDRS`` and admin SSH
    from ``ADMIN_CIDR``. ``gitlab-slave`` (the slave, and a fenced old master): the sync port
    from the ``gitlab-open`` group only (a group-to-group rule: the master's private
    address, whatever it is) and admin SSH from ``ADMIN_CIDR``. Both settings are required. Both
    groups open the sidecar's metrics port (``METRICS_PORT``) to ``ADMIN_CIDR`` alone.
    """
    settings.require_all(*NETWORKS, why=NEEDED_BY)
    client_ports = client_port_names(settings)
    for name, _, port in client_ports:
        guarded = {
            ADMIN_SSH_PORT: "admin SSH port",
            settings.sync_port: "sync port (SYNC_PORT)",
            settings.metrics_port: "metrics port (METRICS_PORT)",
        }
        if port in guarded:
            which = guarded[port]
            raise SettingError(
                f"{name} is {port}, the {which}: GitLab's client ports are opened to "
                f"CLIENT_CIDRS, so choose another port"
            )
    admin = _cidr_rule(ADMIN_SSH_PORT, settings.admin_cidr, "gitlab-dr: admin SSH")
    metrics = _cidr_rule(settings.metrics_port, settings.admin_cidr, "gitlab-dr: metrics (admin)")
    open_rules: list[Rule] = []
    for _, label, port in client_ports:
        for cidr in settings.client_cidrs:
            open_rules.append(_cidr_rule(port, cidr, f"gitlab-dr: {label} from clients"))
    open_rules += [admin, metrics]
    sync = Rule(
        settings.sync_port,
        settings.sync_port,
        OPEN_GROUP,
        "group",
        "tcp",
        "gitlab-dr: sync from the master",
    )
    return {
        OPEN_GROUP: tuple(dict.fromkeys(open_rules)),
        SLAVE_GROUP: (sync, admin, metrics),
    }


def client_port_names(settings: Settings) -> tuple[tuple[str, str, int], ...]:
    """GitLab's client-facing ports: (setting, what it serves, port)."""
    return (
        ("GITLAB_HTTP_PORT", "GitLab HTTP", settings.gitlab_http_port),
        ("GITLAB_HTTPS_PORT", "GitLab HTTPS", settings.gitlab_https_port),
        ("GITLAB_SSH_PORT", "git over SSH", settings.gitlab_ssh_port),
        ("GITLAB_REGISTRY_PORT", "container registry", settings.gitlab_registry_port),
    )


def _extra_reason(rule: Rule, settings: Settings) -> str:
    guarded = [
        p for p in (ADMIN_SSH_PORT, settings.sync_port, settings.metrics_port) if rule.covers(p)
    ]
    if rule.kind == "cidr" and rule.source in WHOLE_INTERNET and guarded:
        return f"it is not declared and opens port {guarded[0]} to the whole internet"
    return "it is not declared in the settings"


# --- the plan (pure) ---------------------------------------------------------------------


def make_plan(settings: Settings, world: World) -> LaunchPlan:
    """The steps that take what exists to the declared pair, each with its reason."""
    problems = world.pair.problems()
    if problems:
        raise Refusal("; ".join(problems))
    out = _Draft(notes=list(world.network_notes))
    if world.kms_key is not None:
        key = world.kms_key
        detail = f"enabled ({key.requested}); new data volumes are encrypted with it"
        out.found.append(Found("KMS key", key.arn, detail))
    _plan_groups(settings, world, out)
    epoch, zone_of = _plan_instances(settings, world, out)
    _plan_elastic_ip(settings, world.pair, out)
    _plan_record(settings, world, out)
    return LaunchPlan(
        settings=settings,
        world=world,
        epoch=epoch,
        zone_of=tuple(zone_of.items()),
        found=tuple(out.found),
        actions=tuple(out.actions),
        notes=tuple(out.notes),
        cost=monthly_cost(settings, world, zone_of),
    )


@dataclass
class _Draft:
    """A plan being written: what was found, the steps, the notes."""

    found: list[Found] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _plan_groups(settings: Settings, world: World, out: _Draft) -> None:
    # Groups before instances: the instances start in them, and gitlab-slave refers to
    # gitlab-open. Extra rules are revoked: the groups hold exactly what the settings say.
    project = settings.project_name
    rules = desired_rules(settings)
    for name in GROUPS:
        group = world.group(name)
        target = f"security group {name}"
        if group is None:
            reason = f"it does not exist in {world.vpc_id}"
            out.actions.append(Action("create-group", target, reason, name))
            continue
        if group.project and group.project != project:
            raise Refusal(
                f"security group {name} ({group.group_id}) in {world.vpc_id} is tagged "
                f"Project={group.project}, not {project}: it belongs to another pair"
            )
        out.found.append(Found(target, group.group_id, f"in {world.vpc_id}"))
        if not group.project:
            reason = f"it exists without a Project tag; it is adopted as {project}'s"
            out.actions.append(
                Action("tag-group", target, reason, name, resource_id=group.group_id)
            )
    for name in GROUPS:
        group = world.group(name)
        existing = group.rules if group else ()
        for rule in rules[name]:
            if rule not in existing:
                why = "the group is new" if group is None else "the rule is missing"
                out.actions.append(Action("authorize", f"{rule.text()} on {name}", why, name, rule))
        for rule in existing:
            if rule not in rules[name]:
                why = _extra_reason(rule, settings)
                out.actions.append(Action("revoke", f"{rule.text()} on {name}", why, name, rule))


def _plan_instances(settings: Settings, world: World, out: _Draft) -> tuple[int, dict[str, str]]:
    # The master before the slave, so that a run cut short never leaves a lone slave.
    project = settings.project_name
    pair = world.pair
    master, slave = pair.master, pair.slave
    if master is None and slave is not None:
        raise Refusal(
            f"the slave {slave.instance_id} exists but no live instance is tagged "
            f"Project={project} Role=master: promote the slave (inv promote-slave) instead of "
            f"launching an empty master next to it"
        )
    for host in (master, slave):
        if host is not None and host.vpc_id and host.vpc_id != world.vpc_id:
            raise Refusal(
                f"the {host.role} {host.instance_id} runs in {host.vpc_id}, not in {world.vpc_id}: "
                f"a pair lives in one VPC; set VPC_ID and SUBNET_IDS to where it runs"
            )
    epoch = pair.epoch or 1
    master_zone = master.zone if master else world.zones[0]
    slave_zone = slave.zone if slave else next(z for z in world.zones if z != master_zone)
    if master and slave and master.zone == slave.zone:
        out.notes.append(
            f"the master and the slave are both in {master.zone}: one zone outage takes both"
        )
    zone_of = {"master": master_zone, "slave": slave_zone}
    hosts = {"master": master, "slave": slave}
    for role in ROLES:
        host = hosts[role]
        if host is None:
            reason = (
                f"no live instance is tagged Project={project} Role={role}; it starts in "
                f"{zone_of[role]} with {GROUP_OF_ROLE[role]}, epoch {epoch}"
            )
            out.actions.append(
                Action(
                    "run-instance",
                    f"the {role} instance",
                    reason,
                    GROUP_OF_ROLE[role],
                    role=role,
                    zone=zone_of[role],
                )
            )
            continue
        groups = ", ".join(host.security_groups) or "none"
        epoch_text = "untagged" if host.epoch is None else str(host.epoch)
        out.found.append(
            Found(
                f"{role} instance",
                host.instance_id,
                f"{host.state} in {host.zone}, groups {groups}, epoch {epoch_text}",
            )
        )
        if host.state != "running":
            out.notes.append(
                f"the {role} instance {host.instance_id} is {host.state}; launch leaves it so"
            )
        if not host.imdsv2_required:
            out.actions.append(
                Action(
                    "require-imdsv2",
                    f"the {role} instance {host.instance_id}",
                    "its metadata service accepts requests without a token (IMDSv1)",
                    role=role,
                    resource_id=host.instance_id,
                )
            )
    for role in ROLES:
        _plan_volume(role, pair, hosts[role], zone_of[role], out)
    live = {h.instance_id for h in pair.hosts}
    for volume in pair.volumes:
        if volume.data_for not in live and volume.attached_to is None:
            out.notes.append(
                f"data volume {volume.volume_id} ({volume.zone}) belonged to {volume.data_for}, "
                f"which is gone; it is kept and may hold GitLab data"
            )
    return epoch, zone_of


def _plan_volume(
    role: Role, pair: PairState, host: Instance | None, zone: str, out: _Draft
) -> None:
    # A data volume belongs to its instance by the DataFor tag it gets when it is created, so
    # a volume created but not attached by a run cut short is found and attached by the next.
    target = f"the {role}'s data volume"
    attach = Action("attach-volume", f"{target} at {DATA_DEVICE}", "it is new", role=role)
    if host is None:
        out.actions.append(
            Action("create-volume", target, "the instance is new", role=role, zone=zone)
        )
        out.actions.append(attach)
        return
    volumes = pair.data_volumes(host.instance_id)
    attached = [v for v in volumes if v.attached_to == host.instance_id]
    if attached:
        volume = attached[0]
        sealed = "encrypted" if volume.encrypted else "NOT encrypted"
        out.found.append(
            Found(
                f"{role} data volume",
                volume.volume_id,
                f"{volume.size_gb} GB in {volume.zone}, attached to {host.instance_id}, {sealed}",
            )
        )
        if not volume.encrypted:
            out.notes.append(
                f"the {role}'s data volume {volume.volume_id} is not encrypted; launch cannot "
                f"change that (copy it to an encrypted volume)"
            )
        if host.delete_on_termination(volume.volume_id):
            out.actions.append(
                Action(
                    "keep-volume",
                    f"{target} {volume.volume_id}",
                    "it is set to be deleted with the instance; the data must outlive it",
                    role=role,
                    resource_id=volume.volume_id,
                )
            )
        return
    elsewhere = [v for v in volumes if v.attached_to]
    if elsewhere:
        volume = elsewhere[0]
        raise Refusal(
            f"the {role}'s data volume {volume.volume_id} is attached to {volume.attached_to}, "
            f"not to the {role} {host.instance_id}; detach it or fix its {TAG_DATA_FOR} tag"
        )
    ready = [v for v in volumes if v.state in ("creating", "available") and v.zone == host.zone]
    if ready:
        volume = ready[0]
        out.found.append(
            Found(f"{role} data volume", volume.volume_id, f"{volume.state} in {volume.zone}")
        )
        out.actions.append(
            Action(
                "attach-volume",
                f"{target} {volume.volume_id} at {DATA_DEVICE}",
                "an earlier run created it but did not attach it",
                role=role,
                resource_id=volume.volume_id,
            )
        )
        return
    reason = f"{host.instance_id} has none"
    out.actions.append(Action("create-volume", target, reason, role=role, zone=host.zone))
    out.actions.append(attach)


def _plan_elastic_ip(settings: Settings, pair: PairState, out: _Draft) -> None:
    # The address is tagged when it is allocated, so one allocated but not associated by a
    # run cut short is found and associated by the next.
    eip = pair.elastic_ip
    master = pair.master
    if not settings.use_elastic_ip:
        if eip is not None:
            out.notes.append(
                f"the Elastic IP {eip.public_ip} ({eip.allocation_id}) is tagged "
                f"Project={settings.project_name} but USE_ELASTIC_IP is false: launch leaves it "
                f"as it is (release it once nothing uses it)"
            )
        if not settings.dns_zone:
            out.notes.append(
                "USE_ELASTIC_IP is false and DNS_ZONE is empty: clients reach GitLab at the "
                "master's own address, which changes at a promotion"
            )
        return
    if eip is None:
        reason = f"none is tagged Project={settings.project_name}"
        out.actions.append(Action("allocate-eip", "an Elastic IP", reason))
        out.actions.append(Action("associate-eip", "the Elastic IP with the master", "it is new"))
        return
    holder = pair.eip_holder
    where = f"the {holder} ({eip.instance_id})" if holder else "nothing"
    out.found.append(Found("Elastic IP", eip.allocation_id, f"{eip.public_ip} on {where}"))
    if eip.instance_id is None:
        out.actions.append(
            Action(
                "associate-eip",
                f"the Elastic IP {eip.public_ip} with the master",
                "an earlier run allocated it but did not associate it",
                resource_id=eip.allocation_id,
            )
        )
    elif master is None or eip.instance_id != master.instance_id:
        who = f"the {holder}" if holder in ROLES else "an instance outside the pair"
        raise Refusal(
            f"the Elastic IP {eip.public_ip} is associated with {who} {eip.instance_id}, not "
            f"with the master: a promotion may be half done; finish it with inv promote-slave, "
            f"or disassociate the address"
        )


def _plan_record(settings: Settings, world: World, out: _Draft) -> None:
    # After the Elastic IP: the record points at it, or at the master's private address.
    view = world.dns
    if view is None:
        return
    record, zone = view.record, view.zone
    target = dns.target_ip(settings, world.pair)
    where = "the Elastic IP" if settings.use_elastic_ip else "the master's private address"
    if target is not None and record.points_at(target, settings.dns_ttl):
        out.found.append(
            Found("DNS record", record.name, f"{record.text()} in {zone.name} ({zone.zone_id})")
        )
        return
    if not record.values:
        reason = f"it does not exist in {zone.name} ({zone.zone_id})"
    else:
        wanted = target or f"the new {where.removeprefix('the ')}"
        reason = f"it is {record.text()}, not {wanted} with TTL {settings.dns_ttl} s"
    out.actions.append(Action("point-record", f"the DNS record {record.name} at {where}", reason))
