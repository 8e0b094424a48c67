"""Reading the roles' answers: fenced blocks, the optional <think> section, and small code checks.

The answer format, shared by proposer and solver:

* The answer lives in fenced blocks (```python, ```input, ```output, ```message). Tags are case-insensitive and
  tolerant: `py`/`python3` mean python, `input_1`/`input 2` mean input, and an untagged (or `text`) block is given a
  kind by the role's parser (a block with a top-level `def` is code, anything else the kind the role expects).
* A `<think>...</think>` section is OPTIONAL. The answer is read from the blocks, so the tags carry nothing the
  parser needs; a small chat model (SmolLM2-135M) has never seen them and would spend many steps collecting format
  penalties before it learnt them (the original forced them by starting the assistant turn with "<think>" under a raw
  template; we use each model's own chat template). A model may reason in prose, or inside <think>. If it opens
  <think> it must close it ("unclosed_think"), and blocks inside the thoughts never count, so drafts there are safe.
* A block that is opened but never closed (the completion was cut off) is ignored; when the role then lacks a
  required block the reason is "unclosed_block" instead of the plain "no_..._block".

Nothing here runs model-written code: `ast.parse` and `tokenize` only read it.
"""

from __future__ import annotations

import ast
import io
import re
import textwrap
import tokenize
from dataclasses import dataclass

from botlab.agents.pyast import PARSE_ERRORS

_FENCE = "```"
_TAG_ALIASES = {"py": "python", "python3": "python", "text": "", "txt": "", "plaintext": ""}
_NUMBERED_TAG = re.compile(r"^(input|output|message|python)[\s_-]*\d*$")
# Anything bigger is not a program we want to parse in this process (the parser is recursive).
MAX_CODE_CHARS = 20_000


@dataclass
class Block:
    kind: str  # "python", "input", "output", "message", "" (untagged) or any other tag as written
    text: str  # the content, stripped of surrounding blank lines and trailing spaces


@dataclass
class Blocks:
    """The complete blocks of an answer, and whether a block was left open at the end."""

    blocks: list[Block]
    unclosed: bool = False

    def of_kind(self, kind: str) -> list[Block]:
        return [b for b in self.blocks if b.kind == kind]


def normalise_tag(tag: str) -> str:
    tag = tag.strip().lower()
    tag = _TAG_ALIASES.get(tag, tag)
    match = _NUMBERED_TAG.match(tag)
    return match.group(1) if match else tag


def answer_region(text: str) -> tuple[str, str | None]:
    """The part of a completion that holds the answer: the text after the last </think>, or all of it.

    Returns (region, reason); reason is "unclosed_think" when <think> is opened and never closed.
    """
    close = text.rfind("</think>")
    if close >= 0:
        return text[close + len("</think>") :], None
    if "<think>" in text:
        return "", "unclosed_think"
    return text, None


def split_blocks(text: str) -> Blocks:
    """Fenced blocks in order of appearance. A fence is a line starting with ``` (indentation allowed).
    Tolerated, as small models write them: a closing fence at the end of the last content line ("5```"), and a
    tagged fence inside a block ("```input" right after the code, the closing fence forgotten), which closes the
    block and opens the next."""
    blocks: list[Block] = []
    kind: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if kind is None:
            if stripped.startswith(_FENCE):
                kind, lines = normalise_tag(stripped[len(_FENCE) :]), []
            continue
        if stripped.startswith(_FENCE):
            blocks.append(Block(kind, _clean(lines)))
            tag = stripped[len(_FENCE) :].strip()
            kind, lines = (normalise_tag(tag), []) if tag else (None, [])
        elif stripped.endswith(_FENCE):
            lines.append(line.rstrip()[: -len(_FENCE)])
            blocks.append(Block(kind, _clean(lines)))
            kind = None
        else:
            lines.append(line)
    return Blocks(blocks, unclosed=kind is not None)


def _clean(lines: list[str]) -> str:
    """Content without trailing spaces, surrounding blank lines, or an indentation shared by all lines."""
    return textwrap.dedent("\n".join(line.rstrip() for line in lines)).strip("\n")


def defines_function(text: str) -> bool:
    return re.search(r"^(async\s+)?def\s+\w+\s*\(", text, re.MULTILINE) is not None


# --- code checks -----------------------------------------------------------------------------------------------------


class CodeProblem(Exception):
    """A program we cannot use; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_module(code: str) -> ast.Module:
    if len(code) > MAX_CODE_CHARS:
        raise CodeProblem("too_long", f"program has {len(code)} characters (limit {MAX_CODE_CHARS})")
    try:
        return ast.parse(code)
    except SyntaxError as e:
        raise CodeProblem("syntax_error", f"line {e.lineno}: {e.msg}") from None
    except PARSE_ERRORS as e:
        raise CodeProblem("syntax_error", f"cannot parse: {type(e).__name__}") from None


def entry_program(code: str) -> str:
    """Make `code` a program whose entry function is `f`, or raise CodeProblem.

    - A top-level `f` is the entry, whatever helpers sit beside it.
    - Otherwise a single top-level function is renamed to f (its own recursive calls included).
    - Several top-level functions and none named f: the entry is ambiguous ("multiple_functions").
    - Top-level test scaffolding the model often appends (`print(f(3))`, `assert ...`, `result = f(5)`, an
      `if __name__ == "__main__":` block) is dropped: it is not the task, and the sandbox runs module-level code.
    - Top-level functions, classes and assignments f never reaches are dropped, and so are definitions a later one
      of the same name replaces, and comments: a small model pads its program with variants it never calls, stray
      values (`input = 'Hello world'`) and comments it copies from one proposal to the next, which lengthens every
      prompt that shows it and hides duplicates from the reviewer (AZR's seeding strips comments and what follows
      the function for the same reason).
    """
    tree = parse_module(code)
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not functions:
        raise CodeProblem("no_function", "the program defines no top-level function")
    if any(fn.name == "f" for fn in functions):
        return _drop_comments(_drop_unreachable(_drop_scaffolding(code, tree, "f"), "f"))
    if len(functions) > 1:
        names = ", ".join(fn.name for fn in functions)
        raise CodeProblem("multiple_functions", f"several top-level functions ({names}) and none named f")
    entry = functions[0].name
    return _drop_comments(rename(_drop_scaffolding(code, tree, entry), entry, "f"))


def _drop_scaffolding(code: str, tree: ast.Module, entry: str) -> str:
    drop: set[int] = set()
    for i, node in enumerate(tree.body):
        docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        main_guard = isinstance(node, ast.If) and "__name__" in ast.dump(node.test)
        calls_entry = isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and _calls(node, entry)
        if (isinstance(node, (ast.Expr, ast.Assert)) and not docstring) or main_guard or calls_entry:
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return _without_lines(code, drop).rstrip() if drop else code


def _drop_unreachable(code: str, entry: str) -> str:
    tree = ast.parse(code)
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    values = (ast.Assign, ast.AnnAssign)
    all_definitions = [n for n in tree.body if isinstance(n, kinds)]
    definitions = {n.name: n for n in all_definitions}  # a name defined twice: the last definition is what runs
    assigned = [n for n in tree.body if isinstance(n, values)]
    # Names that other top-level code mentions (imports, decorators, loops) are used, as is f; a top-level value is
    # kept only when something kept reads it.
    outside = [name for n in tree.body if not isinstance(n, (*kinds, *values)) for name in _names(n)]
    reached, todo = set(), [entry, *outside]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        if name in definitions:
            todo += _free_names(definitions[name])
        todo += [read for n in assigned if name in _targets(n) for read in _names(n.value or ast.Pass())]
    kept_values = [n for n in assigned if reached & set(_targets(n))]
    mentioned = {*outside, *(name for n in kept_values for name in _names(n.value or ast.Pass()))}
    drop: set[int] = set()
    for node in all_definitions:
        shadowed = definitions[node.name] is not node and node.name not in mentioned
        if shadowed or node.name not in reached:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            drop.update(range(first, (node.end_lineno or node.lineno) + 1))
    for node in assigned:
        if node not in kept_values:
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return re.sub(r"\n{3,}", "\n\n", _without_lines(code, drop)).strip("\n") if drop else code


def _free_names(node: ast.AST) -> list[str]:
    """Names a definition reads from outside: for a function, not its parameters or its own local variables."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return _names(node)
    a = node.args
    local = {p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs, *(x for x in (a.vararg, a.kwarg) if x)]}
    local |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return [name for name in _names(node) if name not in local]


def _targets(node: ast.Assign | ast.AnnAssign) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [name for t in targets for name in _names(t)]


def _drop_comments(code: str) -> str:
    """The code without its comments; a line that held only a comment goes too. Strings are left alone."""
    try:
        comments = [t.start for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        return code
    if not comments:
        return code
    lines = code.splitlines()
    for row, col in comments:
        kept = lines[row - 1][:col].rstrip()
        lines[row - 1] = kept if kept else None
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line for line in lines if line is not None)).strip("\n")


def _without_lines(code: str, drop: set[int]) -> str:
    return "\n".join(line for n, line in enumerate(code.splitlines(), start=1) if n not in drop)


def _names(node: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def _calls(node: ast.AST, name: str) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name for n in ast.walk(node)
    )


def rename(code: str, old: str, new: str) -> str:
    """Rename the identifier `old` to `new` wherever it is a name token (never inside strings or comments)."""
    lines = code.splitlines(keepends=True)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return code
    # Right to left, so earlier columns stay valid while a line is edited.
    for tok in reversed(tokens):
        if tok.type == tokenize.NAME and tok.string == old:
            (row, col), (_, end) = tok.start, tok.end
            line = lines[row - 1]
            lines[row - 1] = line[:col] + new + line[end:]
    return "".join(lines)


def check_arguments(text: str, values_only: bool = False) -> tuple[str, str] | None:
    """None when `text` reads as the arguments of a call f(...), else (problem, detail) with problem "syntax" or
    "not_a_value" (`values_only`: every argument must be a written-out value, see `is_value`)."""
    tree, problem = _parse_expression(f"f({text}\n)", "arguments")
    if problem:
        return problem
    call = tree.body
    if values_only and not all(is_value(a) for a in [*call.args, *(k.value for k in call.keywords)]):
        return "not_a_value", "arguments must be values written out (literals), not expressions to compute"
    return None


def check_value(text: str) -> tuple[str, str] | None:
    """None when `text` is one value written out (see `is_value`), else (problem, detail) as in check_arguments."""
    tree, problem = _parse_expression(f"({text}\n)", "value")
    if problem:
        return problem
    if not is_value(tree.body):
        return "not_a_value", "the answer must be a value written out (a literal), not an expression to compute"
    return None


def _parse_expression(source: str, what: str) -> tuple[ast.Expression | None, tuple[str, str] | None]:
    if len(source) > MAX_CODE_CHARS:
        return None, ("syntax", f"{what} too long ({len(source)} characters)")
    try:
        return ast.parse(source, mode="eval"), None
    except SyntaxError as e:
        return None, ("syntax", f"{what} not valid Python: {e.msg}")
    except PARSE_ERRORS as e:
        return None, ("syntax", f"cannot parse the {what}: {type(e).__name__}")


# Calls that appear in canonical reprs: set(), frozenset({...}), range(0, 3), float('inf').
_VALUE_CALLS = {"set", "frozenset", "range", "float"}


def is_value(node: ast.AST) -> bool:
    """Is this expression a value written out, the way the sandbox writes outputs (constants, containers, the
    constructor calls above), rather than a computation?

    Solvers' answers must be: the sandbox evaluates them, so `(lambda s: s[::-1])('abc')` as a deduction answer, or
    `next(x for x in range(99) if f(x) == 7)` as abduction arguments, would let the sandbox do the solver's work.
    """
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(is_value(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and is_value(k) for k in node.keys) and all(is_value(v) for v in node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return is_value(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):  # complex numbers: 1+2j
        return all(isinstance(side, ast.Constant) and isinstance(side.value, (int, float, complex))
                   for side in (_unsigned(node.left), _unsigned(node.right)))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _VALUE_CALLS:
        return not node.keywords and all(is_value(a) for a in node.args)
    return False


def _unsigned(node: ast.AST) -> ast.AST:
    return node.operand if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) else node
