"""Build the hosts' AMI with Packer (``packer/gitlab.pkr.hcl``) and read its id from the output.

Everything is checked before Packer starts: the binary and its version, the settings the
template needs, the variables file. Packer then runs twice through :func:`run_packer`, the one
place that starts it: ``packer init`` (installs the Amazon plugin) and ``packer build
-machine-readable``. Its machine-readable lines are turned into progress lines for a callback,
and the AMI id is read from the ``artifact,0,id,<region>:ami-...`` line.

The output's parsing is in :mod:`ops.aws.packer_output`.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ops.aws.client import kms_client
from ops.aws.kms import check_key
from ops.aws.packer_output import (
    Message,
    artifact_ids,
    last_error,
    packer_version,
    parse_line,
    progress_lines,
)
from ops.errors import OpsError, Refusal, SettingError
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

REPO = Path(__file__).resolve().parents[2]
PACKER_DIR = REPO / "packer"
TEMPLATE = PACKER_DIR / "gitlab.pkr.hcl"
DEFAULT_VAR_FILE = PACKER_DIR / "gitlab.pkrvars.hcl"
MIN_PACKER = (1, 7, 0)  # packer init and required_plugins

# Template variables given from the settings, with the settings they come from. The template
# declares them without a default; a variables file may not set them (the AMI must match .env).
SETTING_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "region": ("AWS_REGION",),
    "gitlab_image": ("GITLAB_IMAGE",),
    "project_name": ("PROJECT_NAME",),
    "base_image": ("BASE_IMAGE",),
    "sync_image": ("SYNC_IMAGE",),
    "docker_user": ("SSH_USER",),
    "data_mount_point": ("GITLAB_HOME", "SYNC_HOME"),
    "data_subvolumes": ("GITLAB_HOME", "SYNC_HOME"),
}
# Template variables with a default that a setting overrides when it is set (then a variables
# file may not set them either).
OPTIONAL_SETTING_VARIABLES: Mapping[str, str] = {
    "kms_key_id": "KMS_KEY_ID",
}

OnLine = Callable[[str], None]


class PackerError(OpsError):
    """Packer is missing or too old, or ``packer init`` / ``packer build`` failed."""


# --- The template and the variables file ----------------------------------------------------

_VARIABLE_BLOCK = re.compile(r'^variable\s+"([A-Za-z_][A-Za-z0-9_-]*)"\s*\{(.*?)^\}', re.M | re.S)
_DEFAULT = re.compile(r"^\s*default\s*=", re.M)
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*=", re.M)


def template_variables(text: str) -> dict[str, bool]:
    """Variable name → whether it has a default, for a template in ``packer fmt`` layout."""
    return {m.group(1): bool(_DEFAULT.search(m.group(2))) for m in _VARIABLE_BLOCK.finditer(text)}


def var_file_names(path: Path) -> set[str]:
    """The variables a ``.pkrvars.hcl`` (top-level ``name = ...``) or ``.pkrvars.json`` sets."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingError(f"cannot read the Packer variables file {path}: {exc.strerror}") from exc
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SettingError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingError(f"{path} must hold a JSON object of variables")
        return set(data)
    return set(_ASSIGNMENT.findall(text))


def data_mount_point(gitlab_home: str, sync_home: str) -> str:
    """The folder both homes live in, side by side: where the data volume is mounted.

    Side by side because each home is a btrfs subvolume at the top of the volume: promotion
    replaces GITLAB_HOME with a writable snapshot made from SYNC_HOME's snapshots, which only
    works within one filesystem, from the folder that holds both.
    """
    common = posixpath.commonpath([gitlab_home, sync_home])
    if common == "/":
        raise SettingError(
            f"GITLAB_HOME ({gitlab_home}) and SYNC_HOME ({sync_home}) must sit under one folder "
            "other than /, where the data volume is mounted (like /srv/gitlab and /srv/gitlab-sync)"
        )
    if common in {gitlab_home, sync_home}:
        raise SettingError(
            f"GITLAB_HOME ({gitlab_home}) and SYNC_HOME ({sync_home}) must be two folders side by "
            "side, neither inside the other"
        )
    if posixpath.dirname(gitlab_home.rstrip("/")) != posixpath.dirname(sync_home.rstrip("/")):
        raise SettingError(
            f"GITLAB_HOME ({gitlab_home}) and SYNC_HOME ({sync_home}) must be folders of one "
            f"folder, side by side (like {common}/gitlab and {common}/gitlab-sync): each is a "
            "btrfs subvolume at the top of the data volume"
        )
    return common


def data_subvolumes(gitlab_home: str, sync_home: str) -> str:
    """The subvolumes the AMI makes at the top of the data volume, as Packer reads a list."""
    data_mount_point(gitlab_home, sync_home)
    names = [posixpath.basename(home.rstrip("/")) for home in (gitlab_home, sync_home)]
    return json.dumps(names, separators=(",", ":"))


def setting_values(settings: Settings) -> dict[str, str]:
    """The template variables that come from the settings, with their values (an optional one
    only when its setting is set)."""
    for names in SETTING_VARIABLES.values():
        for name in names:
            settings.require(name)
    optional = {v: str(getattr(settings, n.lower())) for v, n in OPTIONAL_SETTING_VARIABLES.items()}
    return {
        "region": settings.aws_region,
        "gitlab_image": settings.gitlab_image,
        "project_name": settings.project_name,
        "base_image": settings.base_image,
        "sync_image": settings.sync_image,
        "docker_user": settings.ssh_user,
        "data_mount_point": data_mount_point(settings.gitlab_home, settings.sync_home),
        "data_subvolumes": data_subvolumes(settings.gitlab_home, settings.sync_home),
        **{v: value for v, value in optional.items() if value},
    }


@dataclass(frozen=True)
class BuildPlan:
    """The Packer command lines to run, from the repository's root, in order."""

    init: tuple[str, ...]
    build: tuple[str, ...]
    var_file: Path | None

    @property
    def commands(self) -> tuple[tuple[str, ...], ...]:
        """``packer init``, then ``packer build``."""
        return (self.init, self.build)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path.resolve())


def plan(settings: Settings, var_file: Path | None = None, template: Path = TEMPLATE) -> BuildPlan:
    """Check the settings and the variables file against the template; the command lines.

    ``var_file`` None: ``packer/gitlab.pkrvars.hcl`` when it exists, else none.
    """
    if var_file is None and DEFAULT_VAR_FILE.is_file():
        var_file = DEFAULT_VAR_FILE
    if var_file is not None and not var_file.is_file():
        raise SettingError(f"the Packer variables file {var_file} does not exist")
    try:
        declared = template_variables(template.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PackerError(f"cannot read the Packer template {template}: {exc.strerror}") from exc

    values = setting_values(settings)
    from_file = var_file_names(var_file) if var_file is not None else set()
    from_settings = {
        **SETTING_VARIABLES,
        **{v: (n,) for v, n in OPTIONAL_SETTING_VARIABLES.items() if v in values},
    }
    owned = sorted(from_file & set(from_settings))
    if owned:
        name = owned[0]
        raise SettingError(
            f"{var_file} sets {name}, which comes from the settings "
            f"({' and '.join(from_settings[name])}); remove it from that file"
        )
    unknown = sorted(from_file - set(declared))
    if unknown:
        raise SettingError(
            f"{var_file} sets {', '.join(unknown)}, which {template.name} does not declare "
            "(see packer/gitlab.pkrvars.hcl.example)"
        )
    missing = sorted(
        n
        for n, has_default in declared.items()
        if not has_default and n not in values and n not in from_file
    )
    if missing:
        raise SettingError(
            f"the Packer variable{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'have' if len(missing) > 1 else 'has'} no value: set "
            f"{'them' if len(missing) > 1 else 'it'} in {_shown(var_file or DEFAULT_VAR_FILE)}"
        )

    shown_template = _shown(template)
    build = ["packer", "build", "-machine-readable"]
    if var_file is not None:
        build.append(f"-var-file={_shown(var_file)}")
    build += [f"-var={name}={value}" for name, value in values.items()]
    build.append(shown_template)
    return BuildPlan(
        ("packer", "init", "-machine-readable", shown_template), tuple(build), var_file
    )


# --- Running Packer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PackerRun:
    """What one Packer command did: its exit code, its messages and any other output lines."""

    returncode: int
    messages: tuple[Message, ...]
    other_lines: tuple[str, ...]


def packer_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment Packer runs with: ours, without its update check (checkpoint)."""
    env = dict(os.environ if environ is None else environ)
    env["CHECKPOINT_DISABLE"] = "1"
    return env


def run_packer(
    argv: Sequence[str],
    on_line: OnLine | None = None,
    *,
    packer: str = "packer",
    cwd: Path = REPO,
    environ: Mapping[str, str] | None = None,
) -> PackerRun:
    """Run one Packer command (``argv[0]`` is replaced by ``packer``, its resolved path) and
    stream its progress lines to ``on_line``. Every Packer command goes through here.

    A Ctrl-C reaches Packer too (same process group): it cleans up what it created in AWS, and
    this waits for it to finish before letting the interrupt go on.
    """
    args = [packer, *argv[1:]]
    if "-machine-readable" not in args:
        args.insert(1, "-machine-readable")
    messages: list[Message] = []
    other: list[str] = []

    def take(raw: str) -> None:
        message = parse_line(raw)
        if message is None:
            if raw.strip():
                other.append(raw.rstrip())
                if on_line is not None:
                    on_line(raw.rstrip())
            return
        messages.append(message)
        if on_line is not None:
            for line in progress_lines(message):
                on_line(line)

    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=packer_env(environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
    except OSError as exc:
        raise PackerError(f"cannot run {packer}: {exc.strerror or exc}") from exc
    with proc:
        output = proc.stdout if proc.stdout is not None else iter(())
        try:
            for raw in output:
                take(raw)
        except KeyboardInterrupt:
            for raw in output:
                take(raw)
            proc.wait()
            raise
        returncode = proc.wait()
    return PackerRun(returncode, tuple(messages), tuple(other))


def find_packer(which: Callable[[str], str | None] = shutil.which) -> str:
    """The path of ``packer`` on PATH, or a :class:`PackerError` saying how to get it."""
    path = which("packer")
    if path is None:
        raise PackerError(
            "packer is not on PATH: install Packer 1.7 or later "
            "(https://developer.hashicorp.com/packer/install)"
        )
    return path


def check_packer_version(
    packer: str, environ: Mapping[str, str] | None = None
) -> tuple[int, int, int]:
    """Packer's version, or a :class:`PackerError` if it is older than :data:`MIN_PACKER`."""
    run = run_packer(["packer", "version"], packer=packer, environ=environ)
    version = packer_version(run.messages)
    if run.returncode != 0 or version is None:
        detail = last_error(run.messages, run.other_lines) or f"exit code {run.returncode}"
        raise PackerError(f"{packer} version failed: {detail}")
    if version < MIN_PACKER:
        shown = ".".join(map(str, version))
        raise PackerError(
            f"Packer {shown} is too old: inv build-ami needs 1.7 or later "
            "(packer init and required_plugins); https://developer.hashicorp.com/packer/install"
        )
    return version


def build_ami(
    settings: Settings,
    var_file: Path | None,
    on_line: OnLine,
    *,
    which: Callable[[str], str | None] = shutil.which,
    environ: Mapping[str, str] | None = None,
    kms: KMSClient | None = None,
) -> str:
    """Build the AMI and return its id. Checks everything first (``KMS_KEY_ID``'s key too, which
    encrypts the AMI's snapshot); streams Packer's progress."""
    if settings.aws_endpoint_url:
        raise Refusal(
            f"AWS_ENDPOINT_URL is set ({settings.aws_endpoint_url}): Packer's Amazon plugin does "
            "not use it and would build in real AWS; unset it to build the AMI"
        )
    packer = find_packer(which)
    build_plan = plan(settings, var_file)
    check_packer_version(packer, environ)
    if settings.kms_key_id:
        check_key(settings, kms or kms_client(settings))

    on_line(f"packer init: installing the plugins {TEMPLATE.name} requires")
    init = run_packer(build_plan.init, on_line, packer=packer, environ=environ)
    if init.returncode != 0:
        detail = last_error(init.messages, init.other_lines) or f"exit code {init.returncode}"
        raise PackerError(f"packer init failed: {detail}")

    region = settings.aws_region
    on_line(f"packer build: the AMI in {region}, from Debian 12, with {settings.gitlab_image}")
    build = run_packer(build_plan.build, on_line, packer=packer, environ=environ)
    if build.returncode != 0:
        detail = last_error(build.messages, build.other_lines) or f"exit code {build.returncode}"
        raise PackerError(f"packer build failed: {detail}")
    amis = artifact_ids(build.messages)
    if region not in amis:
        made = ", ".join(f"{r}: {a}" for r, a in sorted(amis.items())) or "none"
        raise PackerError(f"packer build reported no AMI for {region} (artifacts: {made})")
    return amis[region]
