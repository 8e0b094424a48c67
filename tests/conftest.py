"""Shared fixtures. Area-specific fixtures live in tests/fixtures/*.py and are registered here."""

import os

# As in the CLI: idle OpenMP threads sleep instead of spinning (much faster on a loaded 2-core machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

pytest_plugins = [
    "tests.fixtures.model",
    "tests.fixtures.mail",
    "tests.fixtures.nostr",
    "tests.fixtures.sandbox",
    "tests.fixtures.engines",
    "tests.fixtures.agents",
    "tests.fixtures.vllm_server",
]
