"""How the self-play step gets replies: one smolagents agent per prompt, their turns answered by one batched engine
call (agents/role_agent.py), the proposer's candidates run by its tool in one sandbox call, and primed replies
written part by part.

A primed reply (agents/priming.py) starts inside its first block; the loop opens each later part once the model
closed the one before. The openings the loop writes are part of the trained sequence with a zero mask: the policy is
trained on what it sampled, never on what the loop wrote for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botlab.agents.priming import Segment
from botlab.agents.role_agent import run_role_agents
from botlab.config import SamplingConfig, TaskType
from botlab.engines import Completion, Engine, Sampling
from botlab.selfplay.rewards import Reward
from botlab.tasks import Triplet

# A generation request: the task type, the chat messages, and the primed reply's parts ([] when not primed).
Prompt = tuple[TaskType, list[dict], list[Segment]]


@dataclass
class Sample:
    """A generated turn with its reward: what gets trained and stored."""

    role: str
    task_type: TaskType
    prompt_ids: list[int]
    prompt_text: str
    completion: Completion
    temperature: float
    reward: Reward | None = None
    task: Triplet | None = None
    answer: object = None  # the solver's parsed answer, once checked
    prefix: str = ""  # the primed opening of the reply (part of the prompt, not of the sampled tokens)
    train_mask: list[float] | None = None  # 0 on completion tokens the loop inserted
    suffix: str = ""  # the closing of the reply's last part, when the model reached its stop string

    @property
    def text(self) -> str:
        """The reply as the role's parser reads it."""
        return self.prefix + self.completion.text + self.suffix


# check(turns) -> (verdict, the conversation to go on with or None) per turn; a turn is (the index of its prompt in
# the ask, the messages its reply answered, the reply's samples, the turn's number from 1).
Check = Callable[[list[tuple[int, list[dict], list["Sample"], int]]], list[tuple[Any, list[dict] | None]]]


@dataclass
class Ask:
    """One role's part of a round: its prompts, its sampling, and how many replies each prompt gets. With `check`
    (the proposer's), each agent runs its replies through the RunCandidate tool, answered by `check`, and its
    answer is the list of verdicts (agents/role_agent.py)."""

    role: str
    prompts: list[Prompt]
    role_cfg: SamplingConfig
    n: int = 1
    check: Check | None = None


class Generator:
    """Batched engine calls, one per reply part; counts the tokens the model generated."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.generated_tokens = 0

    def generate(self, role: str, prompts: list[Prompt], role_cfg: SamplingConfig, n: int) -> list[list[Sample]]:
        """`n` samples per prompt, in the order of `prompts`."""
        [groups] = self.generate_together([Ask(role, prompts, role_cfg, n)])
        return groups

    def generate_together(self, asks: list[Ask]) -> list[list[list]]:
        """Every ask's samples (per ask, per prompt) from one round: each prompt is a smolagents agent of its role
        (agents/role_agent.py), and all the agents' turns reach the engine as one batch, whatever their roles. A
        checked ask's prompts get their verdicts instead (one per turn), from rounds that hold only the agents still
        at work."""
        flat = [(ask, i, prompt) for ask in asks for i, prompt in enumerate(ask.prompts)]

        def answer_all(requests: list[tuple[list[dict], tuple[Ask, int, Prompt]]]) -> list[list[Sample]]:
            # The agents' messages are the role's own (the agent adds nothing to what the policy is trained on); a
            # later turn's are its conversation so far, its reply primed as the first one's.
            return self._engine_round([(ask, (prompt[0], messages, prompt[2]))
                                       for messages, (ask, _, prompt) in requests])

        def check_all(turns: list[tuple[tuple[Ask, int, Prompt], list[dict], list[Sample], int]]) -> list:
            verdicts: list = [None] * len(turns)
            for ask in {id(extra[0]): extra[0] for extra, *_ in turns}.values():
                mine = [j for j, (extra, *_) in enumerate(turns) if extra[0] is ask]
                answers = ask.check([(turns[j][0][1], *turns[j][1:]) for j in mine])
                for j, answer in zip(mine, answers, strict=True):
                    verdicts[j] = answer
            return verdicts

        replies = run_role_agents([(prompt[1], (ask, i, prompt)) for ask, i, prompt in flat], answer_all, check_all,
                                  checked=lambda extra: extra[0].check is not None)
        out, start = [], 0
        for ask in asks:
            out.append(replies[start:start + len(ask.prompts)])
            start += len(ask.prompts)
        return out

    def generate_batch(self, role: str, prompts: list[Prompt], role_cfg: SamplingConfig, n: int
                       ) -> list[list[Sample]]:
        """`n` samples per prompt straight from the engine (no agents)."""
        ask = Ask(role, prompts, role_cfg, n)
        return self._engine_round([(ask, prompt) for prompt in prompts])

    def _engine_round(self, items: list[tuple[Ask, Prompt]]) -> list[list[Sample]]:
        """The samples of each (ask, prompt), with primed replies written part by part: one engine call per part."""
        if not items:
            return []
        ids, samplings = [], []
        for ask, (_, messages, parts) in items:
            opening = self._encode(parts[0].opening) if parts else []
            ids.append(self.engine.chat_prompt_ids(messages) + opening)
            samplings.append(Sampling(n=ask.n, temperature=ask.role_cfg.temperature, top_p=ask.role_cfg.top_p,
                                      max_tokens=_budget(parts[0] if parts else None, ask.role_cfg),
                                      stop=[parts[0].stop] if parts else []))
        outputs = self.engine.generate(ids, samplings)
        groups = []
        for (ask, (task_type, messages, parts)), prompt_ids, completions in zip(items, ids, outputs):
            self.generated_tokens += sum(len(c.token_ids) for c in completions)
            closed = parts[0].parsed_closing if parts else ""
            groups.append([
                Sample(ask.role, task_type, prompt_ids, messages[-1]["content"], c, ask.role_cfg.temperature,
                       prefix=parts[0].opening if parts else "",
                       suffix=closed if self.engine.stopped_at_string(c) else "")
                for c in completions
            ])
        for k in range(1, max(len(prompt[2]) for _, prompt in items)):
            # A non-empty suffix says the previous part reached its stop string; the others stay as they ended.
            todo = [(s, parts[k], ask.role_cfg) for (ask, (_, _, parts)), group in zip(items, groups)
                    if len(parts) > k for s in group if s.suffix]
            self._continue(todo)
        return groups

    def hinted(self, samples: list[Sample], hints: list[str], parts: list[Segment], role_cfg: SamplingConfig
               ) -> list[Sample]:
        """One new reply to each sample's prompt (a one-part primed reply, `parts`), started with its hint. The
        hint's tokens are trained as if the model had sampled them (selfplay.solver_hints): their sampling-time
        log-probs are NaN, read by the learner as the policy's own at update time."""
        if not samples:
            return []
        hint_ids = [self._encode(hint) for hint in hints]
        outputs = self.engine.generate(
            [s.prompt_ids + ids for s, ids in zip(samples, hint_ids)],
            [Sampling(n=1, temperature=role_cfg.temperature, top_p=role_cfg.top_p, max_tokens=_budget(part, role_cfg),
                      stop=[part.stop]) for part in parts])
        replies = []
        for s, hint, ids, part, [tail] in zip(samples, hints, hint_ids, parts, outputs):
            self.generated_tokens += len(tail.token_ids)
            completion = Completion(text=hint + tail.text, token_ids=ids + tail.token_ids,
                                    logprobs=[math.nan] * len(ids) + tail.logprobs, finish_reason=tail.finish_reason)
            replies.append(Sample(s.role, s.task_type, s.prompt_ids, s.prompt_text, completion, role_cfg.temperature,
                                  prefix=s.prefix,
                                  suffix=part.parsed_closing if self.engine.stopped_at_string(tail) else ""))
        return replies

    def _continue(self, todo: list[tuple[Sample, Segment, SamplingConfig]]) -> None:
        """Open the next part of each reply (its tokens get mask 0) and let the model write it."""
        if not todo:
            return
        ids, samplings, openings = [], [], []
        for s, part, role_cfg in todo:
            openings.append(self._encode(part.opening))
            ids.append(s.prompt_ids + s.completion.token_ids + openings[-1])
            samplings.append(Sampling(n=1, temperature=role_cfg.temperature, top_p=role_cfg.top_p,
                                      max_tokens=_budget(part, role_cfg), stop=[part.stop]))
        outputs = self.engine.generate(ids, samplings)
        for (s, part, _), opening, [tail] in zip(todo, openings, outputs):
            head = s.completion
            self.generated_tokens += len(tail.token_ids)
            s.completion = Completion(
                text=head.text + s.suffix + part.opening + tail.text,
                token_ids=head.token_ids + opening + tail.token_ids,
                logprobs=head.logprobs + [0.0] * len(opening) + tail.logprobs,
                finish_reason=tail.finish_reason,
            )
            mask = s.train_mask or [1.0] * len(head.token_ids)
            s.train_mask = mask + [0.0] * len(opening) + [1.0] * len(tail.token_ids)
            s.suffix = part.parsed_closing if self.engine.stopped_at_string(tail) else ""

    def _encode(self, text: str) -> list[int]:
        return self.engine.tokenizer.encode(text, add_special_tokens=False)


def _budget(part: Segment | None, role_cfg: SamplingConfig) -> int:
    """A part's token budget: its own limit when it has one, never more than the role's max_new_tokens."""
    if part is None or part.max_tokens is None:
        return role_cfg.max_new_tokens
    return min(part.max_tokens, role_cfg.max_new_tokens)
