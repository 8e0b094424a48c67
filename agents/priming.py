"""Primed replies (roles.*.prime_answer): the loop writes the opening of each answer part and the model fills it in.

A small model (SmolLM2-135M) rarely finds an answer format on its own; started inside the right block it answers in
format from step 1. A primed reply is a list of segments. The first segment's opening ends the prompt; each later
opening is written by the loop after the model reached the previous segment's stop string, and its tokens are
trained with a zero mask (the policy learns only from what it sampled).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    opening: str  # text the loop writes before the model continues
    stop: str  # the model's part ends here (the engine cuts it from the text, its tokens stay)
    closing: str | None = None  # what the parser reads in place of the stop; None: the stop itself
    max_tokens: int | None = None  # budget of a later segment; None: the role's max_new_tokens

    @property
    def parsed_closing(self) -> str:
        return self.stop if self.closing is None else self.closing
