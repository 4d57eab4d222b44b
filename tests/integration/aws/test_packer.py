"""The AMI's parts, checked without AWS and without the Amazon plugin.

- packer/gitlab.pkr.hcl parsed with python-hcl2: variables declared and used, the files the
  provisioners name, the plugin, IMDSv2, encryption, tags; the variables example in step.
- ``packer fmt -check`` (skipped only when packer is absent) and shellcheck on every script.
- packer/provision.sh run for real as root in a Debian container built from the local base
  image (scripts/base-image.sh), with Debian's mirror: about 30 to 90 s, once for the module.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import hcl2
import pytest
from docker.models.containers import Container

from ops.aws import ami

ROOT = Path(__file__).resolve().parents[3]
PACKER_DIR = ROOT / "packer"
TEMPLATE = PACKER_DIR / "gitlab.pkr.hcl"
EXAMPLE = PACKER_DIR / "gitlab.pkrvars.hcl.example"
PROVISION = PACKER_DIR / "provision.sh"
GITLAB_IMAGE = "gitlab/gitlab-ce:17.8.1-ce.0"

pytestmark = pytest.mark.integration


# --- The template, parsed ---------------------------------------------------------------------


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _clean(node: Any) -> Any:
    """python-hcl2's tree without its markers and comments, labels and strings unquoted."""
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if isinstance(node, str):
        return _unquote(node)
    return node


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    with TEMPLATE.open(encoding="utf-8") as f:
        tree: dict[str, Any] = _clean(hcl2.load(f))
    return tree


@pytest.fixture(scope="module")
def variables(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: body for block in template["variable"] for name, body in block.items()}


def _source(template: dict[str, Any]) -> dict[str, Any]:
    (block,) = template["source"]
    body: dict[str, Any] = block["amazon-ebs"]["gitlab"]
    return body


def _provisioners(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    (build,) = template["build"]
    return [(kind, body) for block in build["provisioner"] for kind, body in block.items()]


_VAR_REF = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)")


def test_every_variable_the_template_uses_is_declared_and_every_declared_one_is_used(
    template: dict[str, Any], variables: dict[str, dict[str, Any]]
) -> None:
    # Uses outside the variable blocks: a variable's own validation does not count as a use.
    rest = json.dumps({k: v for k, v in template.items() if k != "variable"})
    used = set(_VAR_REF.findall(rest))
    assert used - set(variables) == set(), "used but not declared"
    assert set(variables) - used == set(), "declared but never used"


def test_every_variable_has_a_type_and_a_description(
    variables: dict[str, dict[str, Any]],
) -> None:
    for name, body in variables.items():
        assert body.get("type"), f"{name} has no type"
        assert str(body.get("description", "")).strip(), f"{name} has no description"


def test_ops_reads_the_same_variables_and_defaults_as_packer_would(
    variables: dict[str, dict[str, Any]],
) -> None:
    expected = {name: "default" in body for name, body in variables.items()}
    assert ami.template_variables(TEMPLATE.read_text()) == expected
    assert {n for n, has_default in expected.items() if not has_default} == set(
        ami.SETTING_VARIABLES
    )


def test_the_variables_example_documents_every_variable_and_sets_only_declared_ones(
    variables: dict[str, dict[str, Any]],
) -> None:
    text = EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, re.M))
    assert set(variables) - documented == set(), "variables missing from the example"
    assigned = ami.var_file_names(EXAMPLE)
    assert assigned <= set(variables)
    assert not assigned & set(ami.SETTING_VARIABLES), "the example sets a variable from .env"


def test_every_file_the_provisioners_upload_or_run_exists_in_the_repository(
    template: dict[str, Any],
) -> None:
    named: list[str] = []
    for kind, body in _provisioners(template):
        if kind == "file":
            named.append(body["source"])
        if kind == "shell":
            named += [body["script"]] if "script" in body else body.get("scripts", [])
    assert len(named) >= 3
    for path in named:
        assert path.startswith("${path.root}/"), f"{path} depends on Packer's working directory"
        resolved = (PACKER_DIR / path.removeprefix("${path.root}/")).resolve()
        assert resolved.exists(), f"{path} ({resolved}) does not exist"
        assert ROOT in resolved.parents, f"{path} is outside the repository"
    # The sidecar's build context (its Dockerfile and its code, ops/ for gitlab-verify) travels
    # with the Compose stack.
    for part in ("/../compose", "/../images/gitlab-rsync", "/../sidecar", "/../ops"):
        assert any(p.endswith(part) for p in named), f"nothing uploads {part}"
    assert (ROOT / "compose" / "docker-compose.yml").is_file()
    assert (ROOT / "images" / "gitlab-rsync" / "Dockerfile").is_file()


def test_the_provisioning_script_reads_every_variable_it_is_given(
    template: dict[str, Any],
) -> None:
    (shell,) = [b for kind, b in _provisioners(template) if kind == "shell" and "script" in b]
    given = [item.split("=", 1)[0] for item in shell["environment_vars"]]
    script = PROVISION.read_text()
    for name in [*given, "GITLAB_IMAGE", "PROVISION_SKIP_PULL", "PROVISION_SKIP_BUILD"]:
        assert re.search(rf"\$\{{?{name}\b", script), f"provision.sh does not read {name}"
    assert "sudo" in shell["execute_command"], "provision.sh must run as root"


def test_the_template_needs_the_amazon_plugin_and_packer_1_7(template: dict[str, Any]) -> None:
    (packer,) = template["packer"]
    (plugins,) = packer["required_plugins"]
    assert plugins["amazon"]["source"] == "github.com/hashicorp/amazon"
    assert plugins["amazon"]["version"]
    assert packer["required_version"] == ">= 1.7.0"


def test_the_ami_is_debian_12_imdsv2_only_encrypted_and_tagged(
    template: dict[str, Any], variables: dict[str, dict[str, Any]]
) -> None:
    source = _source(template)
    (ami_filter,) = source["source_ami_filter"]
    assert ami_filter["owners"] == ["${var.source_ami_owner}"]
    assert variables["source_ami_owner"]["default"] == "136693071363"
    assert ami_filter["filters"]["name"] == "${var.source_ami_name}"
    assert variables["source_ami_name"]["default"] == "debian-12-amd64-*"
    assert ami_filter["most_recent"] is True
    (metadata,) = source["metadata_options"]
    assert metadata["http_tokens"] == "required"
    assert source["imds_support"] == "v2.0"
    (root,) = source["launch_block_device_mappings"]
    assert root["encrypted"] is True
    (local,) = template["locals"]
    assert set(local["tags"]) >= {"Project", "Name"}
    assert local["tags"]["Project"] == "${var.project_name}"
    assert source["tags"] == source["snapshot_tags"] == "${local.tags}"


# --- Formatting and shell scripts ----------------------------------------------------------------


def test_the_template_and_the_variables_example_are_packer_fmt_clean(tmp_path: Path) -> None:
    packer = shutil.which("packer")
    if packer is None:
        pytest.skip("packer is not installed (make host-deps installs it)")
    # packer fmt only looks at *.pkr.hcl and *.pkrvars.hcl files.
    example = tmp_path / "example.pkrvars.hcl"
    shutil.copy(EXAMPLE, example)
    for path in (TEMPLATE, example):
        run = subprocess.run(
            [packer, "fmt", "-check", "-diff", str(path)],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": "/usr/bin:/bin", "CHECKPOINT_DISABLE": "1"},
        )
        assert run.returncode == 0, f"{path.name} is not packer fmt clean:\n{run.stdout}"


def _shell_scripts() -> list[Path]:
    skip = {".git", ".venv", ".sandbox", "node_modules", ".mypy_cache", ".ruff_cache"}
    return sorted(
        p for p in ROOT.rglob("*.sh") if not skip & set(p.relative_to(ROOT).parts) and p.is_file()
    )


def test_every_shell_script_in_the_repository_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck is missing: make host-deps installs it"
    scripts = _shell_scripts()
    assert PROVISION in scripts
    assert PACKER_DIR / "files" / "prepare-data-volume.sh" in scripts
    run = subprocess.run(
        [shellcheck, "--external-sources", *map(str, scripts)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# --- provision.sh, for real, in a container -----------------------------------------------------


def _base_image() -> str:
    run = subprocess.run(
        [str(ROOT / "scripts" / "base-image.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return run.stdout.strip().splitlines()[-1]


def _tar(files: dict[str, Path]) -> bytes:
    """A tar of ``files`` (name in the archive → local file or folder), owned by root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in files.items():
            tar.add(
                path,
                arcname=name,
                filter=lambda info: None if "__pycache__" in info.name else _root_owned(info),
            )
    return buf.getvalue()


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


# Stands in front of the real docker CLI and records every call, to show nothing was started.
DOCKER_SHIM = """#!/bin/sh
printf '%s\\n' "$*" >>/var/log/docker-calls.log
exec /usr/bin/docker "$@"
"""


@dataclass
class Host:
    """A container standing in for the build instance."""

    container: Container

    def sh(self, script: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        code, output = self.container.exec_run(["bash", "-c", script], environment=env or {})
        assert isinstance(output, bytes)
        return int(code or 0), output.decode(errors="replace")

    def ok(self, script: str) -> str:
        code, output = self.sh(script)
        assert code == 0, f"{script!r} exited {code}:\n{output}"
        return output

    def stage(self) -> None:
        """What Packer's file provisioners upload, where they upload it."""
        archive = _tar(
            {
                "tmp/gitlab-dr/compose": ROOT / "compose",
                "tmp/gitlab-dr/images/gitlab-rsync": ROOT / "images" / "gitlab-rsync",
                "tmp/gitlab-dr/sidecar": ROOT / "sidecar",
                "tmp/gitlab-dr/ops": ROOT / "ops",
                "tmp/gitlab-dr/prepare-data-volume.sh": PACKER_DIR
                / "files"
                / "prepare-data-volume.sh",
                "root/provision.sh": PROVISION,
            }
        )
        assert self.container.put_archive("/", archive)

    def provision(self, **extra: str) -> tuple[int, str]:
        self.stage()
        env = {
            "GITLAB_IMAGE": GITLAB_IMAGE,
            "PROVISION_SKIP_PULL": "1",
            "PROVISION_SKIP_BUILD": "1",
            **extra,
        }
        return self.sh("bash /root/provision.sh", env)


@pytest.fixture(scope="module")
def docker_client() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture(scope="module")
def base_image() -> str:
    return _base_image()


def _new_host(client: docker.DockerClient, image: str) -> Host:
    container = client.containers.run(
        image,
        ["sleep", "infinity"],
        name=f"gitlab-dr-provision-{uuid.uuid4().hex[:8]}",
        detach=True,
        labels={"gitlab-dr.test": "packer"},
    )
    host = Host(container)
    host.ok(
        f"mkdir -p /usr/local/bin && cat >/usr/local/bin/docker <<'EOF'\n{DOCKER_SHIM}EOF\n"
        "chmod 0755 /usr/local/bin/docker"
    )
    return host


@pytest.fixture
def fresh_host(docker_client: docker.DockerClient, base_image: str) -> Iterator[Host]:
    host = _new_host(docker_client, base_image)
    try:
        yield host
    finally:
        host.container.remove(force=True)


@dataclass
class Provisioned:
    host: Host
    code: int
    output: str


@pytest.fixture(scope="module")
def provisioned(docker_client: docker.DockerClient, base_image: str) -> Iterator[Provisioned]:
    """A container provisioned once by provision.sh, as root, with the admin user present."""
    host = _new_host(docker_client, base_image)
    try:
        host.ok("useradd --create-home --shell /bin/bash admin")
        code, output = host.provision()
        yield Provisioned(host, code, output)
    finally:
        host.container.remove(force=True)


def test_provisioning_refuses_a_missing_user_before_installing_anything(fresh_host: Host) -> None:
    code, output = fresh_host.provision(DOCKER_USER="nobody-here")
    assert code == 1
    assert "provision: error: user nobody-here does not exist" in output
    assert fresh_host.sh("dpkg -s docker.io")[0] != 0


def test_provisioning_refuses_an_unpinned_gitlab_image(fresh_host: Host) -> None:
    code, output = fresh_host.provision(GITLAB_IMAGE="gitlab/gitlab-ce:latest")
    assert code == 1
    assert "GITLAB_IMAGE must be pinned, not :latest" in output


def test_provisioning_succeeds_and_says_what_it_skipped(provisioned: Provisioned) -> None:
    assert provisioned.code == 0, provisioned.output
    out = provisioned.output
    assert f"provision: skipped: pulling {GITLAB_IMAGE} (PROVISION_SKIP_PULL=1)" in out
    assert (
        "provision: skipped: building gitlab-dr/gitlab-rsync:local (PROVISION_SKIP_BUILD=1)" in out
    )
    assert "provision: skipped: enabling and starting the Docker engine (no systemd here)" in out


def test_the_docker_engine_and_compose_are_installed(provisioned: Provisioned) -> None:
    host = provisioned.host
    assert "Docker version" in host.ok("/usr/bin/docker --version")
    assert host.ok("dockerd --version").startswith("Docker version")
    host.ok("docker compose version || docker-compose version")
    assert json.loads(host.ok("cat /etc/docker/daemon.json"))["live-restore"] is True


def test_the_admin_user_may_use_the_engine(provisioned: Provisioned) -> None:
    assert "docker" in provisioned.host.ok("id -nG admin").split()


def test_the_inotify_watch_limit_is_raised_at_boot(provisioned: Provisioned) -> None:
    conf = provisioned.host.ok("cat /etc/sysctl.d/60-gitlab-dr.conf")
    assert re.search(r"^fs\.inotify\.max_user_watches = 1048576$", conf, re.M)


def test_the_data_volume_mount_point_is_ready_and_nothing_is_mounted(
    provisioned: Provisioned,
) -> None:
    host = provisioned.host
    host.ok("test -d /srv")
    assert host.sh("findmnt /srv")[0] != 0, "something is mounted at /srv"
    assert host.ok("ls -A /srv").strip() == "", "/srv must stay empty below the mount point"
    fstab = [line.split() for line in host.ok("cat /etc/fstab").splitlines()]
    entries = [f for f in fstab if len(f) >= 4 and f[1] == "/srv"]
    assert len(entries) == 1
    assert entries[0][0] == "LABEL=gitlab-data"
    assert "nofail" in entries[0][3].split(",")
    assert "x-systemd.requires=gitlab-dr-data.service" in entries[0][3].split(",")
    host.ok("test -x /usr/local/sbin/gitlab-dr-prepare-data-volume")
    host.ok(
        "grep -qx 'ExecStart=/usr/local/sbin/gitlab-dr-prepare-data-volume' "
        "/etc/systemd/system/gitlab-dr-data.service"
    )
    # The engine waits for the data volume: GitLab never starts on the bare root disk.
    assert "RequiresMountsFor=/srv" in host.ok("cat /etc/systemd/system/docker.service.d/*.conf")


def test_the_compose_stack_is_installed_and_the_staging_area_removed(
    provisioned: Provisioned,
) -> None:
    host = provisioned.host
    host.ok("test -f /opt/gitlab-dr/compose/docker-compose.yml")
    host.ok("test -f /opt/gitlab-dr/images/gitlab-rsync/Dockerfile")
    host.ok("test -f /opt/gitlab-dr/sidecar/gitlab_sync/__main__.py")
    host.ok("test -f /opt/gitlab-dr/ops/dr/verify_schedule.py")
    assert host.sh("test -e /tmp/gitlab-dr")[0] != 0
    assert host.sh("test -e /usr/sbin/policy-rc.d")[0] != 0, "policy-rc.d left behind"
    image_env = host.ok("cat /etc/gitlab-dr/image.env")
    assert f"GITLAB_IMAGE={GITLAB_IMAGE}\n" in image_env


def test_gitlab_is_not_started(provisioned: Provisioned) -> None:
    host = provisioned.host
    calls = host.ok("cat /var/log/docker-calls.log")
    assert calls.strip(), "the docker CLI shim saw no call"
    starts = {"run", "start", "create", "up", "restart"}
    for line in calls.splitlines():
        assert not starts & set(line.split()), f"docker {line}"
    processes = host.ok("ps -eo comm=").split()
    assert not {"dockerd", "containerd", "gitlab-ctl", "runsvdir", "puma"} & set(processes)
    assert "provision: no Docker engine running: GitLab is not started" in provisioned.output


def test_provisioning_twice_changes_nothing_more(provisioned: Provisioned) -> None:
    host = provisioned.host
    fstab_before = host.ok("cat /etc/fstab")
    code, output = host.provision()
    assert code == 0, output
    assert host.ok("cat /etc/fstab") == fstab_before
