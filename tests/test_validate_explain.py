"""`botlab validate --explain KEY` reads the schema in botlab/config.py, and every option there is described."""

from __future__ import annotations

import typing

from pydantic import BaseModel
from typer.testing import CliRunner

from botlab.cli import app
from botlab.config import ReviewerConfig, SelfPlayConfig, TeamConfig
from botlab.explain import explain


def explain_cli(key: str):
    return CliRunner().invoke(app, ["validate", "--explain", key])


def all_keys(model: type[BaseModel] = TeamConfig, prefix: str = "") -> dict[str, object]:
    """Every key a team file can have, dotted, with its pydantic field."""
    keys = {}
    for name, info in model.model_fields.items():
        keys[prefix + name] = info
        for t in (info.annotation, *typing.get_args(info.annotation)):
            if isinstance(t, type) and issubclass(t, BaseModel):
                keys |= all_keys(t, f"{prefix}{name}.")
    return keys


def test_every_option_is_described_where_it_is_declared():
    missing = [key for key, info in all_keys().items() if not (info.description or "").strip()]
    assert not missing, f"config fields without Field(description=...): {', '.join(missing)}"


def test_explain_prints_the_schemas_description_type_and_default():
    result = explain_cli("selfplay.solver_samples")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the description is wrapped to the terminal
    assert text.startswith("selfplay.solver_samples ")
    assert " ".join(SelfPlayConfig.model_fields["solver_samples"].description.split()) in text
    assert "type: integer, >= 1" in text and "default: 1" in text

    result = explain_cli("roles.reviewer.llm")
    assert result.exit_code == 0, result.output
    assert ReviewerConfig.model_fields["llm"].description in result.output
    assert "type: true or false" in result.output and "default: false" in result.output


def test_explain_shows_choices_sections_and_required_keys():
    engine = explain_cli("model.engine").output
    assert "type: one of auto, vllm, transformers, server" in engine and "default: auto" in engine
    section = " ".join(explain_cli("notifiers.email").output.split())
    assert "a section (optional) with keys enabled, from_addr, to," in section and "default: null" in section
    assert "default: none: the key is required" in explain_cli("notifiers.email.to").output


def test_every_key_can_be_explained():
    for key in all_keys():
        help = explain(key)
        assert help.description and help.type and help.default, key


def test_an_unknown_key_is_one_line_naming_it_and_exit_2():
    for key, part in (("selfplay.solver_sample", "selfplay has no 'solver_sample'"),
                      ("model.engine.name", "model.engine is a value, not a section"),
                      ("nonsense", "the top level has no 'nonsense'")):
        result = explain_cli(key)
        assert result.exit_code == 2
        [line] = [line for line in result.output.splitlines() if line.strip()]
        assert line.startswith(f"error: {key!r} is not a team-file key: {part}"), line


def test_validate_without_a_team_file_or_a_key_is_a_usage_error():
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 2 and "give a team file to check, or --explain KEY" in result.output
