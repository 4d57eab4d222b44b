"""Suite-wide settings: testcontainers without Ryuk (no registry to pull it from)."""

import os

# Must be set before testcontainers is imported: it reads its configuration at import time.
os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
