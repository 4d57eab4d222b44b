"""ops.hosts.compose without an engine: the project name Compose labels containers with."""

from __future__ import annotations

import dataclasses

import pytest

from ops.errors import SettingError
from ops.hosts.compose import compose_failure, compose_project
from ops.settings import Settings


def test_the_project_label_is_the_name_compose_makes_of_project_name(settings: Settings) -> None:
    assert compose_project(dataclasses.replace(settings, project_name="GitLab DR.2")) == "gitlabdr2"
    with pytest.raises(SettingError):
        compose_project(dataclasses.replace(settings, project_name="!!"))


def test_a_failed_up_says_the_cause_not_composes_summary() -> None:
    said = (
        "Creating gitlabdr_gitlab-rsync_1 ... \r\n"
        "Creating gitlabdr_gitlab-rsync_1 ... error\r\n"
        "\n"
        "ERROR: for gitlabdr_gitlab-rsync_1  Cannot start service gitlab-rsync: "
        "driver failed programming external connectivity\n"
        "\n"
        "ERROR: for gitlab-rsync  Cannot start service gitlab-rsync: "
        "driver failed programming external connectivity\n"
        "ERROR: Encountered errors while bringing up the project.\n"
    )
    assert compose_failure(said) == (
        "for gitlab-rsync Cannot start service gitlab-rsync: "
        "driver failed programming external connectivity"
    )
    long = (
        "ERROR: for a  Cannot start service a: driver failed programming external connectivity "
        f"on endpoint x_a_1 ({'6d' * 32}): Error starting userland proxy: "
        f"listen tcp4 127.0.0.1:45555: {'very ' * 40}bind: address already in use\n"
    )
    cut = compose_failure(long)
    assert len(cut) <= 240
    assert cut.startswith("for a Cannot start service a: driver failed")
    assert cut.endswith("bind: address already in use")
    assert "6d6d" not in cut
    assert compose_failure("ERROR: No such service: nosuch\n") == "No such service: nosuch"
    assert compose_failure("Encountered errors while bringing up the project.\n") == (
        "Encountered errors while bringing up the project."
    )
