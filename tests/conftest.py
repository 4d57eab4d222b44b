"""Suite-wide settings: testcontainers without Ryuk (no registry to pull it from)."""

import os

# Must be set before testcontainers is imported: it reads its configuration at import time.
os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"

# Fixtures for real sshd hosts in front of the local engine (tests/integration/sshd_host.py).
pytest_plugins = ["tests.integration.sshd_host", "tests.integration.moto_server"]
