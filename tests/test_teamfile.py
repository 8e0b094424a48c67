"""team.yaml validation: every error class gives its exact message with field path and line."""

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botlab.cli import app
from botlab.teamfile import TeamFileError, load_team

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "team.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(TeamFileError) as caught:
        load_team(path)
    return [p.render("team.yaml") for p in caught.value.problems]


@pytest.mark.parametrize("name", ["demo-cpu.yaml", "azr-coder-7b.yaml"])
def test_shipped_team_files_are_valid(name):
    team = load_team(REPO / "teams" / name)
    assert team.name == name.removesuffix(".yaml")
    assert team.run_dir == (REPO / "runs" / team.name).resolve()


def test_demo_uses_builtin_model_and_auto_engine():
    team = load_team(REPO / "teams" / "demo-cpu.yaml")
    assert team.model.name == "builtin:smollm2-135m"
    assert team.model.engine == "auto"


def test_missing_field(tmp_path):
    path = write(tmp_path, """
        name: t
        notifiers:
          email:
            from_addr: bot@x.test
            to: [me@x.test]
    """)
    assert problems(path) == ["team.yaml:3: notifiers.email.smtp_host: required field is missing"]


def test_wrong_type(tmp_path):
    path = write(tmp_path, """
        name: t
        train:
          lr: fast
    """)
    assert problems(path) == [
        "team.yaml:3: train.lr: Input should be a valid number, unable to parse string as a number (got 'fast')"
    ]


def test_unknown_key_suggests_the_close_one(tmp_path):
    path = write(tmp_path, """
        name: t
        selfplay:
          refrences: 4
    """)
    assert problems(path) == ["team.yaml:3: selfplay.refrences: unknown key (did you mean 'references'?)"]


def test_unknown_key_without_close_match_lists_allowed(tmp_path):
    path = write(tmp_path, "name: t\nzzz: 1\n")
    [message] = problems(path)
    assert message.startswith("team.yaml:2: zzz: unknown key (allowed: name, goal, storage_dir, model,")


def test_bad_enum(tmp_path):
    path = write(tmp_path, """
        name: t
        model:
          engine: vlm
    """)
    assert problems(path) == [
        "team.yaml:3: model.engine: Input should be 'auto', 'vllm' or 'transformers' (got 'vlm')"
    ]


def test_inline_secret_is_refused(tmp_path):
    path = write(tmp_path, """
        name: t
        notifiers:
          nostr:
            nsec_env: nsec1qqqqqqqqqqqqqqqqqqqqqqqqqq
            relays: [ws://127.0.0.1:7777]
            recipients: [npub1abc]
    """)
    assert problems(path) == [
        "team.yaml:4: notifiers.nostr.nsec_env: must be the NAME of an environment variable (like "
        "BOTLAB_SMTP_PASSWORD), not 'nsec…'; secrets are never written in team.yaml"
    ]


def test_password_key_points_to_env_field(tmp_path):
    path = write(tmp_path, """
        name: t
        notifiers:
          email:
            from_addr: bot@x.test
            to: [me@x.test]
            smtp_host: localhost
            password: hunter2
    """)
    assert problems(path) == [
        "team.yaml:7: notifiers.email.password: unknown key "
        "(did you mean 'password_env'? secrets are given by environment-variable name)"
    ]


def test_every_error_is_reported_at_once(tmp_path):
    path = write(tmp_path, """
        name: t
        train: {lr: -1, stepz: 3}
        schedules:
          digest_every: often
    """)
    assert problems(path) == [
        "team.yaml:2: train.lr: Input should be greater than 0 (got -1)",
        "team.yaml:2: train.stepz: unknown key (did you mean 'steps'?)",
        "team.yaml:4: schedules.digest_every: 'often' is not a duration: use a number of seconds or e.g. "
        "'90s', '30m', '6h', '1d'",
    ]


def test_yaml_syntax_error_has_a_line(tmp_path):
    path = write(tmp_path, "name: t\nmodel: [unclosed\n")
    [message] = problems(path)
    assert message.startswith("team.yaml:3: not valid YAML:")


def test_missing_file(tmp_path):
    assert problems(tmp_path / "nope.yaml") == ["team.yaml: no such file"]


def test_cli_validate_exit_codes(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(REPO / "teams" / "demo-cpu.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.output
    bad = write(tmp_path, "name: t\nmodel: {engine: vlm}\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "model.engine: Input should be 'auto', 'vllm' or 'transformers'" in result.output
    assert "Traceback" not in result.output
