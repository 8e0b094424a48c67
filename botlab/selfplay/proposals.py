"""A proposal as the step carries it from the proposer's reply to the buffers, and the proposer's second turn.

`read_proposal` turns a reply into a Proposal (parsed, or why not); `revision_messages` builds, for a proposal that
failed to parse or to run, the conversation that gives the proposer the verdict and asks once more
(roles.proposer.revise; the proposer agent's RunCandidate tool hands it over, agents/role_agent.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from botlab.agents.proposer import Proposer
from botlab.engines import Engine
from botlab.selfplay.generation import Prompt, Sample
from botlab.tasks import Triplet


@dataclass
class Proposal:
    sample: Sample
    parse_ok: bool
    reason: str | None
    triplet: Triplet | None = None
    valid: bool = False
    admitted: bool = False
    heldout: bool = False  # admitted, but set aside for the held-out split (selfplay/heldout.py): never trained on
    solve_rate: float | None = None
    detail: str = ""  # what the parser or the sandbox said about a failure
    prompt: Prompt | None = None  # what it answered (a revision turn's conversation starts from it)
    revision: bool = False  # the second turn of a failed proposal (roles.proposer.revise)


def read_proposal(proposer: Proposer, prompt: Prompt, program: Triplet | None, sample: Sample,
                  revision: bool = False) -> Proposal:
    """The proposal in a reply to `prompt`; for induction `program` is the probed program."""
    task_type = prompt[0]
    parsed = proposer.parse(task_type, sample.text, program=program and program.program)
    proposal = Proposal(sample, parsed.ok, parsed.reason, detail=parsed.detail, prompt=prompt,
                        revision=revision)
    if parsed.ok:
        if task_type == "induction":
            proposal.triplet = Triplet(program.program, parsed.inputs, [], parsed.message, task_type)
        else:
            proposal.triplet = Triplet(parsed.program, parsed.inputs[:1], [], "", task_type)
    return proposal


def revision_messages(proposer: Proposer, engine: Engine, proposal: Proposal, budget: int) -> list[dict] | None:
    """The conversation asking a failed first-turn proposal once more (its reply, then the verdict); None for a valid
    proposal, a revision, or a conversation that would leave no room for a reply within max_model_len."""
    if proposal.valid or proposal.revision or proposal.prompt is None:
        return None
    again = proposer.revision_messages(proposal.prompt[1], proposal.sample.text, proposal.reason or "invalid",
                                       proposal.detail)
    return again if len(engine.chat_prompt_ids(again)) + budget < engine.max_model_len else None
