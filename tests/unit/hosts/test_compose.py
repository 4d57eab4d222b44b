"""ops.hosts.compose without an engine: the project name Compose labels containers with."""

from __future__ import annotations

import dataclasses

import pytest

from ops.errors import SettingError
from ops.hosts.compose import compose_project
from ops.settings import Settings


def test_the_project_label_is_the_name_compose_makes_of_project_name(settings: Settings) -> None:
    assert compose_project(dataclasses.replace(settings, project_name="GitLab DR.2")) == "gitlabdr2"
    with pytest.raises(SettingError):
        compose_project(dataclasses.replace(settings, project_name="!!"))
