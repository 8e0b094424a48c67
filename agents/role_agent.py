"""The trained roles (proposer, solver) as smolagents agents on one batching policy model.

Every proposal and every solver task of a step is a `RoleAgent` of its own. Its prompt is exactly the role's chat
messages (built from our YAML prompt files, never smolagents' default system prompts), so what the policy is trained
on keeps its shape. All the agents of a round share one `BatchedPolicy`: an agent's request waits until every agent
still at work has asked, then one call answers them all in the thread that runs the agents (the engine sees the batch
sizes the step always had, from the thread that called it before), and each reply carries what the learner needs
(token ids, sampling-time log-probs) in `ChatMessage.raw`.

A proposer agent has a tool, `run_candidate` (RunCandidate): it runs the reply in the sandbox, batched the same way
(one sandbox call for every agent's candidate), and says whether it is a valid task. When it is not and the team lets
the proposer revise, the tool's verdict is the next message and the agent writes once more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from smolagents import ActionOutput, MultiStepAgent, Tool
from smolagents.memory import ActionStep
from smolagents.models import ChatMessage, MessageRole, Model
from smolagents.monitoring import LogLevel

from botlab.agents.policy_model import chat_dicts

# answer_all(requests) -> one reply per request, in slot order; a request is (chat messages, the caller's extra).
AnswerAll = Callable[[list[tuple[list[dict], Any]]], Sequence[Any]]
# check_all(turns) -> (verdict, the conversation to go on with or None) per turn; a turn is (the caller's extra,
# the messages the reply answered, the reply, the turn's number from 1).
CheckAll = Callable[[list[tuple[Any, list[dict], Any, int]]], Sequence[tuple[Any, list[dict] | None]]]
MAX_TURNS = 2  # a proposer writes at most once more after its tool's verdict


class BatchedPolicy(Model):
    """A smolagents Model for `size` agents at once. Every request (a model turn, or a tool run through `ask`) waits
    until each agent still at work has asked; `serve`, in the thread that runs the agents, answers them round by
    round, each kind of request with one call. `raw` of a model reply is what answer_all returned for it."""

    def __init__(self, size: int, model_id: str = "botlab-policy-batch"):
        super().__init__(model_id=model_id)
        self._asked: dict[int, tuple[str, Any]] = {}  # slot -> (kind, request), this round
        self._answers: dict[int, Any] = {}
        self._active = size  # agents that have not finished
        self._error: BaseException | None = None
        self._round = threading.Condition()

    def generate(self, messages: list, stop_sequences=None, response_format=None, tools_to_call_from=None,
                 slot: int = 0, extra: Any = None, **kwargs) -> ChatMessage:
        reply = self.ask(slot, "model", (chat_dicts(messages), extra))
        return ChatMessage(role=MessageRole.ASSISTANT, content=getattr(reply, "text", None), raw=reply)

    def ask(self, slot: int, kind: str, request: Any) -> Any:
        """Wait for this round's answer to `request` (every agent's turn is answered by one call per kind)."""
        with self._round:
            self._asked[slot] = (kind, request)
            self._round.notify_all()
            self._round.wait_for(lambda: slot in self._answers or self._error is not None)
            if self._error is not None:
                raise self._error
            return self._answers.pop(slot)

    def leave(self, err: BaseException | None = None) -> None:
        """An agent is done. One that failed takes the others down with it: the round it left can never fill."""
        with self._round:
            self._active -= 1
            if err is not None and self._error is None:
                self._error = err
            self._round.notify_all()

    def serve(self, handlers: dict[str, Callable[[list[Any]], Sequence[Any]]]) -> None:
        """Answer rounds until every agent is done (or one failed): each round once every active agent has asked."""
        while True:
            with self._round:
                self._round.wait_for(lambda: len(self._asked) == self._active or self._error is not None)
                if self._error is not None or not self._active:
                    return
                asked, self._asked = sorted(self._asked.items()), {}
                try:
                    for kind in dict.fromkeys(kind for _, (kind, _) in asked):
                        slots = [slot for slot, (k, _) in asked if k == kind]
                        answers = handlers[kind]([request for _, (k, request) in asked if k == kind])
                        self._answers.update(zip(slots, answers, strict=True))  # one answer short: nobody waits
                except BaseException as err:  # every waiting agent gets it (Ctrl-C included), and so does the caller
                    self._error = err
                    self._round.notify_all()
                    raise
                self._round.notify_all()


class RunCandidate(Tool):
    """Runs a proposal in the sandbox. The run itself happens in the round's one sandbox call (BatchedPolicy.serve's
    check handler), so the tool hands its turn to the round and waits for the verdict."""

    name = "run_candidate"
    description = ("Runs the proposed f on its input (induction: on the proposed calls) in the sandbox; says whether "
                   "it is a valid task, or why not.")
    inputs = {"turn": {"type": "object", "description": "the messages answered, the reply and the turn's number"}}
    output_type = "object"

    def __init__(self, model: BatchedPolicy, slot: int, extra: Any):
        super().__init__()
        self.model, self.slot, self.extra = model, slot, extra

    def forward(self, turn: tuple[list[dict], Any, int]) -> tuple[Any, list[dict] | None]:
        return self.model.ask(self.slot, "check", (self.extra, *turn))


class RoleAgent(MultiStepAgent):
    """A trained role's turn: its messages as they are, one model call, the reply as the final answer. With a
    `tool` (the proposer's RunCandidate) every reply goes through it; the final answer is then the list of its
    verdicts, and a verdict that comes with a conversation to go on with gets one more turn (up to MAX_TURNS)."""

    def __init__(self, model: BatchedPolicy, messages: list[dict], slot: int, extra: Any = None,
                 tool: Tool | None = None):
        self.role_messages = messages
        self.slot, self.extra, self.tool = slot, extra, tool
        self.verdicts: list[Any] = []
        super().__init__(tools=[tool] if tool else [], model=model, max_steps=MAX_TURNS if tool else 1,
                         verbosity_level=LogLevel.OFF)

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
        if self.tool is None:
            yield ActionOutput(output=reply.raw, is_final_answer=True)
            return
        verdict, follow_up = self.tools[self.tool.name](turn=(self.role_messages, reply.raw, self.step_number))
        memory_step.observations = str(verdict)
        self.verdicts.append(verdict)
        if follow_up is None or self.step_number >= self.max_steps:
            yield ActionOutput(output=self.verdicts, is_final_answer=True)
        else:
            self.role_messages = follow_up
            yield ActionOutput(output=None, is_final_answer=False)

    def _handle_max_steps_reached(self, task, *args, **kwargs):
        # smolagents logs an AgentError of a step and, out of steps, asks the model for a final answer: a call
        # outside the agent's round. Our turns raise no AgentError; should one come, it fails the round instead.
        raise RuntimeError(f"a {type(self).__name__} ended without an answer: {self.memory.steps[-1].error}")

    @property
    def task_text(self) -> str:
        return self.role_messages[-1]["content"]


def run_role_agents(prompts: Sequence[tuple[list[dict], Any]], answer_all: AnswerAll,
                    check_all: CheckAll | None = None, checked: Callable[[Any], bool] = lambda extra: False
                    ) -> list[Any]:
    """One RoleAgent per (messages, extra), every round of their turns answered by one `answer_all` call made in this
    thread; their final answers in order. With `check_all`, agents whose extra is `checked` get the RunCandidate
    tool, and their replies go to `check_all` (one call per round, in this thread)."""
    if not prompts:
        return []
    model = BatchedPolicy(len(prompts))
    agents = [RoleAgent(model, messages, slot, extra,
                        RunCandidate(model, slot, extra) if check_all and checked(extra) else None)
              for slot, (messages, extra) in enumerate(prompts)]

    def run(agent: RoleAgent):
        try:
            answer = agent.run(agent.task_text)
        except BaseException as err:
            model.leave(err)
            raise
        model.leave()
        return answer

    handlers = {"model": answer_all, "check": check_all}
    with ThreadPoolExecutor(max_workers=len(agents), thread_name_prefix="botlab-role") as pool:
        futures = [pool.submit(run, agent) for agent in agents]
        model.serve(handlers)
        return [future.result() for future in futures]
