"""The reviewer role: gates valid proposals before they enter a buffer.

Rule pass, in this order (the first failing check decides; every reason is machine-readable):
  "safety"               red-flag patterns in the program or message (reviewer.yaml), even if the sandbox ran it fine
  "exact_duplicate"      same fingerprint (comments, docstrings, formatting ignored) as a buffered program or an
                         earlier admitted candidate of the same batch; for deduction and abduction a buffered program
                         with a new input is a new task, up to cfg.inputs_per_program tasks per program
  "near_duplicate"       similarity >= cfg.near_duplicate_threshold to one of those (agents/similarity.py)
  "identity"             f returns one of its arguments unchanged
  "constant_output"      f never reads its arguments, or all of several outputs are equal
  "output_equals_input"  every output reads as the same expression as its input
Goal relevance is not judged by rules (a keyword match would reject good tasks and admit bad ones): with a goal set
it needs the LLM pass, and an admitted verdict says that it was not judged otherwise.

Optional LLM pass (cfg.llm): each candidate the rules admit goes to a smolagents agent (agents/review_agent.py)
that may reject it as "off_goal", "safety" or "llm_reject". Its model is cfg.model: the policy (the `model` the
daemon passes) or a litellm model (agents/role_models.py). When the model fails or answers garbage the rule verdict
stands and its detail says so.

For induction the loop passes the induction buffer's programs: a program already probed is a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

from botlab.agents.prompts import load_prompts
from botlab.agents.pyast import input_key
from botlab.agents.review_agent import LLMReview
from botlab.agents.review_rules import safety_flags, trivial_reason
from botlab.agents.role_models import role_model
from botlab.agents.similarity import Pool, SimilarityIndex, fingerprint
from botlab.config import ReviewerConfig, TaskType
from botlab.tasks import Triplet

__all__ = ["Reviewer", "Verdict", "fingerprint"]


@dataclass
class Verdict:
    admit: bool
    reason: str | None = None  # machine-readable, None when admitted
    detail: str = ""
    source: str = "rules"  # "rules", or "llm" when the LLM pass decided


class Reviewer:
    def __init__(self, cfg: ReviewerConfig, executor, goal: str = "", model=None):
        """`model`: the policy's smolagents Model, used when cfg.model is 'policy'. Raises RoleModelError when
        cfg.model is a litellm model that cannot be used here."""
        self.cfg = cfg
        self.goal = goal.strip()
        self.patterns: dict[str, str] = load_prompts("reviewer")["safety_patterns"]
        self.index = SimilarityIndex()
        llm_model = role_model(cfg, "roles.reviewer", policy_model=model) if cfg.enabled and cfg.llm else None
        self.llm = LLMReview(llm_model, executor, self.goal) if llm_model is not None else None

    def review(
        self, task_type: TaskType, candidates: list[Triplet], buffer_programs: list[str], rules: list[str] = (),
        buffer_inputs: dict[str, set[str]] | None = None,
    ) -> list[Verdict]:
        """One verdict per candidate, in order. `rules`: extra plain-language rules (curriculum) for the LLM pass.
        `buffer_inputs`: the input keys (input_key) of the buffered tasks of this type, by program fingerprint;
        programs missing there (held out, say) take no new inputs."""
        if not self.cfg.enabled:
            return [Verdict(True, None, "reviewer disabled") for _ in candidates]
        pool = self.index.pool(buffer_programs)
        admitted: list[str] = []  # programs of this batch admitted so far
        inputs = {mark: set(keys) for mark, keys in (buffer_inputs or {}).items()}
        verdicts = []
        for candidate in candidates:
            verdict = self._rules(task_type, candidate, pool, admitted, inputs)
            if verdict.admit:
                admitted.append(candidate.program)
                if task_type != "induction" and candidate.inputs:
                    inputs.setdefault(fingerprint(candidate.program), set()).add(input_key(candidate.inputs[0]))
            verdicts.append(verdict)
        if self.llm is not None:
            all_rules = [*self.cfg.rules, *rules]
            for i, candidate in enumerate(candidates):
                if verdicts[i].admit:
                    verdicts[i] = self._llm_pass(task_type, candidate, pool, all_rules, verdicts[i])
        return verdicts

    def _rules(self, task_type, candidate: Triplet, pool: Pool, admitted: list[str],
               inputs: dict[str, set[str]]) -> Verdict:
        flags = safety_flags(candidate, self.patterns)
        if flags:
            return Verdict(False, "safety", "red flags: " + ", ".join(flags))
        duplicate = None if self._new_input(task_type, candidate, inputs) else self._duplicate(
            candidate.program, pool, admitted)
        if duplicate:
            return duplicate
        trivial = trivial_reason(task_type, candidate)
        if trivial:
            return Verdict(False, *trivial)
        return Verdict(True, None, self._admit_note())

    def _duplicate(self, program: str, pool: Pool, admitted: list[str]) -> Verdict | None:
        mark = self.index.features(program).fingerprint
        threshold = self.cfg.near_duplicate_threshold
        batch = self.index.pool(admitted)
        for where, searched in (("buffered program", pool), ("admitted candidate of this batch", batch)):
            if mark in searched.fingerprints:
                return Verdict(False, "exact_duplicate", f"same program as {where} #{searched.fingerprints[mark]}")
        for where, searched in (("buffered program", pool), ("admitted candidate of this batch", batch)):
            nearest = searched.nearest(program, k=1, min_score=threshold)
            if nearest:
                score, j = nearest[0]
                return Verdict(False, "near_duplicate", f"{score:.2f} similar to {where} #{j} (threshold {threshold})")
        return None

    def _new_input(self, task_type, candidate: Triplet, inputs: dict[str, set[str]]) -> bool:
        """A known program with an input none of its tasks has, while it has fewer than cfg.inputs_per_program:
        predicting a program's output on a new input (or finding one) is a new task, and copying a program is the
        easiest thing a small proposer does."""
        if task_type == "induction" or not candidate.inputs:
            return False
        known = inputs.get(fingerprint(candidate.program))
        return known is not None and len(known) < self.cfg.inputs_per_program and \
            input_key(candidate.inputs[0]) not in known

    def _llm_pass(self, task_type, candidate: Triplet, pool, rules: list[str], rule_verdict: Verdict) -> Verdict:
        decision, note = self.llm.judge(task_type, candidate, pool, rules)
        if decision is None:
            detail = f"{rule_verdict.detail}; kept the rule verdict: {note}"
            return Verdict(rule_verdict.admit, rule_verdict.reason, detail)
        if decision.admit:
            return Verdict(True, None, f"rules passed; llm admitted {decision.why}".strip(), source="llm")
        return Verdict(False, decision.reason, f"llm rejected: {decision.why}", source="llm")

    def _admit_note(self) -> str:
        if self.cfg.llm and self.llm is None:
            return "rules passed; reviewer.llm is on but no model was given, so there was no llm pass"
        if self.goal and self.llm is None:
            return "rules passed; goal relevance not judged (rules cannot; it needs reviewer.llm and a model)"
        return "rules passed"
