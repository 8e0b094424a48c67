"""Secrets come from environment variables named in team.yaml, never from the file itself."""

from __future__ import annotations

import os


class NotifierConfigError(Exception):
    """A notifier cannot start as configured; the message names the team.yaml field."""


def env_secret(name: str, field: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise NotifierConfigError(f"{field}: environment variable {name} is not set")
    return value
