"""PolicyModel: smolagents' Model interface over a real botlab engine, recording what training needs."""

import pytest
from smolagents import ToolCallingAgent
from smolagents.memory import ActionStep
from smolagents.models import ChatMessage, MessageRole
from smolagents.monitoring import LogLevel

from botlab.agents.policy_model import PolicyModel, chat_dicts
from botlab.agents.prompts import load_prompts


def test_chat_dicts_flattens_smolagents_memory():
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content=[{"type": "text", "text": "be brief"}]),
        ChatMessage(role=MessageRole.USER, content=[{"type": "text", "text": "task"}, {"type": "text", "text": "more"}]),
        ChatMessage(role=MessageRole.TOOL_CALL, content=[{"type": "text", "text": '{"name": "t"}'}]),
        ChatMessage(role=MessageRole.TOOL_RESPONSE, content=[{"type": "text", "text": "Observation: 3"}]),
        {"role": "user", "content": "go on"},
        {"role": "assistant", "content": None},
    ]
    assert chat_dicts(messages) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "task\nmore"},
        {"role": "assistant", "content": '{"name": "t"}'},
        {"role": "user", "content": "Observation: 3\ngo on"},
        {"role": "assistant", "content": ""},
    ]
    assert all(type(m["role"]) is str for m in chat_dicts(messages))


@pytest.mark.slow
def test_generate_records_ids_and_logprobs(transformers_engine):
    model = PolicyModel(transformers_engine, max_tokens=24, temperature=0)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Count from 1 to 20, one number a line."}]}]
    message = model.generate(messages)
    raw = message.raw
    assert message.role == MessageRole.ASSISTANT and message.content
    assert raw["prompt_ids"] == transformers_engine.chat_prompt_ids(chat_dicts(messages))
    assert len(raw["completion_ids"]) == len(raw["logprobs"]) == message.token_usage.output_tokens > 0
    assert all(lp <= 0 for lp in raw["logprobs"])
    assert raw["finish_reason"] in ("stop", "length") and raw["weight_version"] == transformers_engine.weight_version
    assert message.token_usage.input_tokens == len(raw["prompt_ids"])
    assert model.generate(messages).content == message.content  # greedy is repeatable

    word = message.content.split()[2]  # a stop string the greedy answer reaches after a few tokens
    stopped = model.generate(messages, stop_sequences=[word])
    assert message.content.startswith(stopped.content) and word not in stopped.content
    assert len(stopped.raw["completion_ids"]) < len(raw["completion_ids"])

    with pytest.raises(ValueError, match="response_format"):
        model.generate(messages, response_format={"type": "json_object"})


@pytest.mark.slow
def test_agent_turns_carry_their_token_ids(transformers_engine):
    """What an agent step produced can be read back in a step callback, ready for a training row."""
    seen = []

    def keep(step, agent=None):
        if step.model_output_message is not None:
            seen.append(step.model_output_message.raw)

    agent = ToolCallingAgent(
        tools=[],
        prompt_templates=load_prompts("reviewer")["llm"]["prompt_templates"],  # short: the default is ~950 tokens
        model=PolicyModel(transformers_engine, max_tokens=32, temperature=0),
        max_steps=1,
        verbosity_level=LogLevel.OFF,
        step_callbacks={ActionStep: keep},
    )
    agent.run("Say hello.")
    assert seen and len(seen[0]["completion_ids"]) == len(seen[0]["logprobs"]) > 0
