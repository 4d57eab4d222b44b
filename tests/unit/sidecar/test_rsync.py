"""The rsync choke point: commands built, server arguments checked, secrets masked, codes mapped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gitlab_sync import rsync

SERVER = [
    "--server",
    "-lHogDtprSe.iLsfxCIvu",
    "--delete",
    "-@-1",
    "--stats",
    "--numeric-ids",
    ".",
    "incoming/",
]

# What rsync 3.2.7 (the image's) sends for a change pass: --files-from and --from0 on the
# client become -d, -R and --no-r on the server.
CHANGE_SERVER = [
    "--server",
    "-ldHogDtpRSe.LsfxCIvu",
    "--no-r",
    "--timeout=120",
    "--bwlimit=100",
    "--delete",
    "--stats",
    "-@-1",
    "--numeric-ids",
    ".",
    "incoming/",
]

STATS = """
Number of files: 1,234 (reg: 1,000, dir: 230, link: 4)
Number of created files: 3 (reg: 3)
Number of regular files transferred: 12
Total file size: 5,678,901 bytes
Total transferred file size: 45,678 bytes
Total bytes sent: 50,123
Total bytes received: 1,234
"""


def test_a_change_pass_names_its_list_and_is_not_recursive() -> None:
    argv = rsync.client_argv("/f", "slave:incoming/", ["ssh"], "recv 1 P base=S", files_from="/l")
    assert argv[-4:-2] == ["--files-from=/l", "--from0"]
    assert "--delete" in argv
    assert "-r" not in argv and "--recursive" not in argv  # -a does not imply it with a list


def test_client_command_keeps_every_attribute_and_never_follows_links() -> None:
    argv = rsync.client_argv(
        "/source", "slave:incoming/", ["ssh", "-p", "2222"], "recv 1 P", bwlimit=500
    )
    assert argv[0] == "rsync"
    assert {"-aHS", "--numeric-ids", "--delete", "--modify-window=-1"} <= set(argv)
    assert "--bwlimit=500" in argv
    assert not {"-L", "--copy-links", "-k", "--copy-unsafe-links"} & set(argv)
    assert argv[-2:] == ["/source/", "slave:incoming/"]
    assert argv[argv.index("-e") + 1] == "ssh -p 2222"
    assert "--rsync-path=recv 1 P" in argv


def test_server_command_is_aimed_at_the_incoming_area_whatever_the_master_named() -> None:
    argv = rsync.server_argv([*SERVER[:-1], "../../etc/"], "/sync/.incoming", "/sync/snapshots/A")
    assert argv[-2:] == [".", "/sync/.incoming/"]
    assert "--link-dest=/sync/snapshots/A" in argv
    assert "../../etc/" not in " ".join(argv)


def test_a_change_pass_is_taken_with_its_list_options() -> None:
    argv = rsync.server_argv(CHANGE_SERVER, "/sync/.incoming", None)
    assert argv == ["rsync", *CHANGE_SERVER[:-1], "/sync/.incoming/"]


def test_the_client_sends_the_options_the_server_allows(tmp_path: Path) -> None:
    """The client's own server command line, read from a stand-in for ssh, is accepted."""
    fake = tmp_path / "ssh"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\nexit 1\n')
    fake.chmod(0o755)
    (tmp_path / "src").mkdir()
    (tmp_path / "list").write_bytes(b"a\0")
    for files_from in ("", str(tmp_path / "list")):
        argv = rsync.client_argv(
            str(tmp_path / "src"), "slave:incoming/", [str(fake)], "recv", 100, (), files_from
        )
        subprocess.run(argv, capture_output=True, check=False)
        words = (tmp_path / "args").read_text().split()
        assert words[:2] == ["slave", "recv"]
        rsync.server_argv(words[2:], "/sync/.incoming", None)  # raises if refused


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--server", "--sender", "-lHogDtpre.iLsfxCIvu", ".", "x/"], "--sender"),
        (["--server", "--sender", "-ldHogDtpRSe.LsfxCIvu", "--no-r", ".", "x/"], "--sender"),
        (
            ["--server", "-ldHogDtpRSe.LsfxCIvu", "--files-from=/etc/shadow", ".", "x/"],
            "not allowed",
        ),
        (["--server", "-ldHogDtpRSe.LsfxCIvu", "--ignore-missing-args", ".", "x/"], "not allowed"),
        (["--server", "-ldHogDtpRSe.LsfxCIvu", "--delete-missing-args", ".", "x/"], "not allowed"),
        (["--server", "-lHogDtprse.iLsfxCIvu", ".", "x/"], "not allowed"),  # -s hides arguments
        (["--server", "-lHogDtpre.iLsfxCIvu", "--link-dest=/etc", ".", "x/"], "not allowed"),
        (["--server", "-lHogDtpre.iLsfxCIvu", "--remove-source-files", ".", "x/"], "not allowed"),
        (["--server", "-lHogDtpre.iLsfxCIvu", "--log-file=/etc/x", ".", "x/"], "not allowed"),
        (["--daemon", ".", "x/"], "not an rsync server command"),
        (["--server", "-lHogDtpre.iLsfxCIvu", "x/", "y/"], "one destination"),
    ],
)
def test_server_refuses_what_a_receiver_never_does(args: list[str], why: str) -> None:
    with pytest.raises(rsync.ServerArgsRefused, match=why):
        rsync.server_argv(args, "/sync/.incoming", None)


def test_exit_24_vanished_files_is_not_a_failure() -> None:
    assert rsync.result_for(24, STATS, "file has vanished: x").ok
    assert rsync.result_for(0, STATS, "").ok


@pytest.mark.parametrize("code", [1, 11, 12, 23, 30, 255, -9])
def test_other_exit_codes_fail_with_their_meaning(code: int) -> None:
    result = rsync.result_for(code, "", "rsync: write failed: No space left on device (28)\n")
    assert not result.ok
    assert f"rsync exited {code}" in result.message
    assert "No space left on device" in result.message


def test_the_receivers_own_words_beat_rsyncs_last_line() -> None:
    stderr = (
        "gitlab-sync receiver: the slave's sync area is full (no space or no inodes left)\n"
        "rsync error: syntax or usage error (code 1) at main.c(1347) [sender=3.2.7]\n"
    )
    message = rsync.result_for(1, "", stderr).message
    assert message.startswith("rsync exited 1 (syntax or usage error): gitlab-sync receiver:")
    assert "sync area is full" in message


def test_disk_full_code_says_so() -> None:
    assert "disk full" in rsync.result_for(11, "", "").meaning


def test_stats_are_read_from_rsync_output() -> None:
    stats = rsync.parse_stats(STATS)
    assert stats == rsync.Stats(
        files=1234,
        files_transferred=12,
        total_bytes=5678901,
        transferred_bytes=45678,
        bytes_sent=50123,
    )


def test_secrets_are_masked_in_logged_commands() -> None:
    line = rsync.mask(
        ["rsync", "--password-file=/x", "sekrit-token", "user:password=hunter2"], ["sekrit-token"]
    )
    assert "sekrit-token" not in line and "hunter2" not in line
    assert line.count("***") == 2
