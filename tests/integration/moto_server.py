"""A moto server standing in for AWS: real boto3 calls over HTTP to 127.0.0.1, never to AWS.

``moto_server`` (session scope) starts moto's ``ThreadedMotoServer`` on a free local port.
``moto`` (per test) empties it with moto's reset API (``POST /moto-api/reset``) and points the
environment at it: ``AWS_ENDPOINT_URL``, fake credentials, no profile, no instance metadata,
no shared config files, so nothing can reach a real endpoint with real credentials.
It is a pytest plugin (``pytest_plugins`` in tests/conftest.py): a test asks for ``moto`` by name.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from ops.aws.client import boto_session

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
)


@dataclass(frozen=True)
class MotoServer:
    """A running moto server."""

    url: str

    def reset(self) -> None:
        """Forget every resource (moto's reset API)."""
        url = f"{self.url}/moto-api/reset"  # always http://127.0.0.1:<port>
        request = urllib.request.Request(url, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert response.status == 200

    def ec2(self, region: str = "eu-west-1") -> EC2Client:
        """A plain boto3 EC2 client on the server, for tests to look and to tamper."""
        return boto_session(region).client(
            "ec2",
            endpoint_url=self.url,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
        )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's threaded server on 127.0.0.1 and a free port, for the whole session."""
    from moto.server import ThreadedMotoServer  # here, so that unit runs never import moto

    with pytest.MonkeyPatch.context() as patch:
        # Tests register their own AMI, as inv build-ami leaves one; moto's ~1300 stock AMIs
        # would only slow every region's first call.
        patch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        assert urlsplit(url).hostname == "127.0.0.1"
        try:
            yield MotoServer(url)
        finally:
            server.stop()


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The moto server, emptied, with the environment pointed at it and fake credentials."""
    moto_server.reset()
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/gitlab-dr-test-credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/gitlab-dr-test-config")
    return moto_server
