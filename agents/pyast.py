"""Reading model-written Python with `ast` (which only reads it, never runs it): what parsing such text can raise,
the node test the reviewer's rules and the similarity measure share, and what makes two inputs the same."""

from __future__ import annotations

import ast

# What ast.parse raises on text a model wrote: bad syntax, a null byte (ValueError), nesting too deep for the
# parser (RecursionError, MemoryError).
PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)


def parse_or_none(source: str, mode: str = "exec") -> ast.AST | None:
    """The tree of `source`, or None when it does not parse."""
    try:
        return ast.parse(source, mode=mode)
    except PARSE_ERRORS:
        return None


def input_key(arguments: str) -> str:
    """The arguments of a call f(...) up to formatting ("[1,2]" and "[1, 2]" are one input); nothing is evaluated.
    Text that does not parse is its own key."""
    tree = parse_or_none(f"f({arguments}\n)", mode="eval")
    return ast.dump(tree) if tree is not None else arguments.strip()


def is_docstring(node: ast.AST) -> bool:
    """A statement that is only a string (a docstring when it opens a body)."""
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
