"""A smolagents `Model` over a botlab engine, so any agent of the team can talk to the policy being trained.

Each turn is one `engine.generate` call; `ChatMessage.raw` records what the learner needs to train on the turn
later: {"prompt_ids", "completion_ids", "logprobs", "finish_reason", "weight_version"}. A step callback can read it
back from `ActionStep.model_output_message.raw`.

The trained proposer and solver turns do not come through here: they are agents of their own on a model that
batches a whole step's turns into one engine call (agents/role_agent.py).
Tools are not passed to the chat template (small chat templates have no tool syntax); the agent's own system
prompt lists them and smolagents reads the JSON action out of the text.
"""

from __future__ import annotations

from smolagents.models import ChatMessage, MessageRole, Model, TokenUsage

from botlab.engines import Sampling

# smolagents' memory uses these roles for actions and observations; chat templates know only the usual three.
_ROLE_AS = {"tool-call": "assistant", "tool-response": "user"}


class PolicyModel(Model):
    def __init__(self, engine, max_tokens: int = 256, temperature: float = 1.0, top_p: float = 1.0, model_id=None):
        super().__init__(model_id=model_id or f"botlab-policy-{engine.name}")
        self.engine = engine
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p

    def generate(
        self,
        messages: list,
        stop_sequences: list[str] | None = None,
        response_format: dict | None = None,
        tools_to_call_from: list | None = None,
        **kwargs,
    ) -> ChatMessage:
        if response_format is not None:
            raise ValueError("PolicyModel does not support response_format (structured output)")
        prompt_ids = self.engine.chat_prompt_ids(chat_dicts(messages))
        room = self.engine.max_model_len - len(prompt_ids)
        sampling = Sampling(
            n=1,
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", self.top_p),
            max_tokens=max(1, min(kwargs.get("max_tokens", self.max_tokens), room)),
            stop=[s for s in (stop_sequences or []) if s],
        )
        [[completion]] = self.engine.generate([prompt_ids], sampling)
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content=completion.text,
            raw={
                "prompt_ids": prompt_ids,
                "completion_ids": completion.token_ids,
                "logprobs": completion.logprobs,
                "finish_reason": completion.finish_reason,
                "weight_version": self.engine.weight_version,
            },
            token_usage=TokenUsage(input_tokens=len(prompt_ids), output_tokens=len(completion.token_ids)),
        )


def chat_dicts(messages: list) -> list[dict]:
    """smolagents messages (ChatMessage or dicts, text parts or plain strings) -> [{"role", "content"}] with plain
    string roles and contents, consecutive messages of one role merged (chat templates expect alternation)."""
    out: list[dict] = []
    for message in messages:
        if isinstance(message, dict):
            role, content = message.get("role"), message.get("content")
        else:
            role, content = message.role, message.content
        role = str(getattr(role, "value", role))
        role = _ROLE_AS.get(role, role)
        if isinstance(content, list):
            content = "\n".join(part.get("text", "") for part in content if part.get("type") == "text")
        content = content or ""
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n" + content
        else:
            out.append({"role": role, "content": content})
    return out
