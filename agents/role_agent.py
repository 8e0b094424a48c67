"""The trained roles (proposer, solver) as smolagents agents on one batching policy model.

Every proposal and every solver task of a step is a `RoleAgent` of its own. Its prompt is exactly the role's chat
messages (built from our YAML prompt files, never smolagents' default system prompts), so what the policy is trained
on keeps its shape. All the agents of a round share one `BatchedPolicy`: each agent's turn waits until every agent
has asked, then a single call answers them all (the engine sees the batch sizes the step always had, from the
thread that called it before), and each reply carries what the learner needs (token ids, sampling-time log-probs) in
`ChatMessage.raw`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from smolagents import ActionOutput, MultiStepAgent
from smolagents.memory import ActionStep
from smolagents.models import ChatMessage, MessageRole, Model
from smolagents.monitoring import LogLevel

from botlab.agents.policy_model import chat_dicts

# answer_all(requests) -> one reply per request, in slot order; a request is (chat messages, the caller's extra).
AnswerAll = Callable[[list[tuple[list[dict], Any]]], Sequence[Any]]


class BatchedPolicy(Model):
    """A smolagents Model for `size` agents at once: every `generate` waits until the round is full and answered.
    The round is answered by `answer_round`, in the thread that runs the agents (the engine is only ever called from
    there, as before the agents); `raw` of each reply is what answer_all returned for it."""

    def __init__(self, size: int, model_id: str = "botlab-policy-batch"):
        super().__init__(model_id=model_id)
        self._requests: list[tuple[list[dict], Any] | None] = [None] * size
        self._asked = 0
        self._replies: Sequence[Any] | None = None
        self._error: BaseException | None = None
        self._round = threading.Condition()

    def generate(self, messages: list, stop_sequences=None, response_format=None, tools_to_call_from=None,
                 slot: int = 0, extra: Any = None, **kwargs) -> ChatMessage:
        with self._round:
            self._requests[slot] = (chat_dicts(messages), extra)
            self._asked += 1
            self._round.notify_all()
            self._round.wait_for(lambda: self._replies is not None or self._error is not None)
        if self._error is not None:
            raise self._error
        reply = self._replies[slot]
        return ChatMessage(role=MessageRole.ASSISTANT, content=getattr(reply, "text", None), raw=reply)

    def answer_round(self, answer_all: AnswerAll) -> None:
        """Wait until every agent has asked (or one failed), then answer them all with one call."""
        with self._round:
            self._round.wait_for(lambda: self._asked == len(self._requests) or self._error is not None)
            if self._error is not None:
                return
            try:
                self._replies = answer_all(self._requests)
            except BaseException as err:  # every waiting agent gets it
                self._error = err
            self._round.notify_all()

    def abort(self, err: BaseException) -> None:
        """An agent failed before it asked: the round can never fill, so nobody waits for it."""
        with self._round:
            if self._replies is None and self._error is None:
                self._error = err
            self._round.notify_all()


class RoleAgent(MultiStepAgent):
    """One turn of a trained role: its messages as they are, one model call, the reply as the final answer."""

    def __init__(self, model: BatchedPolicy, messages: list[dict], slot: int, extra: Any = None):
        self.role_messages = messages
        self.slot, self.extra = slot, extra
        super().__init__(tools=[], model=model, max_steps=1, verbosity_level=LogLevel.OFF)

    def initialize_system_prompt(self) -> str:
        return "\n".join(m["content"] for m in self.role_messages if m["role"] == "system")

    def write_memory_to_messages(self, summary_mode: bool = False) -> list[ChatMessage]:
        # The role's own prompt, not smolagents' task framing ("New task: ..."): the policy is trained on it.
        return [ChatMessage(role=MessageRole(m["role"]), content=m["content"]) for m in self.role_messages]

    def _step_stream(self, memory_step: ActionStep):
        messages = self.write_memory_to_messages()
        memory_step.model_input_messages = messages
        reply = self.model.generate(messages, slot=self.slot, extra=self.extra)
        memory_step.model_output_message = reply
        yield ActionOutput(output=reply.raw, is_final_answer=True)

    @property
    def task_text(self) -> str:
        return self.role_messages[-1]["content"]


def run_role_agents(prompts: Sequence[tuple[list[dict], Any]], answer_all: AnswerAll) -> list[Any]:
    """One RoleAgent per (messages, extra), all answered by one `answer_all` call made in this thread; their final
    answers in order."""
    if not prompts:
        return []
    model = BatchedPolicy(len(prompts))
    agents = [RoleAgent(model, messages, slot, extra) for slot, (messages, extra) in enumerate(prompts)]

    def run(agent: RoleAgent):
        try:
            return agent.run(agent.task_text)
        except BaseException as err:
            model.abort(err)
            raise

    with ThreadPoolExecutor(max_workers=len(agents), thread_name_prefix="botlab-role") as pool:
        futures = [pool.submit(run, agent) for agent in agents]
        model.answer_round(answer_all)
        return [future.result() for future in futures]
