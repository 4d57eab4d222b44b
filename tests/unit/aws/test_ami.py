"""inv build-ami: Packer's machine-readable output, the command lines, the checks made first.

Packer itself is replaced by a small script that records its arguments and prints recorded
machine-readable output (tests/fixtures/packer/); nothing reaches AWS.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

import tasks
from ops.aws import ami, packer_output
from ops.aws.ami import PackerError
from ops.errors import Refusal, SettingError
from ops.settings import Settings, load
from tests.unit.aws.fake_packer import FIXTURES, FakePacker

AMI_ID = "ami-0f3d9a7c1e5b28460"


def fixture_lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines()


def fixture_messages(name: str) -> list[packer_output.Message]:
    parsed = [packer_output.parse_line(line) for line in fixture_lines(name)]
    assert all(m is not None for m in parsed), f"{name} has a line that is not machine-readable"
    return [m for m in parsed if m is not None]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The default settings, read from an empty settings file and no environment."""
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    return load(environ={}, env_file=env_file)


@pytest.fixture(autouse=True)
def no_default_var_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An operator's own packer/gitlab.pkrvars.hcl must not leak into these tests."""
    monkeypatch.setattr(ami, "DEFAULT_VAR_FILE", tmp_path / "absent.pkrvars.hcl")


@pytest.fixture
def packer(tmp_path: Path) -> FakePacker:
    return FakePacker(tmp_path / "packer")


# --- Machine-readable output ------------------------------------------------------------------


def test_a_machine_readable_line_is_split_and_unescaped() -> None:
    line = "1732492850,,ui,message,    x: 0 upgraded%!(PACKER_COMMA) 0 newly installed\\nnext"
    message = packer_output.parse_line(line)
    assert message == packer_output.Message(
        1732492850, "", "ui", ("message", "    x: 0 upgraded, 0 newly installed\nnext")
    )


def test_a_machine_readable_line_keeps_its_target_and_every_data_field() -> None:
    message = packer_output.parse_line("1732493573,gitlab-dr.amazon-ebs.gitlab,artifact,0,end\n")
    assert message == packer_output.Message(
        1732493573, "gitlab-dr.amazon-ebs.gitlab", "artifact", ("0", "end")
    )


@pytest.mark.parametrize(
    "line",
    ["", "panic: runtime error", "==> amazon-ebs: not machine readable", "12ab,,ui,say,x"],
)
def test_text_that_is_not_machine_readable_is_not_a_message(line: str) -> None:
    assert packer_output.parse_line(line) is None


def test_every_line_of_the_recorded_outputs_is_machine_readable() -> None:
    for name in ("build_success.txt", "build_failure.txt", "init_success.txt", "hcl_error.txt"):
        assert fixture_messages(name)


def test_progress_shows_the_text_of_say_message_and_error_and_nothing_else() -> None:
    shown = [
        line
        for m in fixture_messages("build_success.txt")
        for line in packer_output.progress_lines(m)
    ]
    assert "==> gitlab-dr.amazon-ebs.gitlab: Launching a source AWS instance..." in shown
    assert "    gitlab-dr.amazon-ebs.gitlab: Instance ID: i-0b2e6f1c9a4d83750" in shown
    assert "==> gitlab-dr.amazon-ebs.gitlab: No volumes to clean up, skipping" in shown
    # A multi-line message becomes several lines, without the blank ones.
    assert shown[-2:] == [
        "--> gitlab-dr.amazon-ebs.gitlab: AMIs were created:",
        f"eu-west-1: {AMI_ID}",
    ]
    # Artifact lines are data for the program, not progress for a person.
    assert not any("mitchellh.amazonebs" in line for line in shown)
    assert all(line.strip() and "PACKER_COMMA" not in line for line in shown)


def test_the_ami_id_is_read_from_the_artifact_line_of_a_recorded_build() -> None:
    # The build also mentions the source AMI and the AMI before tagging: only the artifact counts.
    assert packer_output.artifact_ids(fixture_messages("build_success.txt")) == {
        "eu-west-1": AMI_ID
    }


def test_an_artifact_copied_to_several_regions_gives_one_id_per_region() -> None:
    message = packer_output.parse_line(
        "1,b.amazon-ebs.x,artifact,0,id,eu-west-1:ami-0aaa%!(PACKER_COMMA)us-east-1:ami-0bbb"
    )
    assert message is not None
    assert packer_output.artifact_ids([message]) == {
        "eu-west-1": "ami-0aaa",
        "us-east-1": "ami-0bbb",
    }


def test_a_failed_build_gives_packers_error_on_one_line() -> None:
    error = packer_output.last_error(fixture_messages("build_failure.txt"))
    assert error.startswith("Error querying AMI: UnauthorizedOperation: You are not authorized")
    assert error.endswith("status code: 403, request id: 3c1f7e2a-9b4d-4e6a-8f0c-5d2b1a7e9c34")
    assert "\n" not in error


def test_a_template_problem_gives_the_diagnostic_on_one_line() -> None:
    error = packer_output.last_error(fixture_messages("hcl_error.txt"))
    assert error.startswith('Error: Undefined -var variable A "zzz" variable was passed')
    assert "\n" not in error


def test_a_crash_without_machine_readable_error_gives_the_last_plain_line() -> None:
    assert packer_output.last_error([], ["", "panic: runtime error: nil map", ""]) == (
        "panic: runtime error: nil map"
    )


@pytest.mark.parametrize(
    ("fixture", "version"), [("version_1.11.2.txt", (1, 11, 2)), ("version_1.6.6.txt", (1, 6, 6))]
)
def test_packers_version_is_read_from_its_machine_readable_output(
    fixture: str, version: tuple[int, int, int]
) -> None:
    assert packer_output.packer_version(fixture_messages(fixture)) == version


# --- The template and the command lines ---------------------------------------------------------


def test_template_variables_tell_which_have_a_default() -> None:
    text = (
        'variable "region" {\n  type = string\n}\n\n'
        'variable "size" {\n  type    = number\n  default = 30\n  validation {\n'
        '    condition     = var.size > 1\n    error_message = "Too small."\n  }\n}\n'
    )
    assert ami.template_variables(text) == {"region": False, "size": True}


def test_the_settings_give_exactly_the_template_variables_without_a_default() -> None:
    declared = ami.template_variables(ami.TEMPLATE.read_text())
    assert {name for name, has_default in declared.items() if not has_default} == set(
        ami.SETTING_VARIABLES
    )


def test_the_build_command_passes_the_settings_after_the_variables_file(
    settings: Settings, tmp_path: Path
) -> None:
    var_file = tmp_path / "mine.pkrvars.hcl"
    var_file.write_text(
        'instance_type = "m5.large"\nssh_source_cidrs = [\n  "198.51.100.0/24",\n]\n'
    )
    plan = ami.plan(settings, var_file)
    assert plan.init == ("packer", "init", "-machine-readable", "packer/gitlab.pkr.hcl")
    assert plan.build == (
        "packer",
        "build",
        "-machine-readable",
        f"-var-file={var_file}",
        "-var=region=eu-west-1",
        "-var=gitlab_image=gitlab/gitlab-ce:17.8.1-ce.0",
        "-var=project_name=gitlab-dr",
        "-var=base_image=debian:bookworm-slim",
        "-var=sync_image=gitlab-dr/gitlab-rsync:local",
        "-var=docker_user=admin",
        "-var=data_mount_point=/srv",
        '-var=data_subvolumes=["gitlab","gitlab-sync"]',
        "packer/gitlab.pkr.hcl",
    )


def test_the_data_volume_is_mounted_where_both_homes_live(settings: Settings) -> None:
    moved = dataclasses.replace(settings, gitlab_home="/data/gl/home", sync_home="/data/gl/sync")
    build = ami.plan(moved).build
    assert "-var=data_mount_point=/data/gl" in build
    assert '-var=data_subvolumes=["home","sync"]' in build


def test_homes_not_side_by_side_are_refused_in_one_line(settings: Settings) -> None:
    apart = dataclasses.replace(settings, gitlab_home="/srv/gitlab", sync_home="/srv/dr/sync")
    with pytest.raises(SettingError, match=r"side by side .* btrfs subvolume at the top"):
        ami.plan(apart)


def test_packer_gitlab_pkrvars_hcl_is_used_when_present(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    default = tmp_path / "gitlab.pkrvars.hcl"
    default.write_text("root_volume_gb = 40\n")
    monkeypatch.setattr(ami, "DEFAULT_VAR_FILE", default)
    assert ami.plan(settings).var_file == default
    assert f"-var-file={default}" in ami.plan(settings).build


def test_the_example_variables_file_is_accepted_as_it_is(settings: Settings) -> None:
    example = ami.PACKER_DIR / "gitlab.pkrvars.hcl.example"
    assert ami.plan(settings, example).var_file == example


def test_a_variables_file_may_not_set_what_comes_from_the_settings(
    settings: Settings, tmp_path: Path
) -> None:
    var_file = tmp_path / "v.pkrvars.hcl"
    var_file.write_text('gitlab_image = "gitlab/gitlab-ce:16.0.0-ce.0"\n')
    with pytest.raises(
        SettingError, match=r"sets gitlab_image, which comes from the settings \(GITLAB_IMAGE\)"
    ):
        ami.plan(settings, var_file)


def test_a_variables_file_with_an_undeclared_variable_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    var_file = tmp_path / "v.pkrvars.hcl"
    var_file.write_text('instance_typo = "m5.large"\n')
    with pytest.raises(
        SettingError, match=r"sets instance_typo, which gitlab\.pkr\.hcl does not declare"
    ):
        ami.plan(settings, var_file)


def test_a_json_variables_file_is_read_too(settings: Settings, tmp_path: Path) -> None:
    var_file = tmp_path / "v.pkrvars.json"
    var_file.write_text('{"region": "us-east-1"}')
    with pytest.raises(SettingError, match="sets region, which comes from the settings"):
        ami.plan(settings, var_file)


def test_a_variables_file_that_does_not_exist_is_an_error(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(SettingError, match=r"the Packer variables file .*nope.hcl does not exist"):
        ami.plan(settings, tmp_path / "nope.hcl")


def test_an_empty_setting_is_named_before_anything_runs(settings: Settings) -> None:
    with pytest.raises(SettingError, match=r"^PROJECT_NAME is not set \("):
        ami.plan(dataclasses.replace(settings, project_name=""))


def test_homes_not_under_one_folder_are_refused(settings: Settings) -> None:
    split = dataclasses.replace(settings, gitlab_home="/srv/gitlab", sync_home="/var/sync")
    with pytest.raises(SettingError, match="must sit under one folder other than /"):
        ami.plan(split)


def test_a_template_variable_without_default_nor_value_is_named(
    settings: Settings, tmp_path: Path
) -> None:
    template = tmp_path / "t.pkr.hcl"
    template.write_text(
        ami.TEMPLATE.read_text() + '\nvariable "subnet_tag" {\n  type = string\n}\n'
    )
    with pytest.raises(SettingError, match="the Packer variable subnet_tag has no value"):
        ami.plan(settings, template=template)


# --- build_ami: the checks first, then packer init and packer build ------------------------------


def test_a_missing_packer_is_a_one_line_error_before_anything_runs(
    settings: Settings, packer: FakePacker
) -> None:
    with pytest.raises(PackerError, match=r"^packer is not on PATH: install Packer 1\.7 or later"):
        ami.build_ami(settings, None, print, which=lambda _: None, environ=packer.environ)
    assert packer.calls() == []


def test_a_missing_setting_stops_the_build_before_packer_runs(
    settings: Settings, packer: FakePacker
) -> None:
    with pytest.raises(SettingError, match=r"^GITLAB_IMAGE is not set"):
        packer.build(dataclasses.replace(settings, gitlab_image=""))
    assert packer.calls() == []


def test_packer_older_than_1_7_is_refused_before_init(
    settings: Settings, packer: FakePacker
) -> None:
    packer.answer("version", "version_1.6.6.txt")
    with pytest.raises(PackerError, match=r"^Packer 1\.6\.6 is too old: inv build-ami needs 1\.7"):
        packer.build(settings)
    assert packer.calls() == ["-machine-readable version"]


def test_a_moto_endpoint_is_refused_because_packer_would_build_in_real_aws(
    settings: Settings, packer: FakePacker
) -> None:
    moto = dataclasses.replace(settings, aws_endpoint_url="http://127.0.0.1:5000")
    with pytest.raises(Refusal, match="AWS_ENDPOINT_URL is set"):
        packer.build(moto)
    assert packer.calls() == []


def test_a_build_runs_init_then_build_and_returns_the_ami_id(
    settings: Settings, packer: FakePacker
) -> None:
    ami_id, lines = packer.build(settings)
    assert ami_id == AMI_ID
    assert packer.calls() == [
        "-machine-readable version",
        "init -machine-readable packer/gitlab.pkr.hcl",
        "build -machine-readable -var=region=eu-west-1"
        " -var=gitlab_image=gitlab/gitlab-ce:17.8.1-ce.0 -var=project_name=gitlab-dr"
        " -var=base_image=debian:bookworm-slim"
        " -var=sync_image=gitlab-dr/gitlab-rsync:local -var=docker_user=admin"
        " -var=data_mount_point=/srv"
        ' -var=data_subvolumes=["gitlab","gitlab-sync"] packer/gitlab.pkr.hcl',
    ]
    # Progress is streamed, human-readable, from init and from build.
    assert any(line.startswith("Installed plugin github.com/hashicorp/amazon") for line in lines)
    assert (
        "    gitlab-dr.amazon-ebs.gitlab: provision: done: gitlab/gitlab-ce:17.8.1-ce.0 and "
        "gitlab-dr/gitlab-rsync:local, data volume gitlab-data at /srv"
    ) in lines


def test_a_failed_build_raises_with_packers_last_error(
    settings: Settings, packer: FakePacker
) -> None:
    packer.answer("build", "build_failure.txt", rc=1)
    with pytest.raises(PackerError) as caught:
        packer.build(settings)
    assert str(caught.value).startswith(
        "packer build failed: Error querying AMI: UnauthorizedOperation: You are not authorized"
    )
    assert "\n" not in str(caught.value)


def test_a_failed_init_stops_before_the_build(settings: Settings, packer: FakePacker) -> None:
    packer.answer(
        "init",
        rc=1,
        text='1732492790,,ui,error,Failed getting the "github.com/hashicorp/amazon" plugin:\\n'
        "could not reach api.github.com\n",
    )
    with pytest.raises(
        PackerError,
        match=r'^packer init failed: Failed getting the "github\.com/hashicorp/amazon" plugin: '
        r"could not reach",
    ):
        packer.build(settings)
    assert [call.split()[0] for call in packer.calls()] == ["-machine-readable", "init"]


def test_a_crash_of_packer_reports_its_plain_output(settings: Settings, packer: FakePacker) -> None:
    packer.answer("build", rc=2, text="panic: runtime error: invalid memory address\n")
    with pytest.raises(PackerError, match=r"^packer build failed: panic: runtime error"):
        packer.build(settings)


def test_a_build_with_no_ami_for_the_region_is_an_error(
    settings: Settings, packer: FakePacker
) -> None:
    other = dataclasses.replace(settings, aws_region="us-east-1")
    with pytest.raises(PackerError, match=r"no AMI for us-east-1 \(artifacts: eu-west-1: ami-0f3d"):
        packer.build(other)


# --- The task ---------------------------------------------------------------------------------


def test_the_task_dry_run_prints_the_commands_and_runs_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text("AWS_REGION=eu-central-1\n")
    monkeypatch.setenv("ENV_FILE", str(env_file))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    tasks.build_ami(Context(), dry_run=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "packer init -machine-readable packer/gitlab.pkr.hcl"
    assert out[1].startswith("packer build -machine-readable -var=region=eu-central-1 ")


def test_the_task_turns_a_missing_packer_into_a_one_line_exit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text("")
    monkeypatch.setenv("ENV_FILE", str(env_file))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(Exit) as caught:
        tasks.build_ami(Context())
    assert caught.value.code == 1
    assert str(caught.value.message).startswith("error: packer is not on PATH")
