"""Any role on any model: the untrained roles (reviewer, reporter) on the policy or a litellm model, the trained
roles (proposer, solver) only on the policy, and `botlab team show`.

The litellm paths run against a real vLLM OpenAI-compatible server on the embedded model (the session's server,
tests/fixtures/vllm_server.py), or against a closed loopback port for the failure path.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botlab.agents.reporter import make_reporter_model
from botlab.agents.reviewer import Reviewer
from botlab.agents.role_models import RoleModelError, role_model
from botlab.cli import app
from botlab.config import ReporterConfig, ReviewerConfig, TeamConfig
from botlab.store import Store
from botlab.tasks import Triplet
from botlab.teamfile import TeamFileError, load_team
from tests.fixtures.vllm_server import SERVED_NAME, finished_requests, free_port

BUFFER = ["def f(xs):\n    return [x * 2 for x in xs]", "def f(s):\n    return s.count('a')"]
CANDIDATE = Triplet("def f(n):\n    return (n * 7) % 5", ["12"], ["4"], task_type="deduction")
KEY_ENV = "BOTLAB_TEST_LLM_KEY"
REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, roles: str) -> Path:
    path = tmp_path / "team.yaml"
    path.write_text("name: t\nroles:\n" + textwrap.indent(textwrap.dedent(roles).strip(), "  ") + "\n")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(TeamFileError) as caught:
        load_team(path)
    return [p.render("team.yaml") for p in caught.value.problems]


def validate(path: Path):
    result = CliRunner().invoke(app, ["validate", str(path)])
    return result.exit_code, " ".join(result.output.split())


# --- the team file -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["proposer", "solver"])
def test_a_trained_role_on_another_model_is_refused_naming_the_field(tmp_path, role):
    path = write(tmp_path, f"{role}: {{model: openai/gpt-4o-mini, temperature: 0.7}}")
    assert problems(path) == [
        f"team.yaml:3: roles.{role}.model: a trained role runs on the policy being trained, so its model can "
        "only be 'policy' (got 'openai/gpt-4o-mini'); another model can serve the reviewer or the reporter"
    ]
    code, output = validate(path)
    assert code == 2 and f"roles.{role}.model: a trained role runs on the policy" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("roles, expected", [
    ("reviewer: {llm: true, api_base: 'http://127.0.0.1:8000/v1'}",
     "team.yaml:3: roles.reviewer.api_base: applies to a litellm model string, not to model 'policy'"),
    ("reporter: {model: template, api_key_env: OPENAI_API_KEY}",
     "team.yaml:3: roles.reporter.api_key_env: applies to a litellm model string, not to model 'template'"),
    ("reviewer: {model: openai/gpt-4o-mini}",
     "team.yaml:3: roles.reviewer.model: 'openai/gpt-4o-mini' serves only the LLM pass, which is off: set llm: true"),
    ("reporter: {model: openai/x, api_base: '127.0.0.1:8000'}",
     "team.yaml:3: roles.reporter.api_base: '127.0.0.1:8000' is not an API base URL like http://127.0.0.1:8000/v1"),
    ("reporter: {model: openai/x, api_key_env: sk-abc123456}",
     "team.yaml:3: roles.reporter.api_key_env: must be the NAME of an environment variable (like "
     "BOTLAB_SMTP_PASSWORD), not 'sk-a…'; secrets are never written in team.yaml"),
])
def test_api_options_that_would_do_nothing_are_errors(tmp_path, roles, expected):
    assert problems(write(tmp_path, roles)) == [expected]


def test_validate_refuses_a_model_litellm_cannot_route(tmp_path):
    path = write(tmp_path, """
        reviewer: {llm: true, model: "hosted_vllm/smollm2", api_base: "http://127.0.0.1:8000/v1"}
        reporter:
          model: nosuchprovider/model
    """)
    load_team(path)  # the schema is fine: only litellm knows its providers
    code, output = validate(path)
    assert code == 2, output
    assert "team.yaml:5: roles.reporter.model: litellm cannot route 'nosuchprovider/model'" in output
    assert "roles.reviewer" not in output
    ok = write(tmp_path, "reviewer: {llm: true, model: hosted_vllm/smollm2, api_base: 'http://127.0.0.1:8000/v1'}")
    assert validate(ok)[0] == 0


def test_run_refuses_an_unset_api_key_before_loading_anything(tmp_path, monkeypatch):
    path = write(tmp_path, f"""
        reviewer: {{llm: true, model: openai/gpt-4o-mini, api_key_env: {KEY_ENV}}}
    """)
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert validate(path)[0] == 0  # validate may run elsewhere: an unset key is only noted
    result = CliRunner().invoke(app, ["run", str(path), "--steps", "1"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert f"team.yaml:3: roles.reviewer.api_key_env: environment variable {KEY_ENV} is not set" in output
    assert not (tmp_path / "runs").exists()


def test_role_model_picks_the_policy_or_a_litellm_model(monkeypatch):
    policy = object()
    assert role_model(ReviewerConfig(llm=True), "roles.reviewer", policy) is policy
    cfg = ReviewerConfig(llm=True, model="openai/gpt-4o-mini", api_base="http://127.0.0.1:9/v1/", api_key_env=KEY_ENV)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(RoleModelError, match=f"roles.reviewer.api_key_env: environment variable {KEY_ENV} is not set"):
        role_model(cfg, "roles.reviewer", policy)
    monkeypatch.setenv(KEY_ENV, "key-123")
    model = role_model(cfg, "roles.reviewer", policy)
    assert (model.model_id, model.api_base, model.api_key) == ("openai/gpt-4o-mini", "http://127.0.0.1:9/v1", "key-123")
    with pytest.raises(RoleModelError, match="roles.reporter.model: litellm cannot route 'nope'"):
        role_model(ReporterConfig(model="nope"), "roles.reporter")


def test_the_reporter_falls_back_to_the_template_when_its_model_cannot_be_used(caplog):
    assert make_reporter_model(ReporterConfig(model="template"), policy_model=object()) is None
    policy = object()
    assert make_reporter_model(ReporterConfig(model="policy"), policy_model=policy) is policy
    assert make_reporter_model(ReporterConfig(model="nope")) is None
    assert "roles.reporter.model: litellm cannot route 'nope'" in caplog.text


def test_a_reviewer_model_server_that_is_down_keeps_the_rule_verdict(sandbox):
    """A real connection failure: nothing listens on the port. The policy model is not used instead."""
    cfg = ReviewerConfig(llm=True, model=f"hosted_vllm/{SERVED_NAME}", api_base=f"http://127.0.0.1:{free_port()}/v1")
    reviewer = Reviewer(cfg, sandbox, model=None)
    [verdict] = reviewer.review("deduction", [CANDIDATE], BUFFER)
    assert (verdict.admit, verdict.source) == (True, "rules")
    assert "kept the rule verdict: llm pass failed" in verdict.detail and "Connection refused" in verdict.detail


# --- against a real OpenAI-compatible server (vLLM's CPU build on the embedded model) ---------------------------


@pytest.mark.slow
def test_the_reviewers_llm_pass_runs_on_a_litellm_model(vllm_server_url, sandbox):
    """No policy model is given: the verdict can only come from the server, through litellm and smolagents' tool
    calling. The 135M model rarely answers ADMIT/REJECT, so either its decision or 'answer unusable' (a reply that
    arrived) is right; a failed call is not."""
    cfg = ReviewerConfig(llm=True, model=f"hosted_vllm/{SERVED_NAME}", api_base=vllm_server_url + "/v1")
    reviewer = Reviewer(cfg, sandbox, goal="arithmetic", model=None)
    before = finished_requests(vllm_server_url)
    [verdict] = reviewer.review("deduction", [CANDIDATE], BUFFER)
    print(verdict)
    assert "llm pass failed" not in verdict.detail, verdict.detail
    assert verdict.source == "llm" or "llm answer unusable" in verdict.detail, verdict.detail
    assert finished_requests(vllm_server_url) > before


@pytest.mark.slow
def test_a_digest_narrative_from_a_litellm_model_with_an_api_key(vllm_server_url, tmp_path, monkeypatch):
    """The reporter on 'openai/NAME' with api_base and api_key_env (the OpenAI client refuses to call without a
    key): the digest's narrative agent talks to the server; its text is checked as any model's is."""
    from botlab.reporting.service import Reporter
    from tests.test_digest import record_steps

    monkeypatch.setenv(KEY_ENV, "local-key")
    team = TeamConfig(name="t", storage_dir=tmp_path, roles={"reporter": {
        "model": f"openai/{SERVED_NAME}", "api_base": vllm_server_url + "/v1", "api_key_env": KEY_ENV}})
    with Store(tmp_path / "botlab.sqlite") as store:
        record_steps(store, [1, 2])
        reporter = Reporter(team, store)
        assert reporter.model.model_id == f"openai/{SERVED_NAME}"
        before = finished_requests(vllm_server_url)
        facts, digest = asyncio.run(reporter.preview())
        notes = [row[0] for row in store.query("SELECT message FROM events WHERE kind = 'reporter' ORDER BY id")]
    print(digest.narrative_source, notes)
    assert finished_requests(vllm_server_url) > before
    assert digest.narrative_source == "model" or (notes and "the reporter model failed" not in notes[-1]), notes
    assert "Steps 1" in digest.text or "step 2" in digest.text.lower()


# --- botlab team show --------------------------------------------------------------------------------------------


def test_team_show_prints_each_roles_model_tools_prompts_and_training(tmp_path):
    path = write(tmp_path, """
        reviewer: {llm: true, model: openai/local, api_base: "http://127.0.0.1:8000/v1", api_key_env: LOCAL_KEY}
        reporter: {model: policy}
        proposer: {revise: true}
    """)
    result = CliRunner().invoke(app, ["team", "show", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["role", "model", "tools", "prompts", "trains"]  # plain: not a terminal
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"proposer", "solver", "reviewer", "reporter"}
    for role in ("proposer", "solver"):
        assert rows[role].split()[1:3] == ["policy", "(builtin:smollm2-135m)"] and rows[role].endswith(" yes")
    assert "run_candidate (revises)" in rows["proposer"] and "run_candidate" not in rows["solver"]
    assert "rules, then litellm openai/local at http://127.0.0.1:8000/v1 key $LOCAL_KEY" in rows["reviewer"]
    assert "similar_pool_programs, run_program" in rows["reviewer"] and rows["reviewer"].endswith(" no")
    assert "progress, feedback_and_health, examples" in rows["reporter"] and rows["reporter"].endswith(" no")
    for role, line in rows.items():
        prompts = Path(line.split()[-2])
        assert prompts.is_file() and prompts.suffix == ".yaml", line
        assert "─" not in line and "│" not in line


def test_team_show_of_the_demo_team(tmp_path):
    result = CliRunner().invoke(app, ["team", "show", str(REPO / "teams" / "demo-cpu.yaml")])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: " ".join(line.split()) for line in result.output.splitlines()[1:]}
    assert rows["proposer"].split()[3] == "run_candidate" and "revises" not in rows["proposer"]
    assert rows["reviewer"].startswith("reviewer rules only (llm: false) -")
    assert rows["reporter"].startswith("reporter template (no model) -")
    bad = CliRunner().invoke(app, ["team", "show", str(tmp_path / "none.yaml")])
    assert bad.exit_code == 2 and "none.yaml: no such file" in " ".join(bad.output.split())
