"""Shared fixtures. Area-specific fixtures live in tests/fixtures/*.py and are registered here."""

pytest_plugins = [
    "tests.fixtures.model",
    "tests.fixtures.mail",
    "tests.fixtures.nostr",
    "tests.fixtures.sandbox",
    "tests.fixtures.engines",
    "tests.fixtures.agents",
]
