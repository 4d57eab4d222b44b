"""gitlab_sync.ssh_errors: OpenSSH's messages sorted into kinds, the first in the table winning."""

from __future__ import annotations

import pytest

from gitlab_sync.ssh_errors import MESSAGES, SshFailure, classify


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        (
            "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n"
            "Host key verification failed.",
            SshFailure.HOST_KEY_CHANGED,
        ),
        (
            "No ED25519 host key is known for [h]:22 and you have requested strict checking.\n"
            "Host key verification failed.",
            SshFailure.HOST_KEY_UNKNOWN,
        ),
        ("root@slave: Permission denied (publickey).", SshFailure.KEY_REFUSED),
        ('Load key "/k": invalid format', SshFailure.KEY_UNUSABLE),
        ("ssh: connect to host h port 22: Connection refused", SshFailure.CONNECTION_REFUSED),
        ("ssh: connect to host h port 22: Connection timed out", SshFailure.TIMED_OUT),
        ("ssh: connect to host h port 22: Network is unreachable", SshFailure.NO_ROUTE),
        ("ssh: Could not resolve hostname h: Name or service not known", SshFailure.UNRESOLVED),
        ("kex_exchange_identification: read: Connection reset by peer", SshFailure.CLOSED),
        ("rsync error: some other trouble (code 12)", None),
    ],
)
def test_each_openssh_message_has_its_kind(stderr: str, kind: SshFailure | None) -> None:
    assert classify(stderr) is kind


def test_every_kind_has_messages_in_the_table() -> None:
    assert [kind for kind, _ in MESSAGES] == list(SshFailure)


def test_a_caller_can_ignore_kinds_it_has_no_sentence_for() -> None:
    both = 'Load key "/k": invalid format\nssh: connect to host h port 22: Connection refused'
    assert classify(both) is SshFailure.KEY_UNUSABLE
    assert classify(both, among={SshFailure.CONNECTION_REFUSED}) is SshFailure.CONNECTION_REFUSED
