"""Plain-word feedback without a model: a small phrase grammar, documented in docs/feedback.md.

A message is cut into clauses (at . ! ? ; newlines, commas, "and", "but"); each clause is matched against the
phrases below. A clause that matches nothing and has no steering word in it ("great work!") is small talk and
is left alone; one that has a steering word but no known form, or asks two opposite things, becomes a question
back to the sender instead of a guess.

The phrases, with examples, are listed in docs/feedback.md; tests/test_feedback_phrases.py holds a table of
replies and what each must do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from botlab.config import TASK_TYPES
from botlab.curriculum import (
    ClearFocus, Curriculum, DigestNow, Directive, Easier, Focus, Harder, Pause, Resume, ReviewerRule, SetWeights,
)

MAX_WEIGHT = 10.0
EXAMPLES = '"focus on abduction", "deduction is too easy", "less induction", "pause", or a command like /weights'


@dataclass
class Reading:
    directives: list[Directive] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)


# --- words ------------------------------------------------------------------------------------------------------------

_TYPE_WORDS = {"deduction": "deduction", "deductive": "deduction", "deductions": "deduction",
               "abduction": "abduction", "abductive": "abduction", "abductions": "abduction",
               "induction": "induction", "inductive": "induction", "inductions": "induction"}
_TYPE = r"(?:deduct|abduct|induct)(?:ion|ions|ive)"
# "deduction and abduction", "deduction, abduction or induction": one subject, joined with "+" before clauses are cut
# ("abduction, deduction is too easy" stays two clauses).
_TYPE_LIST = re.compile(rf"\b{_TYPE}(?:\s*,\s*{_TYPE})*\s*(?:\band\b|&|\bor\b|/)\s*{_TYPE}\b", re.I)
_NOUN = r"(?:tasks?|problems?|ones|programs?|puzzles?|questions?|exercises?|functions?|examples?|stuff)"
_EASY = r"(?:easy|simple|trivial|basic|boring)"
_HARD = r"(?:hard|difficult|tough|challenging|complex|complicated)"
_HARDER = r"(?:harder|tougher|more (?:difficult|challenging|complex|complicated))"
_EASIER = r"(?:easier|simpler|less (?:difficult|challenging|complex|complicated))"
_COPULA = r"(?:is|are|was|were|seem|seems|seemed|look|looks|feel|feels|get|gets|got|getting|became|become|'s|'re)"
_DEGREE = (r"(?:(?:way|far|much|a bit|a little|a lot|still|now|already|getting|rather|quite|kind of|kinda|slightly"
           r"|somewhat|really|all)\s+)*")
_GENERIC = {"", "it", "this", "that", "they", "them", "these", "those", "everything", "all", "all of them",
            "all of it", "things", "overall", "in general", "the curriculum", "training", "the training", "the run",
            "all types", "all task types", "every type", "each type"}
# A clause with one of these words is steering; without, it is small talk.
_STEERING = re.compile(
    rf"\b(?:{_TYPE}|easy|easier|simple|simpler|trivial|hard|harder|difficult|difficulty|tough|tougher|challenging"
    r"|focus|focusing|concentrate|more|less|fewer|weights?|pause|stop|resume|continue|unpause|digest|report|rule"
    r"|reject|avoid|only|drop|skip|disable)\b", re.I)
_NEGATION = re.compile(r"\b(?:not|don'?t|do not|never|no need to|doesn'?t|isn'?t|aren'?t)\b", re.I)
_FILLER = re.compile(
    r"^(?:(?:ok(?:ay)?|so|also|then|now|maybe|perhaps|and|but|please|pls|kindly|hey|hi|i think|i'd like(?: you)? to"
    r"|i would like(?: you)? to|i want(?: you)? to|could you|can you|would you|let'?s|try to|you should|we should"
    r"|you could|you can|you may|go ahead and|for now|from now on|i want|we want|i'd like|i would like|give me"
    r"|give us|let'?s have|let'?s do|do)\b[\s,:]*)+"
    r"|(?:[\s,]*\b(?:please|pls|thanks|thank you|for now|from now on|for a while|instead|again|anymore|any more"
    r"|though|as well|too|at once|at the same time|right now|now|at the moment|lately|these days|currently"
    r"|for (?:it|the model|him|her|them|us))\b)+$", re.I)


def _clean(text: str) -> str:
    text = " ".join(text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"').split())
    previous = None
    while previous != text:
        previous, text = text, _FILLER.sub("", text).strip(" ,:-\"'")
    return text


def _types(words: str) -> list[str] | None:
    """The task types a subject or object names ("deduction+abduction tasks"), or None when it names other things."""
    words = re.sub(rf"^(?:the|these|those|all|all the|new)\s+|\s+{_NOUN}$", "", words.strip(), flags=re.I).strip()
    found = [_TYPE_WORDS.get(w.lower()) for w in words.split("+") if w]
    return found if found and all(found) else None


def _generic(words: str) -> bool:
    words = re.sub(rf"\b(?:the|all|of|new|current)\b|\b{_NOUN}\b", " ", words.lower())
    return " ".join(words.split()) in _GENERIC


# --- clauses ----------------------------------------------------------------------------------------------------------


@dataclass
class _Clause:
    text: str  # as written, for rules and questions
    directives: list[Directive] = field(default_factory=list)
    weights: dict[str, Callable[[float], float]] = field(default_factory=dict)  # type -> new weight from old
    question: str = ""
    lists: bool = False  # a focus clause: bare words after it ("recursion, strings and lists") are more topics
    pronoun: bool = False  # "make it easier": "it" may be the task type named just before


def _difficulty(clause: _Clause, subject: str, harder: bool) -> _Clause:
    make = Harder if harder else Easier
    subject = subject.strip(" :-,")
    types = _types(subject)
    if types:
        clause.directives = [make(task_type=t) for t in types]
    elif _generic(subject):
        clause.directives = [make()]
        clause.pronoun = subject.strip().lower() in ("it", "they", "them")
    else:
        clause.question = (f'"{clause.text}": difficulty changes for all tasks ("the tasks are too easy") or for one '
                           f"task type ({', '.join(TASK_TYPES)}), not for \"{subject}\"; which did you mean?")
    return clause


def _weights(clause: _Clause, objects: str, change: Callable[[float], float], what: str) -> _Clause:
    types = _types(objects)
    if types:
        clause.weights = {t: change for t in types}
    else:
        topic = re.sub(r"^(?:focus(?:ing)? on|making|proposing|doing)\s+", "", objects, flags=re.I)
        instead = f'"focus on {topic}"' if change(1.0) > 1.0 else '"stop focusing" (clears the focus topics)'
        clause.question = (f'"{clause.text}": only task types ({", ".join(TASK_TYPES)}) have {what}; for a topic '
                           f'say {instead} or give the reviewer a rule ("rule: reject {topic}")')
    return clause


def _focus(clause: _Clause, objects: str) -> _Clause:
    items = [i.strip() for i in re.split(r",|\band\b|&|\+", objects, flags=re.I) if i.strip()]
    topics = []
    for item in items:
        item = re.sub(rf"^(?:the|more)\s+|\s+{_NOUN}$", "", item, flags=re.I).strip()
        topics.append(_TYPE_WORDS.get(item.lower(), item))
    if not topics or any(len(t) > 60 or len(t.split()) > 6 for t in topics):
        clause.question = f'"{clause.text}": which topic or task type should the team focus on?'
    else:
        clause.directives, clause.lists = [Focus(topics=topics)], True
    return clause


def _only(clause: _Clause, objects: str) -> _Clause | None:
    types = _types(objects)
    if not types:
        return None  # "just keep going": not about task types
    clause.weights = {t: (lambda w: max(w, 1.0)) if t in types else (lambda w: 0.0) for t in TASK_TYPES}
    return clause


def _set_weight(clause: _Clause, task_type: str, value: str) -> _Clause:
    number = float(value)
    if number > MAX_WEIGHT:
        clause.question = f'"{clause.text}": weights go from 0 to {MAX_WEIGHT:g}'
    else:
        clause.weights = {_TYPE_WORDS[task_type.lower()]: lambda w: number}
    return clause


def _stop(clause: _Clause, objects: str, topic_rule: bool = False) -> _Clause:
    if re.fullmatch(r"(?:the\s+)?(?:training|run|self-?play|everything|it|all|working)?(?:\s+(?:now|today|for (?:now|a "
                    r"while|today)))*", objects.strip(), re.I):
        clause.directives = [Pause()]
        return clause
    if topic_rule and not _types(objects):  # "no more string reversal tasks": the reviewer's rule, in those words
        clause.directives = [ReviewerRule(rule=clause.text[:200])]
        return clause
    return _weights(clause, objects, lambda w: 0.0, "weights to switch off")


def _double(weight: float) -> float:
    return min(MAX_WEIGHT, max(1.0, weight * 2))


def _halve(weight: float) -> float:
    return round(weight / 2, 3)


def _more(clause: _Clause, objects: str) -> _Clause:
    if not _types(objects) and re.search(rf"\s{_NOUN}$", objects, re.I):
        return _focus(clause, objects)  # "more string manipulation tasks": a topic
    return _weights(clause, objects, _double, "a share to raise")


def _rule(clause: _Clause, rule: str) -> _Clause:
    if _types(re.sub(r"^(?:all|any)\s+", "", rule, flags=re.I)):
        return _stop(clause, rule)
    clause.directives = [ReviewerRule(rule=clause.text[:200])]
    return clause


_N = r"(\d+(?:\.\d+)?)"
_TYPE_G = rf"({_TYPE})"
_PHRASES: list[tuple[re.Pattern, Callable[..., _Clause | None]]] = [(re.compile(p, re.I), f) for p, f in [
    # praise of a task type changes nothing ("deduction looks fine now")
    (rf"^(.+?)\s+{_COPULA}\s+{_DEGREE}(?:(?:going|doing|coming along)\s+)?(?:fine|good|great|ok|okay|right|perfect"
     r"|improving|better|working|well|nicely)\b.*$",
     lambda c, s: c),
    # difficulty
    (rf"^(.*?)\s*(?:{_COPULA}\s+)?{_DEGREE}not\s+{_HARD}\s+enough$", lambda c, s: _difficulty(c, s, True)),
    (rf"^(.*?)\s*(?:{_COPULA}\s+)?{_DEGREE}not\s+{_EASY}\s+enough$", lambda c, s: _difficulty(c, s, False)),
    (rf"^(.*?)\s*(?:{_COPULA}\s+)?{_DEGREE}too\s+{_EASY}$",
     lambda c, s: _difficulty(c, s, True)),
    (rf"^(.*?)\s*(?:{_COPULA}\s+)?{_DEGREE}too\s+{_HARD}$",
     lambda c, s: _difficulty(c, s, False)),
    (rf"^(.+?)\s+{_COPULA}\s+{_DEGREE}(?:trivial|boring)$", lambda c, s: _difficulty(c, s, True)),
    (rf"^(?:make|making|keep making)\s+(.*?)\s*{_DEGREE}{_HARDER}$", lambda c, s: _difficulty(c, s, True)),
    (rf"^(?:make|making|keep making)\s+(.*?)\s*{_DEGREE}{_EASIER}$", lambda c, s: _difficulty(c, s, False)),
    (rf"^(.*?)\s+(?:should|could|must|need to|needs to|ought to|can|may) be\s+{_DEGREE}{_HARDER}$",
     lambda c, s: _difficulty(c, s, True)),
    (rf"^(.*?)\s+(?:should|could|must|need to|needs to|ought to|can|may) be\s+{_DEGREE}{_EASIER}$",
     lambda c, s: _difficulty(c, s, False)),
    (rf"^{_DEGREE}{_HARDER}(?:\s+(.*?))?$", lambda c, s=None: _difficulty(c, s or "", True)),
    (rf"^{_DEGREE}{_EASIER}(?:\s+(.*?))?$", lambda c, s=None: _difficulty(c, s or "", False)),
    (r"^(?:ease off|ease up|tone (?:it|them) down|go easier)(?:\s+on\s+(.+?))?(?:\s+a (?:bit|little))?$",
     lambda c, s=None: _difficulty(c, s or "it", False)),  # after "abduction is too hard": abduction
    (rf"^(?:raise|increase|crank up|bump up|turn up|up)\s+(?:the\s+)?(?:(\S+)\s+)?difficulty$",
     lambda c, s=None: _difficulty(c, s or "", True)),
    (rf"^(?:lower|decrease|reduce|turn down|bring down)\s+(?:the\s+)?(?:(\S+)\s+)?difficulty$",
     lambda c, s=None: _difficulty(c, s or "", False)),
    # focus
    (r"^(?:clear|drop|forget|remove|reset)\s+(?:the\s+)?focus(?:\s+topics)?$|^no (?:more )?focus$|^unfocus$"
     r"|^stop focusing(?: on .*)?$", lambda c: _set(c, ClearFocus())),
    (r"^(?:(?:focus|concentrate|work|train)\s+(?:more\s+|mostly\s+|mainly\s+|only\s+)?on|prioriti[sz]e|emphasi[sz]e)"
     r"\s+(.+)$", _focus),
    # pause, resume, digest
    (r"^(?:pause|hold on|hold off|take a break|halt|freeze|stop)(?:\s+(?:training|the training|the run|self-?play"
     r"|everything|it|now|today|for (?:now|a while|today)|until (?:further notice|i say so|monday|tomorrow)))*$",
     lambda c: _set(c, Pause())),
    (r"^(?:just\s+)?(?:resume|unpause|continue|carry on|go on|start again|restart|keep going|keep training|go ahead"
     r"|back to work|start training again)(?:\s+(?:training|the training|the run|self-?play|now|please))*$",
     lambda c: _set(c, Resume())),
    (r"^(?:send|give|show|mail|email)\s+(?:me\s+|us\s+)?(?:a\s+|an\s+|the\s+)?(?:new\s+|fresh\s+)?(?:digest|update"
     r"|report|status|summary|progress report|progress update|status update)(?:\s+(?:now|today|asap))*$"
     r"|^(?:a |an |the )?(?:new |fresh )?(?:digest|update|progress report|status update)(?: now)?$"
     r"|^how(?:'s| is| are)\s+(?:it|things|training|the training|the run|it all) going$",
     lambda c: _set(c, DigestNow())),
    # weights
    (r"^(?:no more|no)\s+(?!need\b|worries\b|problem|rush\b|complaints?\b)(.+)$", lambda c, o: _stop(c, o, True)),
    (r"^(?:stop|drop|skip|disable|turn off|switch off|pause)\s+(?:doing\s+|with\s+)?(.+)$", _stop),
    (rf"^(?:only|just)\s+(.+?)(?:\s+{_NOUN})?$|^(.+?)\s+only$", lambda c, a=None, b=None: _only(c, a or b)),
    (r"^(?:put\s+)?more weight (?:on|to)\s+(.+)$|^give\s+(.+?)\s+more weight$",
     lambda c, a=None, b=None: _weights(c, a or b, _double, "a share to raise")),
    (r"^(?:put\s+)?less weight (?:on|to)\s+(.+)$|^give\s+(.+?)\s+less weight$",
     lambda c, a=None, b=None: _weights(c, a or b, _halve, "a share to lower")),
    (r"^more\s+(?:of\s+)?(?:the\s+)?(.+?)$|^(.+?)\s+more(?:\s+often)?$", lambda c, a=None, b=None: _more(c, a or b)),
    (rf"^(?:less|fewer|reduce|cut (?:back|down) on|lower)\s+(?:of\s+)?(?:the\s+)?(.+?)$|^(.+?)\s+less(?:\s+often)?$",
     lambda c, a=None, b=None: _weights(c, a or b, _halve, "a share to lower")),
    (rf"^(?:set\s+)?(?:the\s+)?{_TYPE_G}(?:\s+weight)?\s*(?:(?:to|=|:|at|weight)\s*)?{_N}$", _set_weight),
    (rf"^(?:set\s+)?(?:the\s+)?weight\s+(?:of|for)\s+{_TYPE_G}\s*(?:to|=|:|at)\s*{_N}$", _set_weight),
    (r"^(?:(?:back to|use|reset(?: the)?|set)\s+)?(?:equal|even|balanced?|the same)\s+(?:weights|mix|shares?)$"
     r"|^(?:reset|balance)\s+(?:the\s+)?(?:weights|task types|types|mix)$",
     lambda c: _set_all(c, 1.0)),
    # reviewer rules
    (r"^(?:(?:new|add(?: a)?)\s+)?rule:?\s+(.+)$", lambda c, r: _set(c, ReviewerRule(rule=r[:200]))),
    (r"^(?:reject|avoid|ban|forbid|do not accept|don't accept)\s+(.+)$", _rule),
]]


def _set(clause: _Clause, directive: Directive) -> _Clause:
    clause.directives = [directive]
    return clause


def _set_all(clause: _Clause, value: float) -> _Clause:
    clause.weights = {t: (lambda w: value) for t in TASK_TYPES}
    return clause


def _match(text: str) -> _Clause | None:
    """The clause read by the first phrase it matches; None when it matches none (or is negated)."""
    if _NEGATION.search(text) and not re.search(r"\benough$", text, re.I):
        return None  # "don't pause", "it's not too hard": see read_phrases
    for pattern, build in _PHRASES:
        found = pattern.match(text)
        if found:
            clause = build(_Clause(text), *found.groups())
            if clause is not None:
                return clause
    return None


_WHOLE = re.compile(r"^\s*(?:(?:new|add(?: a)?)\s+)?rule\b|^\s*(?:reject|avoid|ban|forbid)\b", re.I)


def _clauses(text: str) -> list[str]:
    text = _TYPE_LIST.sub(lambda m: "+".join(re.findall(_TYPE, m.group(0), re.I)), text)
    out = []
    for sentence in re.split(r"[!?;\n]+|\.(?!\d)", text):
        if _WHOLE.match(_clean(sentence)):  # a rule keeps its commas and "and"s
            out.append(_clean(sentence))
            continue
        out += [_clean(p) for p in re.split(r",|\s-\s|\b(?:and|but|however|although|though|while|&)\b", sentence,
                                            flags=re.I)]
    return [c for c in out if c]


# --- the message ------------------------------------------------------------------------------------------------------


def read_phrases(text: str, curriculum: Curriculum) -> Reading:
    """The directives a message asks for, and the questions to send back for what is unclear or contradictory."""
    reading = Reading()
    clauses: list[_Clause] = []
    named: list[str] = []  # the task types the previous clause named
    for part in _clauses(text):
        clause = _match(part)
        if clause is not None and clause.pronoun and named:  # "induction is too hard, make it easier"
            clause.directives = [type(d)(task_type=t) for d in clause.directives for t in named]
        named = [_TYPE_WORDS[w.lower()] for w in re.findall(_TYPE, part, re.I)]
        if clause is None:
            negated = bool(_NEGATION.search(part))
            if clauses and clauses[-1].lists and not negated and not _STEERING.search(part) and len(part.split()) <= 4:
                clauses[-1] = _focus(clauses[-1], ", ".join(  # "focus on recursion, strings and lists"
                    [t for d in clauses[-1].directives for t in d.topics] + [part]))
                continue
            if not _STEERING.search(part):
                continue  # small talk: "great work", "thanks"
            if negated and not re.search(_TYPE, part, re.I):
                continue  # "don't pause", "it's not too hard": keep things as they are
            clause = _Clause(part, question=f'I did not understand "{part}"; try e.g. {EXAMPLES}')
        clauses.append(clause)
    _drop_conflicts(clauses, reading)
    reading.directives += _weight_directive(clauses, curriculum)
    return reading


def _directions(clause: _Clause) -> dict[str, str]:
    """What a clause does, per thing it changes: ("difficulty deduction", "+"), ("pause", "+"), ..."""
    out: dict[str, str] = {}
    for d in clause.directives:
        if isinstance(d, (Harder, Easier)):
            out[f"difficulty {d.task_type or 'all'}"] = "+" if isinstance(d, Harder) else "-"
        elif isinstance(d, (Pause, Resume)):
            out["pause"] = "+" if isinstance(d, Pause) else "-"
        elif isinstance(d, Focus):
            out |= {f"weight {t}": "+" for t in d.topics if t in TASK_TYPES} | {"focus": "+"}
        elif isinstance(d, ClearFocus):
            out["focus"] = "-"
    for t, change in clause.weights.items():
        new = change(1.0)
        out[f"weight {t}"] = "+" if new > 1.0 else "-" if new < 1.0 else "="
    return out


def _drop_conflicts(clauses: list[_Clause], reading: Reading) -> None:
    """Clauses that ask opposite things of the same part are all dropped, with a question; the rest stand."""
    seen: dict[str, dict[str, _Clause]] = {}  # what -> direction -> first clause asking it
    bad: dict[int, _Clause] = {}
    for clause in clauses:
        for what, direction in _directions(clause).items():
            opposite = {"+": "-", "-": "+"}.get(direction)
            other = seen.get(what, {}).get(opposite)
            if other is not None and id(clause) not in bad:
                reading.questions.append(f'"{other.text}" and "{clause.text}" ask for opposite changes, so neither '
                                         "was applied: which one did you mean?")
                bad |= {id(other): other, id(clause): clause}
            seen.setdefault(what, {}).setdefault(direction, clause)
    for clause in clauses:
        if id(clause) in bad:
            clause.directives, clause.weights = [], {}
            continue
        if clause.question:
            reading.questions.append(clause.question)
        # Saying a thing twice ("too hard, make it easier") asks for it once.
        reading.directives += [d for d in clause.directives if d not in reading.directives]


def _weight_directive(clauses: list[_Clause], curriculum: Curriculum) -> list[Directive]:
    weights = {t: curriculum.task_weights.get(t, 1.0) for t in TASK_TYPES}
    new = dict(weights)
    for clause in clauses:
        for t, change in clause.weights.items():
            new[t] = change(new[t])
    changed = {t: w for t, w in new.items() if w != weights[t]}
    return [SetWeights(weights=changed)] if changed else []
