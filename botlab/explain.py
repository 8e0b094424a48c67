"""`botlab validate --explain KEY`: what one team-file key means, its type and its default, read from the schema in
botlab/config.py (where every option is described; nothing here repeats a description)."""

from __future__ import annotations

import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from botlab.config import TeamConfig

_BOUNDS = ((annotated_types.Ge, ">="), (annotated_types.Gt, ">"), (annotated_types.Le, "<="), (annotated_types.Lt, "<"))


class UnknownKey(ValueError):
    """The key names no option of the team file; the message says which part is wrong and what is there."""


@dataclass
class KeyHelp:
    key: str
    description: str
    type: str
    default: str

    def render(self, width: int = 100) -> str:
        lines = [f"{self.description}", f"type: {self.type}", f"default: {self.default}"]
        return "\n".join([self.key] + [textwrap.fill(line, width, initial_indent="  ", subsequent_indent="    ")
                                        for line in lines])


def explain(key: str) -> KeyHelp:
    """The help of a dotted key such as 'selfplay.solver_samples' or 'roles.reviewer.llm'."""
    model: type[BaseModel] = TeamConfig
    parts = key.strip().split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the top level"
        if part not in model.model_fields:
            raise UnknownKey(f"{key!r} is not a team-file key: {where} has no {part!r} (it has "
                             f"{', '.join(model.model_fields)})")
        info = model.model_fields[part]
        if i < len(parts) - 1:
            section = _section(info.annotation)
            if section is None:
                raise UnknownKey(f"{key!r} is not a team-file key: {'.'.join(parts[: i + 1])} is a value, "
                                 "not a section")
            model = section
    return KeyHelp(key.strip(), info.description or "", _type_text(info), _default_text(info))


def _section(annotation: object) -> type[BaseModel] | None:
    """The settings model of a section (also of an optional one: `email: EmailNotifier | None`)."""
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _type_text(info: FieldInfo) -> str:
    section = _section(info.annotation)
    if section is not None:
        optional = " (optional)" if type(None) in typing.get_args(info.annotation) else ""
        return f"a section{optional} with keys {', '.join(section.model_fields)}"
    bounds = [f"{sign} {getattr(m, type(m).__name__.lower())}" for m in info.metadata
              for kind, sign in _BOUNDS if isinstance(m, kind)]
    bounds += [f"at least {m.min_length} long" for m in info.metadata if isinstance(m, annotated_types.MinLen)]
    return ", ".join([_name(info.annotation), *bounds])


def _name(annotation: object) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:  # a checked string, such as an environment-variable name
        return _name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _name(a) for a in args)
    if origin is list:
        return f"list of {_name(args[0])}"
    return {str: "text", int: "integer", float: "number", bool: "true or false", Path: "path"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "none: the key is required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "each key's own default"
    if isinstance(value, Path):
        return str(value)
    return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("...\n").strip()
