"""The stand-in's reading of postgresql['...'] settings from GITLAB_OMNIBUS_CONFIG and gitlab.rb.

The parser is a Perl script in the image (Debian's PostgreSQL packages bring Perl); it runs
here with the host's perl, no Docker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = (
    Path(__file__).resolve().parents[3]
    / "images/gitlab-standin/rootfs/opt/gitlab/standin/omnibus-config"
)


def settings(env_config: str, gitlab_rb: str | None, tmp_path: Path) -> tuple[list[str], str]:
    """The "key<TAB>value" lines the script prints, and what it warns about."""
    if shutil.which("perl") is None:
        pytest.fail("perl is needed to run the stand-in's configuration parser")
    rb = tmp_path / "gitlab.rb"
    if gitlab_rb is not None:
        rb.write_text(gitlab_rb)
    done = subprocess.run(
        ["perl", str(SCRIPT), str(rb)],
        env={**os.environ, "GITLAB_OMNIBUS_CONFIG": env_config},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines(), done.stderr


def test_archive_settings_in_gitlab_omnibus_config_become_postgresql_settings(
    tmp_path: Path,
) -> None:
    config = (
        "external_url 'http://gitlab.example.com'\n"
        "postgresql['archive_mode'] = \"on\"; "
        "postgresql['archive_command'] = 'test ! -f /a/%f && cp %p /a/%f' # copy\n"
        "postgresql['archive_timeout'] = 60\n"
        "postgresql['wal_log_hints'] = true\n"
    )
    lines, warnings = settings(config, None, tmp_path)
    assert lines == [
        "archive_mode\t'on'",
        "archive_command\t'test ! -f /a/%f && cp %p /a/%f'",
        "archive_timeout\t60",
        "wal_log_hints\ton",
    ]
    assert warnings == ""


def test_gitlab_rb_wins_over_the_variable_as_in_omnibus_docker(tmp_path: Path) -> None:
    lines, _ = settings(
        "postgresql['archive_mode'] = 'on'\npostgresql['max_wal_senders'] = 5\n",
        "# postgresql['max_wal_senders'] = 9\n"
        "postgresql['archive_mode'] = 'off'\n"
        "postgresql['max_wal_senders'] = nil\n",
        tmp_path,
    )
    assert lines == ["archive_mode\t'off'"]


def test_quotes_are_escaped_for_postgresql_and_unknown_keys_are_reported(tmp_path: Path) -> None:
    lines, warnings = settings(
        'postgresql[\'archive_command\'] = "echo \\"it\'s\\" %p"\n'
        "postgresql['enable'] = true\n"
        "postgresql['archive_command_x'] = 'x'\n",
        None,
        tmp_path,
    )
    assert lines == ["archive_command\t'echo \"it''s\" %p'"]
    assert "postgresql['enable'] is not used by the stand-in" in warnings
    assert "postgresql['archive_command_x'] is not used" in warnings
