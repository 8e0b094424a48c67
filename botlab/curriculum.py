"""The curriculum: what human feedback may change in how the team works, and nothing else.

The state lives in the store (kv key "curriculum"); the self-play loop reads it at the start of every step.
Feedback changes it only through the closed set of directives below. Recipients, secrets, executor limits and
paths are not in that set, so no message can touch them.

Simple commands work without a model (`/focus abduction`, `/weights deduction=2`, `/pause`, ...); plain words are
turned into directives by the reporter model (validated with `validate_directives`) or, without one (or when it
fails), by the phrase grammar in `botlab.phrases`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from botlab.config import TASK_TYPES, TaskType
from botlab.store import Store

KV_KEY = "curriculum"
FOCUS_WEIGHT = 3.0  # "/focus abduction": that type's weight is raised to at least this; the others keep theirs
MAX_FOCUS = 8
MAX_RULES = 10


class Curriculum(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_weights: dict[TaskType, float] = Field(
        default_factory=lambda: {"deduction": 1.0, "abduction": 1.0, "induction": 1.0},
        description="relative share of proposals and solver tasks per type; 0 switches a type off",
    )
    focus: list[str] = Field(default_factory=list, description="topics/keywords the proposer is asked to work on")
    difficulty: int = Field(0, ge=-3, le=3, description="harder (+) / easier (-) nudges for the proposer")
    type_difficulty: dict[TaskType, int] = Field(
        default_factory=dict, description="per task type, added to `difficulty` (\"deduction is too easy\")"
    )
    reviewer_rules: list[str] = Field(default_factory=list, description="extra rules for the reviewer")
    paused: bool = False

    def difficulty_for(self, task_type: TaskType) -> int:
        """The difficulty nudge the proposer gets for this task type (-3 .. 3)."""
        return max(-3, min(3, self.difficulty + self.type_difficulty.get(task_type, 0)))

    @property
    def topics(self) -> list[str]:
        """The focus topics that are not task types (a focused task type shows in its weight instead)."""
        return [f for f in self.focus if f.lower() not in TASK_TYPES]


def load_curriculum(store: Store) -> Curriculum:
    raw = store.get(KV_KEY)
    return Curriculum.model_validate(raw) if raw else Curriculum()


def save_curriculum(store: Store, curriculum: Curriculum) -> None:
    store.put(KV_KEY, curriculum.model_dump())


# --- directives: the closed set -------------------------------------------------------------------------------------


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if not text:
        raise ValueError("must not be empty")
    if len(text) > limit:
        raise ValueError(f"must be at most {limit} characters")
    return text


class _Directive(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SetWeights(_Directive):
    kind: Literal["weights"] = "weights"
    weights: dict[TaskType, Annotated[float, Field(ge=0, le=10)]] = Field(min_length=1)


class Focus(_Directive):
    kind: Literal["focus"] = "focus"
    topics: list[str] = Field(min_length=1, max_length=MAX_FOCUS)

    @field_validator("topics")
    @classmethod
    def _short_topics(cls, topics: list[str]) -> list[str]:
        return [_one_line(t, 60) for t in topics]


class ClearFocus(_Directive):
    kind: Literal["clear_focus"] = "clear_focus"


class Harder(_Directive):
    kind: Literal["harder"] = "harder"
    task_type: TaskType | None = Field(None, description="only this task type; None: all of them")


class Easier(_Directive):
    kind: Literal["easier"] = "easier"
    task_type: TaskType | None = Field(None, description="only this task type; None: all of them")


class ReviewerRule(_Directive):
    kind: Literal["reviewer_rule"] = "reviewer_rule"
    rule: str

    @field_validator("rule")
    @classmethod
    def _short_rule(cls, rule: str) -> str:
        return _one_line(rule, 200)


class ClearReviewerRules(_Directive):
    kind: Literal["clear_reviewer_rules"] = "clear_reviewer_rules"


class Pause(_Directive):
    kind: Literal["pause"] = "pause"


class Resume(_Directive):
    kind: Literal["resume"] = "resume"


class DigestNow(_Directive):
    kind: Literal["digest"] = "digest"


Directive = Annotated[
    Union[SetWeights, Focus, ClearFocus, Harder, Easier, ReviewerRule, ClearReviewerRules, Pause, Resume, DigestNow],
    Field(discriminator="kind"),
]
_directive = TypeAdapter(Directive)
_FIELDS = {model.model_fields["kind"].default: set(model.model_fields) for model in _Directive.__subclasses__()}
DIRECTIVE_KINDS = tuple(_FIELDS)


def validate_directives(items: list[Any]) -> tuple[list[Directive], list[str]]:
    """Keep the items that are valid directives; say why each other one was ignored."""
    valid: list[Directive] = []
    problems: list[str] = []
    for item in items:
        item = _known_fields(item, problems)
        try:
            valid.append(_directive.validate_python(item))
        except ValidationError as err:
            kind = item.get("kind") if isinstance(item, dict) else None
            if kind not in DIRECTIVE_KINDS:
                problems.append(f"ignored {_short(item)}: not something feedback can change")
            else:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"][1:]) or kind
                problems.append(f"ignored {kind}: {where} {first['msg']}")
    return valid, problems


def _known_fields(item: Any, problems: list[str]) -> Any:
    """Drop fields a directive kind does not have (models add some), and say so."""
    if not isinstance(item, dict) or item.get("kind") not in _FIELDS:
        return item
    extra = sorted(set(item) - _FIELDS[item["kind"]])
    if extra:
        problems.append(f"ignored {', '.join(map(str, extra))} of {item['kind']}: not something feedback can change")
    return {k: v for k, v in item.items() if k not in extra}


def _short(item: Any, limit: int = 60) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- applying directives ---------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:g}"


def apply_directive(curriculum: Curriculum, directive: Directive) -> tuple[Curriculum, str]:
    """The curriculum after the directive, and what changed in words ('' when nothing did)."""
    c = curriculum.model_copy(deep=True)
    match directive:
        case SetWeights(weights=weights):
            new = dict(c.task_weights) | dict(weights)
            if not any(new.get(t, 0) > 0 for t in TASK_TYPES):
                return curriculum, "ignored weights: every task type would be switched off"
            changed = [f"{t} {_fmt(c.task_weights.get(t, 0))} -> {_fmt(new[t])}"
                       for t in TASK_TYPES if new.get(t) != c.task_weights.get(t)]
            c.task_weights = new
            return c, ("task weights " + ", ".join(changed)) if changed else ""
        case Focus(topics=topics):
            known, added = {f.lower() for f in c.focus}, []
            for topic in topics:
                topic = topic.lower() if topic.lower() in TASK_TYPES else topic
                if topic.lower() not in known:
                    known.add(topic.lower())
                    added.append(topic)
            c.focus = (c.focus + added)[-MAX_FOCUS:]
            # A focused task type gets a larger share; the other types keep their weights.
            raised = {t: FOCUS_WEIGHT for t in TASK_TYPES if t in {x.lower() for x in topics}
                      and c.task_weights.get(t, 1.0) < FOCUS_WEIGHT}
            said = [f"focus on {', '.join(added)}"] if added else []
            if raised:
                c, weights = apply_directive(c, SetWeights(weights=raised))
                said.append(weights)
            return c, "; ".join(said)
        case ClearFocus():
            c.focus = []
            return c, "focus topics cleared" if curriculum.focus else ""
        case Harder(task_type=None) | Easier(task_type=None):
            step = 1 if isinstance(directive, Harder) else -1
            c.difficulty = max(-3, min(3, c.difficulty + step))
            if c.difficulty == curriculum.difficulty:
                return c, ""
            return c, f"difficulty {curriculum.difficulty:+d} -> {c.difficulty:+d}"
        case Harder(task_type=t) | Easier(task_type=t):
            step = 1 if isinstance(directive, Harder) else -1
            before = c.difficulty_for(t)
            after = max(-3, min(3, before + step))
            if after == before:
                return c, ""
            c.type_difficulty = dict(c.type_difficulty) | {t: after - c.difficulty}
            return c, f"{t} difficulty {before:+d} -> {after:+d}"
        case ReviewerRule(rule=rule):
            if rule in c.reviewer_rules:
                return c, ""
            c.reviewer_rules = (c.reviewer_rules + [rule])[-MAX_RULES:]
            return c, f"reviewer rule added: {rule}"
        case ClearReviewerRules():
            c.reviewer_rules = []
            return c, "reviewer rules cleared" if curriculum.reviewer_rules else ""
        case Pause():
            c.paused = True
            return c, "" if curriculum.paused else "training paused"
        case Resume():
            c.paused = False
            return c, "training resumed" if curriculum.paused else ""
        case DigestNow():
            return c, "a digest will be sent now"
    raise TypeError(f"unknown directive {directive!r}")


# --- simple commands -------------------------------------------------------------------------------------------------

COMMANDS = ("focus", "unfocus", "weights", "harder", "easier", "rule", "pause", "resume", "digest")
HELP = (
    "/focus abduction (or a topic: /focus string manipulation), /unfocus, /weights deduction=2 induction=0.5, "
    "/harder, /easier, /rule <a rule for the reviewer>, /rule clear, /pause, /resume, /digest; "
    "a message that starts with /status gets the short status, with /ask <question> the model's answer (Nostr, if on)"
)
# A command starts a line or follows whitespace: "/pause" or "thanks /harder". Unknown "/words" are reported.
_COMMAND_START = re.compile(r"(?:(?<=\s)|^)/([A-Za-z]+)\b")


@dataclass
class ParsedFeedback:
    directives: list[Directive] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    plain_words: str = ""  # the text that is not a command, for the model (or the keyword reader)


def parse_commands(text: str) -> ParsedFeedback:
    """Split feedback into slash commands (parsed here, no model needed) and plain words."""
    out = ParsedFeedback()
    starts = list(_COMMAND_START.finditer(text))
    plain = [text[: starts[0].start()] if starts else text]
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        name = match.group(1).lower()
        # A command's arguments run to the end of its line; later lines are plain words again.
        rest = text[match.end(): end]
        args, newline, after = rest.partition("\n")
        plain.append(after if newline else "")
        if name not in COMMANDS:
            out.problems.append(f"/{name} is not a command (commands: {HELP})")
            continue
        try:
            out.directives.extend(_command(name, args.strip()))
        except ValueError as err:
            out.problems.append(f"/{name}: {err}")
    out.plain_words = " ".join(" ".join(plain).split())
    return out


def _command(name: str, args: str) -> list[Directive]:
    no_args = {"harder": Harder, "easier": Easier, "pause": Pause, "resume": Resume, "digest": DigestNow,
               "unfocus": ClearFocus}
    if name in no_args:
        return [no_args[name]()]
    if name == "focus":
        return _focus(args)
    if name == "weights":
        return [_weights(args)]
    if name == "rule":
        if not args:
            raise ValueError("give the rule after /rule, or /rule clear")
        return [ClearReviewerRules()] if args.lower() == "clear" else [_checked(ReviewerRule, rule=args)]
    raise AssertionError(name)


def _checked(model: type[BaseModel], **values: Any) -> Any:
    try:
        return model(**values)
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"{'.'.join(str(p) for p in first['loc']) or 'value'} {first['msg']}") from None


def _focus(args: str) -> list[Directive]:
    parts = [p.strip() for p in re.split(r"[,;]| and ", args) if p.strip()]
    if not parts:
        raise ValueError("say what to focus on, e.g. /focus abduction or /focus string manipulation")
    if len(parts) == 1 and parts[0].lower() == "clear":
        return [ClearFocus()]
    return [_checked(Focus, topics=parts)]


def _weights(args: str) -> SetWeights:
    pairs = [p for p in re.split(r"[\s,;]+", args) if p]
    if not pairs:
        raise ValueError("give type=weight pairs, e.g. /weights deduction=2 abduction=0.5")
    weights: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.replace(":", "=").partition("=")
        if not sep or name.lower() not in TASK_TYPES:
            raise ValueError(f"{pair!r} is not type=weight with a type of {', '.join(TASK_TYPES)}")
        try:
            weights[name.lower()] = float(value)
        except ValueError:
            raise ValueError(f"{pair!r}: {value!r} is not a number") from None
    return _checked(SetWeights, weights=weights)
