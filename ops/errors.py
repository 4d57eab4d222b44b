"""One exception root for the module layer; the CLI edge translates it into a message."""

from __future__ import annotations


class OpsError(Exception):
    """Base of every error raised by ``ops``: its ``str`` is a one-line message for a user."""


class SettingError(OpsError):
    """A setting is missing or malformed: the message names it and what it expected."""


class AwsError(OpsError):
    """An AWS call failed: the message names the call, the resource and the cause."""


class HostError(OpsError):
    """A host's Docker engine or SSH could not be reached or did not do what was asked."""


class SidecarError(OpsError):
    """The gitlab-sync sidecar refused or failed a command."""


class Refusal(OpsError):
    """An operation was refused on purpose: the message says why and what flag overrides it."""


class SandboxError(OpsError):
    """The local sandbox could not be brought up or taken down."""
