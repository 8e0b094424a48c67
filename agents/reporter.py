"""The reporter role: the digest's narrative paragraph, and plain-word feedback read into directives.

The narrative comes from a smolagents ToolCallingAgent whose tools read the digest facts (taken from the store);
`check_narrative` rejects empty, overlong or ungrounded text, and the caller then uses the template. Feedback
interpretation is one model call that must answer with a JSON list; the curriculum validates every item.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from botlab.agents.prompts import load_prompts, render
from botlab.agents.role_models import RoleModelError, role_model
from botlab.config import ReporterConfig

log = logging.getLogger(__name__)

PROMPTS = "reporter"
AGENT_MAX_STEPS = 3
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def make_reporter_model(config: ReporterConfig, policy_model: Any = None) -> Any:
    """The smolagents Model the reporter uses (the policy or a litellm model), or None for the deterministic
    template, also when the model cannot be used here: digests go out either way."""
    if config.model == "template":
        return None
    try:
        return role_model(config, "roles.reporter", policy_model)
    except RoleModelError as err:
        log.warning("%s; the reporter uses the template", err)
        return None


# --- the narrative ---------------------------------------------------------------------------------------------------


def tool_names() -> list[str]:
    """The narrative agent's tools, by name (for `botlab team show`)."""
    return [t.name for t in _tools({})]


def _tools(facts: dict[str, Any]) -> list:
    """Read-only tools over the digest facts, which `botlab.reporting.digest.collect_facts` read from the store."""
    from smolagents import tool

    def pick(*keys: str) -> str:
        return json.dumps({k: facts.get(k) for k in keys}, default=str)

    @tool
    def progress() -> str:
        """Steps done since the last digest, solve rates and rewards per task type, proposal rates, throughput."""
        return pick("first_step", "last_step", "steps", "steps_done", "run_last_step", "total_steps", "solve_rates",
                    "solve_rate_change", "change_basis", "rewards", "valid_rate", "admitted_rate", "rejections",
                    "seconds_per_step", "tokens_per_second", "evaluation")

    @tool
    def feedback_and_health() -> str:
        """Human feedback received since the last digest and what it changed, messages refused and why, how many
        arrived in all; the curriculum; errors and restarts after unclean stops."""
        return pick("messages", "feedback", "refused", "curriculum", "errors", "error_count", "restarts",
                    "unclean_stops")

    @tool
    def examples() -> str:
        """Up to three tasks the team proposed in this period, with the solver's answer and its reward."""
        return pick("examples")

    return [progress, feedback_and_health, examples]


def write_narrative(model: Any, facts: dict[str, Any], max_words: int) -> tuple[str | None, str]:
    """(narrative, '') from the agent, or (None, why it was not usable)."""
    from smolagents import LogLevel, ToolCallingAgent

    prompts = load_prompts(PROMPTS)
    templates = {k: prompts[k] for k in ("system_prompt", "planning", "managed_agent", "final_answer")}
    agent = ToolCallingAgent(tools=_tools(facts), model=model, prompt_templates=templates,
                             max_steps=AGENT_MAX_STEPS, verbosity_level=LogLevel.OFF, return_full_result=True)
    try:
        result = agent.run(render(prompts["narrative_task"], max_words=max_words))
    except Exception as err:  # the model or its server failed: the digest still goes out with the template
        return None, f"the reporter model failed: {type(err).__name__}: {_first_line(err)}"
    if result.state != "success":
        return None, f"the reporter agent did not finish ({result.state})"
    text = " ".join(str(result.output or "").split())
    problem = check_narrative(text, facts, max_words)
    return (None, problem) if problem else (text, "")


def check_narrative(text: str, facts: dict[str, Any], max_words: int) -> str:
    """Why the narrative is unusable, or '' when it is fine: empty, too long, code, or numbers not from the facts."""
    if not text.strip():
        return "the narrative was empty"
    words = len(text.split())
    if words > max_words:
        return f"the narrative had {words} words (limit {max_words})"
    if "```" in text or text.lstrip().startswith(("{", "[", "<")):
        return "the narrative was code or markup, not prose"
    numbers = _NUMBER.findall(text)
    if not numbers:
        return "the narrative had no numbers"
    known = _fact_numbers(facts)
    unknown = [n for n in numbers if n not in known]
    if len(unknown) * 2 > len(numbers):
        return f"the narrative's numbers are not in the data ({', '.join(unknown[:5])})"
    return ""


def _fact_numbers(value: Any) -> set[str]:
    """Every way a number of the facts is likely written: 7, 0.25, 25 (percent), 0.3, 3.5 ..."""
    out: set[str] = set()
    if isinstance(value, bool) or value is None:
        return out
    if isinstance(value, (int, float)):
        v = float(value)
        for form in (f"{v:g}", f"{v:.0f}", f"{v:.1f}", f"{v:.2f}", f"{abs(v) * 100:.0f}", f"{abs(v) * 100:.1f}",
                     f"{abs(v):g}", f"{abs(v):.2f}"):
            out.add(form.lstrip("-"))
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out |= _fact_numbers(v) | set(_NUMBER.findall(str(k)))
        return out
    if isinstance(value, (list, tuple)):
        for v in value:
            out |= _fact_numbers(v)
        return out
    return set(_NUMBER.findall(str(value)))


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


# --- feedback in plain words -----------------------------------------------------------------------------------------


class InterpretError(Exception):
    """The model's answer was not a JSON list of directives."""


def interpret_feedback(model: Any, text: str, curriculum: dict[str, Any]) -> list[Any]:
    """The model's reading of plain words as raw directive items (validate them with curriculum.validate_directives)."""
    from smolagents import ChatMessage, MessageRole

    prompts = load_prompts(PROMPTS)
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content=[{"type": "text", "text": prompts["interpret_system"]}]),
        ChatMessage(role=MessageRole.USER, content=[{"type": "text", "text": render(
            prompts["interpret_user"], curriculum=json.dumps(curriculum), text=text[:2000])}]),
    ]
    answer = model.generate(messages).content
    if isinstance(answer, list):  # content parts
        answer = " ".join(part.get("text", "") for part in answer if isinstance(part, dict))
    return parse_directive_list(answer or "")


def parse_directive_list(answer: str) -> list[Any]:
    """The first JSON list (or single object) in the answer."""
    start = min((i for i in (answer.find("["), answer.find("{")) if i >= 0), default=-1)
    if start < 0:
        raise InterpretError(f"no JSON in the answer {answer[:80]!r}")
    try:
        value, _ = json.JSONDecoder().raw_decode(answer[start:])
    except json.JSONDecodeError as err:
        raise InterpretError(f"the answer is not valid JSON ({err.msg})") from None
    return value if isinstance(value, list) else [value]
