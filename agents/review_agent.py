"""The reviewer's optional LLM pass: a smolagents ToolCallingAgent that judges one candidate with two tools.

Tools, bound to the candidate under review:
- `similar_pool_programs(count)`: the buffered programs most like it (the agent's view of the buffer);
- `run_program(arguments)`: runs the candidate's f on new arguments in the sandbox (executor.validate_many), so the
  agent can probe for constant or trivial behaviour. Model-written code only ever runs there.

The agent's final answer is "ADMIT" or "REJECT <category>: <why>". Anything else, or a model that fails, yields no
verdict and the caller keeps the rule verdict (saying so in its detail).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from smolagents import Tool, ToolCallingAgent
from smolagents.monitoring import LogLevel

from botlab.agents.prompts import load_prompts, render
from botlab.agents.similarity import Pool
from botlab.tasks import Triplet

# The agent's reject categories and the verdict reasons they become.
CATEGORY_REASON = {"off_goal": "off_goal", "unsafe": "safety"}
_DECISION = re.compile(r"^\W*(ADMIT|REJECT)\b\W*([a-z_]+)?\s*:?\s*(.*)", re.IGNORECASE | re.DOTALL)
_PAIRS_SHOWN = 5


@dataclass
class LLMDecision:
    admit: bool
    reason: str | None  # machine-readable, for a reject
    why: str


def parse_decision(answer: object) -> LLMDecision | None:
    """Read the agent's final answer; None when it is neither ADMIT nor REJECT."""
    if isinstance(answer, dict):
        answer = answer.get("answer", "")
    match = _DECISION.match(str(answer or "").strip())
    if not match:
        return None
    verdict, category, why = match.group(1).upper(), (match.group(2) or "").lower(), match.group(3).strip()
    if verdict == "ADMIT":
        return LLMDecision(True, None, why)
    return LLMDecision(False, CATEGORY_REASON.get(category, "llm_reject"), f"{category}: {why}".strip(": "))


class SimilarPoolPrograms(Tool):
    name = "similar_pool_programs"
    description = "Shows the programs already in the pool that are most similar to the task's program."
    inputs = {"count": {"type": "integer", "description": "how many to show, 1 to 5", "nullable": True}}
    output_type = "string"

    def __init__(self, program: str, pool: Pool):
        super().__init__()
        self.program, self.pool = program, pool

    def forward(self, count: int | None = None) -> str:
        count = max(1, min(5, int(count or 3)))
        nearest = self.pool.nearest(self.program, k=count)
        if not nearest:
            return "The pool is empty."
        return "\n\n".join(f"similarity {score:.2f}:\n{self.pool.programs[i]}" for score, i in nearest)


class RunProgram(Tool):
    name = "run_program"
    description = "Runs the task's f on new arguments in the sandbox and returns what f gives back."
    inputs = {"arguments": {"type": "string", "description": "f's arguments as Python literals, like [1, 2], 'ab'"}}
    output_type = "string"

    def __init__(self, program: str, executor):
        super().__init__()
        self.program, self.executor = program, executor

    def forward(self, arguments: str) -> str:
        [result] = self.executor.validate_many([(self.program, [arguments])])
        if result.valid:
            return f"f({arguments}) == {result.outputs[0]}"
        return f"f({arguments}) failed: {result.reason} {getattr(result, 'detail', '')}".strip()


class LLMReview:
    def __init__(self, model, executor, goal: str = ""):
        self.model = model
        self.executor = executor
        self.goal = goal
        self.prompts = load_prompts("reviewer")["llm"]

    def judge(self, task_type: str, candidate: Triplet, pool: Pool, rules: list[str]) -> tuple[LLMDecision | None, str]:
        """(decision, note); decision is None when the model failed or answered garbage, and note says which."""
        agent = ToolCallingAgent(
            tools=[SimilarPoolPrograms(candidate.program, pool), RunProgram(candidate.program, self.executor)],
            model=self.model,
            prompt_templates=self.prompts["prompt_templates"],
            max_steps=self.prompts["max_steps"],
            verbosity_level=LogLevel.OFF,
        )
        task = render(
            self.prompts["task"],
            task_type=task_type,
            program=candidate.program,
            pairs=list(zip(candidate.inputs, candidate.outputs))[:_PAIRS_SHOWN],
            message=candidate.message,
            goal=self.goal,
            rules=rules,
        )
        try:
            answer = agent.run(task)
        except Exception as e:  # noqa: BLE001 - any model or agent failure means: keep the rule verdict
            return None, f"llm pass failed ({type(e).__name__}: {str(e)[:200]})"
        decision = parse_decision(answer)
        if decision is None:
            return None, f"llm answer unusable: {str(answer)[:200]!r}"
        return decision, ""
