"""Prompt templates: YAML files beside the role's code, rendered with Jinja2 (undefined names are errors)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2
import yaml

_HERE = Path(__file__).parent
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False)


@cache
def load_prompts(name: str) -> dict:
    """The templates of agents/NAME.yaml as a dict (cached: they are read once per process)."""
    with open(_HERE / f"{name}.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@cache
def _template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def render(source: str, **values) -> str:
    return _template(source).render(**values).strip()


def chat(system: str, user: str) -> list[dict]:
    """Chat messages; a short system prompt of our own replaces the long default some templates inject."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]
