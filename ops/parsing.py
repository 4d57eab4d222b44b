"""How the text of a setting is read: each parser returns the value, or raises ``ValueError``
with the words for what it expected (``ops.settings`` turns that into a one-line error that
names the setting)."""

from __future__ import annotations

import ipaddress
import os
import re


def nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("a non-empty value")
    return text.strip()


def anything(text: str) -> str:
    return text.strip()


def abs_path(text: str) -> str:
    if not text.startswith("/") or "\n" in text:
        raise ValueError("an absolute path")
    return text.rstrip("/") or "/"


def local_path(text: str) -> str:
    return os.path.expanduser(text.strip()) if text.strip() else ""


def port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("a port number from 1 to 65535")
    return int(text)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError("a whole number of at least 1")
    return int(text)


def non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise ValueError("a whole number of at least 0")
    return int(text)


def yes_no(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("true or false")


_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$")


def image(text: str) -> str:
    value = text.strip()
    if not _IMAGE.match(value) or (":" not in value.rsplit("/", 1)[-1] and "@" not in value):
        raise ValueError(
            "an image reference pinned to a tag or digest, like gitlab/gitlab-ce:17.8.1-ce.0"
        )
    if value.endswith(":latest"):
        raise ValueError("a pinned tag, not :latest (master and slave must run the same GitLab)")
    return value


def cidrs(text: str) -> tuple[str, ...]:
    """CIDR blocks separated by commas; empty is "not set" (``inv launch`` requires them)."""
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    try:
        return tuple(str(ipaddress.ip_network(item, strict=False)) for item in items)
    except ValueError:
        raise ValueError("CIDR blocks separated by commas, like 203.0.113.0/24") from None


def admin_cidr(text: str) -> str:
    """One CIDR block, never the whole internet; empty is "not set"."""
    blocks = cidrs(text)
    if not blocks:
        return ""
    if len(blocks) != 1:
        raise ValueError("one CIDR block, the operator's own network")
    cidr = blocks[0]
    if cidr in {"0.0.0.0/0", "::/0"}:
        raise ValueError("the operator's own network, not the whole internet")
    return cidr


_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")


def region(text: str) -> str:
    if not _REGION.match(text.strip()):
        raise ValueError("an AWS region like eu-west-1")
    return text.strip()


def zones(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if items and (len(items) != 2 or items[0] == items[1]):
        raise ValueError("two different availability zones separated by a comma, or nothing")
    return items


_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")


def ami(text: str) -> str:
    value = text.strip()
    if value and not _AMI.match(value):
        raise ValueError("an AMI id like ami-0123456789abcdef0 (printed by inv build-ami)")
    return value


def overrides(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for word in text.split():
        name, sep, value = word.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name) or name.endswith("_OVERRIDES"):
            raise ValueError("KEY=VALUE words separated by spaces, like 'SYNC_PORT=2223'")
        pairs.append((name, value))
    return tuple(pairs)


_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


def instance_id(text: str) -> str:
    if not _INSTANCE_ID.match(text):
        raise ValueError(f"an instance id like i-0123456789abcdef0, not {text!r}")
    return text


def instance_hosts(text: str) -> tuple[tuple[str, str], ...]:
    pairs: dict[str, str] = {}
    for word in text.split():
        instance, sep, address = word.partition("=")
        if not sep or not address:
            raise ValueError("INSTANCE_ID=host[:port] words, like 'i-0abc12345=127.0.0.1:32001'")
        if instance_id(instance) in pairs:
            raise ValueError(f"one address per instance ({instance} is named twice)")
        pairs[instance] = address
    return tuple(pairs.items())


def instance_overrides(text: str) -> tuple[tuple[str, str, str], ...]:
    items = []
    for word in text.split():
        instance, sep, rest = word.partition(":")
        name, eq, value = rest.partition("=")
        if not sep or not eq or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            raise ValueError(
                "INSTANCE_ID:KEY=VALUE words separated by spaces, like 'i-0abc12345:SYNC_PORT=2223'"
            )
        if name.endswith("_OVERRIDES") or name.startswith("INSTANCE_") or name == "USE_AWS":
            raise ValueError(f"settings of one host, not {name}")
        items.append((instance_id(instance), name, value))
    return tuple(items)


def url(text: str) -> str:
    value = text.strip()
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("an http:// or https:// URL")
    return value.rstrip("/")


_VPC = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")


def vpc_id(text: str) -> str:
    value = text.strip()
    if value and not _VPC.match(value):
        raise ValueError("a VPC id like vpc-0123456789abcdef0")
    return value


def subnet_ids(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if items and (len(items) != 2 or items[0] == items[1] or not all(map(_SUBNET.match, items))):
        raise ValueError(
            "two different subnet ids separated by a comma, the master's first, like "
            "'subnet-0123456789abcdef0,subnet-0fedcba9876543210', or nothing"
        )
    return items


_KEY_ID = r"(?:mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_ALIAS = r"alias/[A-Za-z0-9/_-]{1,250}"
_KMS_KEY = re.compile(
    rf"^(?:{_KEY_ID}|{_ALIAS}|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{{12}}:(?:key/{_KEY_ID}|{_ALIAS}))$"
)


def kms_key(text: str) -> str:
    value = text.strip()
    if value and not _KMS_KEY.match(value):
        raise ValueError("a KMS key id, key ARN, alias/NAME or alias ARN")
    return value


_ZONE_ID = re.compile(r"^(?:/hostedzone/)?([A-Z0-9]{6,32})$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}$")


def dns_name(text: str) -> str:
    """A DNS name, lower case, without its final dot; empty is "not set"."""
    value = text.strip().rstrip(".").lower()
    if value and not _DOMAIN.match(value):
        raise ValueError("a DNS name like gitlab.example.com")
    return value


def hosted_zone(text: str) -> str:
    """A Route 53 hosted zone: its id (``Z0123456789ABC``, as is) or its name (lower case)."""
    value = text.strip()
    match = _ZONE_ID.match(value)
    if match:
        return match.group(1)
    try:
        return dns_name(value)
    except ValueError:
        raise ValueError("a hosted zone id like Z0123456789ABCDEFGHIJ or a zone name") from None


def ssh_jump(text: str) -> str:
    """``user@host[:port]`` of an SSH jump host; empty is "not set"."""
    value = text.strip()
    if not value:
        return ""
    user, at, rest = value.rpartition("@")
    host, colon, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not at or not user or not host or (colon and not port_text.isdigit()):
        raise ValueError("user@host or user@host:port, like admin@bastion.example.com:22")
    if colon:
        port(port_text)
    return value


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address; empty is "not set"."""
    value = text.strip()
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("an IP address like 10.0.1.23") from None
    return value


def optional_abs_path(text: str) -> str:
    """An absolute path, or empty for "not set"."""
    return abs_path(text) if text.strip() else ""
