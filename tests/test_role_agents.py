"""The trained roles as smolagents agents (agents/role_agent.py): many agents, one batched engine call, prompts and
replies exactly those of the direct call."""

from __future__ import annotations

import threading

import pytest
from smolagents import MultiStepAgent

from botlab.agents.role_agent import BatchedPolicy, RoleAgent, run_role_agents
from botlab.config import TeamConfig
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store
from botlab.tasks import Triplet


def prompts(n: int) -> list[tuple[list[dict], int]]:
    return [([{"role": "system", "content": "You write Python."}, {"role": "user", "content": f"task {i}"}], i)
            for i in range(n)]


def test_every_agent_is_answered_by_one_call_in_the_calling_thread():
    calls = []

    def answer_all(requests):
        calls.append((threading.current_thread(), [extra for _, extra in requests]))
        return [f"reply to {messages[-1]['content']}" for messages, _ in requests]

    replies = run_role_agents(prompts(12), answer_all)
    assert replies == [f"reply to task {i}" for i in range(12)]  # in the order of the prompts
    assert calls == [(threading.current_thread(), list(range(12)))]  # one call, requests in slot order


def test_an_agent_sees_exactly_the_roles_messages():
    seen = []
    run_role_agents(prompts(1), lambda requests: seen.extend(requests) or ["ok"])
    [(messages, extra)] = seen
    assert messages == prompts(1)[0][0] and extra == 0  # no "New task:" framing, no smolagents system prompt
    agent = RoleAgent(BatchedPolicy(1), prompts(1)[0][0], slot=0)
    assert isinstance(agent, MultiStepAgent) and agent.system_prompt == "You write Python."


def test_a_failure_reaches_every_agent_and_nobody_waits_forever():
    def engine_down(requests):
        raise RuntimeError("the engine is gone")

    with pytest.raises(RuntimeError, match="the engine is gone"):
        run_role_agents(prompts(5), engine_down)
    # An agent that fails before it asks (a message role the chat format does not have): the round never fills.
    broken = prompts(3)
    broken[1] = ([{"role": "narrator", "content": "?"}], 1)
    with pytest.raises(ValueError, match="narrator"):
        run_role_agents(broken, lambda requests: ["never"] * len(requests))


def test_a_checked_agent_runs_its_tool_and_writes_again_when_the_verdict_says_so():
    """Agents 0 and 2 have the RunCandidate tool; agent 0's first verdict comes with a conversation to go on with.
    Each round is one call per kind in this thread; the third and fourth calls are for agent 0 alone."""
    calls = []

    def answer_all(requests):
        calls.append(("model", threading.current_thread(), [(m[-1]["content"], extra) for m, extra in requests]))
        return [f"reply to {m[-1]['content']}" for m, _ in requests]

    def check_all(turns):
        calls.append(("check", threading.current_thread(), [(extra, reply, turn) for extra, _, reply, turn in turns]))
        def again(messages, reply):
            return [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": "that failed; again"}]
        return [(f"verdict {extra}.{turn}", again(messages, reply) if extra == 0 and turn == 1 else None)
                for extra, messages, reply, turn in turns]

    replies = run_role_agents(prompts(4), answer_all, check_all, checked=lambda extra: extra % 2 == 0)
    assert replies == [["verdict 0.1", "verdict 0.2"], "reply to task 1", ["verdict 2.1"], "reply to task 3"]
    here = threading.current_thread()
    assert calls == [
        ("model", here, [(f"task {i}", i) for i in range(4)]),
        ("check", here, [(0, "reply to task 0", 1), (2, "reply to task 2", 1)]),
        ("model", here, [("that failed; again", 0)]),
        ("check", here, [(0, "reply to that failed; again", 2)]),
    ]


def test_a_failing_or_short_tool_answer_reaches_every_agent_and_the_caller():
    def answer_all(requests):
        return ["reply"] * len(requests)

    def sandbox_down(turns):
        raise RuntimeError("the sandbox is gone")

    with pytest.raises(RuntimeError, match="the sandbox is gone"):
        run_role_agents(prompts(4), answer_all, sandbox_down, checked=lambda extra: True)
    with pytest.raises(ValueError, match="shorter"):  # one verdict short: an error, not an agent waiting forever
        run_role_agents(prompts(4), answer_all, lambda turns: [("ok", None)] * (len(turns) - 1),
                        checked=lambda extra: True)


@pytest.mark.slow
def test_the_step_generates_through_agents_as_the_direct_call_does(tmp_path, transformers_engine, sandbox):
    """Greedy replies through the role agents equal the direct batched call's, token for token, and the engine is
    called once for all of them."""
    team = TeamConfig(name="agents", storage_dir=tmp_path,
                      roles={"solver": {"prime_answer": True, "temperature": 0.0, "max_new_tokens": 12}})
    with open_store(team.run_dir) as store:
        selfplay = SelfPlay(team, store, transformers_engine, sandbox, learner=None)
        tasks = [Triplet(f"def f(x):\n    return x * {k}", ["3"], [str(3 * k)], task_type="deduction")
                 for k in range(2, 6)]
        asked = [selfplay._solver_prompt(task) for task in tasks]
        engine_calls = []
        generate = transformers_engine.generate
        transformers_engine.generate = lambda *a, **kw: engine_calls.append(len(a[0])) or generate(*a, **kw)
        try:
            through_agents = selfplay.generator.generate("solver", asked, team.roles.solver, n=1)
        finally:
            del transformers_engine.generate  # the engine's own method again
        direct = selfplay.generator.generate_batch("solver", asked, team.roles.solver, n=1)
    assert engine_calls[0] == len(tasks)  # the first part of every reply in one call
    for [a], [d] in zip(through_agents, direct):
        assert a.prompt_ids == d.prompt_ids
        assert a.completion.token_ids == d.completion.token_ids and a.completion.logprobs == pytest.approx(
            d.completion.logprobs, abs=1e-4)


@pytest.mark.slow
def test_a_steps_proposer_and_solver_turns_share_one_engine_call(tmp_path, transformers_engine, sandbox):
    """The solver tasks are drawn before proposing, so their answers come from the proposals' round: the first
    engine call of a step holds every proposer prompt and every solver prompt (solver_samples answers each)."""
    team = TeamConfig(name="together", storage_dir=tmp_path,
                      selfplay={"propose_batch": 2, "solve_batch": 2, "solver_samples": 2, "seed_size": 1,
                                "induction_inputs": 3, "induction_visible": 2, "heldout_size": 0},
                      roles={"proposer": {"max_new_tokens": 24}, "solver": {"max_new_tokens": 12}})
    with open_store(team.run_dir) as store:
        selfplay = SelfPlay(team, store, transformers_engine, sandbox, learner=None)
        selfplay.ensure_zero_triplets()
        calls = []
        generate = transformers_engine.generate
        transformers_engine.generate = lambda prompts, sampling: calls.append(
            sorted((s.n, s.max_tokens) for s in sampling)) or generate(prompts, sampling)
        try:
            report = selfplay.run_step(1)
        finally:
            del transformers_engine.generate
    first = calls[0]
    assert first.count((1, 24)) == 6  # two proposals per task type
    assert first.count((2, 12)) == 6  # two solver tasks per type, two answers each
    assert len(report.solutions) == 12 and all(s.reward is not None for s in report.solutions)
    assert {s.role for s in report.solutions} == {"solver"} and {p.sample.role for p in report.proposals} == {"proposer"}
