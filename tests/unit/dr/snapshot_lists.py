"""Recorded ``gitlab-sync snapshots --json`` output (the sidecar's shape), newest first, and
small factories over it for the point-in-time tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from gitlab_sync.config import iso
from ops.dr.snapshots import Listing
from tests.unit.pairs import NOW

RECORDED: dict[str, Any] = {
    "current": "20261125T115930.000000Z",
    "newest_verified": "20261125T113000.000000Z",
    "method": "snapshots",
    "snapshots": [
        {
            "name": "20261125T115930.000000Z",
            "instant": "2026-11-25T11:59:30.000000Z",
            "age_seconds": 30.0,
            "bytes": 52428800,
            "method": "snapshots",
            "current": True,
            "verified": None,
        },
        {
            "name": "20261125T114500.000000Z",
            "instant": "2026-11-25T11:45:00.000000Z",
            "age_seconds": 900.0,
            "bytes": 52000000,
            "method": "snapshots",
            "current": False,
            "verified": None,
        },
        {
            "name": "20261125T113000.000000Z",
            "instant": "2026-11-25T11:30:00.000000Z",
            "age_seconds": 1800.0,
            "bytes": None,
            "method": "snapshots",
            "current": False,
            "verified": {
                "at": "2026-11-25T11:31:10.000000Z",
                "ok": True,
                "checks": [{"name": "clone", "ok": True}],
                "summary": "3 checks passed",
            },
        },
        {
            "name": "20261124T120000.000000Z",
            "instant": "2026-11-24T12:00:00.000000Z",
            "age_seconds": 86400.0,
            "bytes": 900,
            "method": "fallback",
            "current": False,
            "verified": {
                "at": "2026-11-24T12:05:00.000000Z",
                "ok": False,
                "checks": [],
                "summary": "clone failed",
            },
        },
    ],
}

NEWEST, FIFTEEN, HALF_HOUR, DAY = (s["name"] for s in RECORDED["snapshots"])


def listing(data: dict[str, Any] | None = None) -> Listing:
    return Listing.from_json(data or RECORDED)


def ago(seconds: float) -> str:
    return iso(NOW - dt.timedelta(seconds=seconds))
