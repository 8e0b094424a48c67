"""The model an untrained role (reviewer, reporter) talks to: the policy, or any litellm model.

The policy comes in as the daemon's smolagents Model over the rollout engine (agents/policy_model.py); a litellm
model string becomes a smolagents LiteLLMModel with the role's api_base and the key from its api_key_env. Whatever
the model, the role's turns are never trained: only the proposer's and solver's samples reach the learner.
"""

from __future__ import annotations

import os
from typing import Any

from botlab.config import POLICY

# litellm fetches a price list from GitHub when it is imported; botlab never downloads at run time.
_OFFLINE = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"}


# A reviewer's or reporter's turn is a tool call or a short answer (a narrative is at most max_words): the cap keeps
# a rambling model within a small local context and bounds what an API model may bill.
TURN_MAX_TOKENS = 512


class RoleModelError(Exception):
    """A role's model cannot be used here; the message names the team.yaml field."""


def is_litellm(model: str) -> bool:
    return model not in (POLICY, "template")


def litellm_problem(model: str) -> str | None:
    """Why `model` is not a litellm model string usable here, or None."""
    try:
        litellm = _import_litellm()
    except ImportError:
        return f"{model!r} is a litellm model string, which needs litellm: pip install 'botlab[litellm]'"
    try:
        litellm.get_llm_provider(model)
    except Exception as err:  # litellm raises its own BadRequestError for a model it cannot route
        first = (str(err).strip().splitlines() or [""])[0][:160]
        return (f"litellm cannot route {model!r} ({first}); write PROVIDER/MODEL, e.g. 'anthropic/claude-sonnet-4-5'"
                ", or 'hosted_vllm/NAME' with api_base for a local vLLM server")
    return None


def role_model(cfg: Any, field: str, policy_model: Any = None) -> Any:
    """The smolagents Model for a role's config (`cfg.model`, `cfg.api_base`, `cfg.api_key_env`); `field` is the
    config's path in team.yaml (roles.reviewer), for errors. 'policy' gives `policy_model` (None without one)."""
    if cfg.model == POLICY:
        return policy_model
    problem = litellm_problem(cfg.model)
    if problem:
        raise RoleModelError(f"{field}.model: {problem}")
    api_key = None
    if cfg.api_key_env:
        api_key = os.environ.get(cfg.api_key_env)
        if not api_key:
            raise RoleModelError(f"{field}.api_key_env: environment variable {cfg.api_key_env} is not set")
    from smolagents import LiteLLMModel

    return LiteLLMModel(model_id=cfg.model, api_base=cfg.api_base, api_key=api_key, max_tokens=TURN_MAX_TOKENS)


def _import_litellm():
    for name, value in _OFFLINE.items():
        os.environ.setdefault(name, value)
    import litellm

    litellm.suppress_debug_info = True  # else it prints help banners to stdout on every error
    return litellm
