"""Read a team.yaml and report every problem with its field path and line, never a traceback."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from botlab.config import TeamConfig


@dataclass(frozen=True)
class Problem:
    line: int | None
    path: str
    message: str

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class TeamFileError(Exception):
    """A team file that cannot be used; `problems` lists every reason."""

    def __init__(self, file: Path, problems: list[Problem]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(p.render(str(file)) for p in problems))


def load_team(path: str | Path) -> TeamConfig:
    """Parse and validate a team file, or raise TeamFileError naming every problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TeamFileError(file, [Problem(None, "", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise TeamFileError(file, [Problem(None, "", f"cannot read it: {err}")]) from None

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(err, "problem", None) or str(err)
        raise TeamFileError(file, [Problem(line, "", f"not valid YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise TeamFileError(file, [Problem(1, "", "the file must be a mapping of keys (name:, model:, ...)")])

    lines = _line_index(root)
    try:
        team = TeamConfig.model_validate(data)
    except ValidationError as err:
        found = sorted((_problem(e, lines) for e in err.errors()), key=lambda p: (p.line or 0, p.path))
        raise TeamFileError(file, found) from None
    team._source = file.resolve()
    missing = _missing_files(team, lines)
    if missing:
        raise TeamFileError(file, missing)
    return team


def _missing_files(team: TeamConfig, lines: dict[tuple, int]) -> list[Problem]:
    """Files the team file names that are not there (relative paths are relative to the file)."""
    email = team.notifiers.email
    named = {("notifiers", "email", "ca_file"): email.ca_file if email else None,
             ("selfplay", "seed_file"): team.selfplay.seed_file}
    return [Problem(lines.get(loc), ".".join(loc), f"{team.resolve_path(path)} is not a file")
            for loc, path in named.items() if path is not None and not team.resolve_path(path).is_file()]


def secret_problems(team: TeamConfig) -> list[Problem]:
    """Secrets that are set here but cannot work (an nsec that is not one); unset ones are only noted."""
    nostr = team.notifiers.nostr
    secret = os.environ.get(nostr.nsec_env) if nostr is not None else None
    if not secret:
        return []
    from nostr_sdk import Keys

    try:
        Keys.parse(secret)
    except Exception:
        return [Problem(None, "notifiers.nostr.nsec_env",
                        f"environment variable {nostr.nsec_env} does not hold a valid nsec (or hex) secret key")]
    return []


def role_model_problems(team: TeamConfig, need_keys: bool = False) -> list[Problem]:
    """Litellm models of the untrained roles that cannot be used here: litellm missing, a model it cannot route,
    and with `need_keys` (about to run) an api_key_env that is not set. Trained roles on another model are schema
    errors already."""
    from botlab.agents.role_models import is_litellm, litellm_problem

    roles = team.roles
    used = [("reviewer", roles.reviewer)] if roles.reviewer.enabled and roles.reviewer.llm else []
    used.append(("reporter", roles.reporter))
    problems = []
    for role, cfg in used:
        if not is_litellm(cfg.model):
            continue
        problem = litellm_problem(cfg.model)
        if problem:
            problems.append(Problem(_line_of(team, ("roles", role, "model")), f"roles.{role}.model", problem))
        if need_keys and cfg.api_key_env and not os.environ.get(cfg.api_key_env):
            problems.append(Problem(_line_of(team, ("roles", role, "api_key_env")), f"roles.{role}.api_key_env",
                                    f"environment variable {cfg.api_key_env} is not set"))
    return problems


def _line_of(team: TeamConfig, loc: tuple) -> int | None:
    """The line of a key in the team's file (None for a team not read from a file)."""
    if team._source is None:
        return None
    return _line_index(yaml.compose(team._source.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)).get(loc)


def unset_secrets(team: TeamConfig) -> list[str]:
    """Names of the environment variables the team refers to that are not set here."""
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, BaseModel):
            for field, value in node:
                if field.endswith("_env") and isinstance(value, str):
                    names.append(value)
                else:
                    walk(value)

    walk(team.notifiers)
    walk(team.roles)
    return [n for n in names if not os.environ.get(n)]


# --- helpers ---------------------------------------------------------------------------------------------------------


def _line_index(node: yaml.Node | None, path: tuple = ()) -> dict[tuple, int]:
    """Map each key path (strings and list indexes) to the 1-based line where it stands in the file."""
    index: dict[tuple, int] = {}
    if node is None:
        return index
    index.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            index[sub] = key.start_mark.line + 1
            index.update({k: v for k, v in _line_index(value, sub).items() if k != sub})
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index.update(_line_index(item, path + (i,)))
    return index


def _problem(error: dict, lines: dict[tuple, int]) -> Problem:
    # Pydantic puts the type name of union/tagged branches into loc; keep only what the user wrote.
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p[:1].isupper() or p in ("function-after",)))
    path = ".".join(str(p) for p in loc)
    line = _nearest_line(loc, lines)
    kind = error["type"]
    if kind == "extra_forbidden":
        return Problem(line, path, "unknown key" + _did_you_mean(loc, error))
    if kind == "missing":
        return Problem(line, path, "required field is missing")
    message = error["msg"].removeprefix("Value error, ")
    # A check across fields (a model validator) names the field it is about first: "smtp_security: ...".
    field, sep, rest = message.partition(": ")
    section = _model_at(loc) if kind == "value_error" and sep else None
    if section is not None and field in section.model_fields:
        loc, message = loc + (field,), rest
        path, line = ".".join(str(p) for p in loc), _nearest_line(loc, lines)
    if kind not in ("value_error", "assertion_error") and "input" in error and not isinstance(error["input"], dict):
        message += f" (got {error['input']!r})"
    return Problem(line, path, message)


def _nearest_line(loc: tuple, lines: dict[tuple, int]) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


def _did_you_mean(loc: tuple, error: dict) -> str:
    """Suggest the closest allowed key of the section the unknown key sits in."""
    section = _model_at(loc[:-1])
    if section is None:
        return ""
    allowed = list(section.model_fields)
    wrong = str(loc[-1])
    # A secret written inline (password:) should point to its *_env field.
    if f"{wrong}_env" in allowed:
        return f" (did you mean '{wrong}_env'? secrets are given by environment-variable name)"
    close = difflib.get_close_matches(wrong, allowed, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that describes the mapping at `loc`."""
    model: type[BaseModel] = TeamConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _model_of(field.annotation)
        if model is None:
            return None
    return model


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
