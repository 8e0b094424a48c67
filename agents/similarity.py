"""When are two programs the same task? Fingerprints for exact duplicates, a similarity for near duplicates.

- `fingerprint(program)`: equal for programs that differ only in comments, docstrings, whitespace, quote style or
  redundant parentheses (a hash of the AST dump without positions). The loop stores it in tasks.fingerprint.
- `similarity(a, b)`: difflib's ratio (0..1) between the programs' canonical token sequences: the AST in pre-order
  (node types) with docstrings dropped and local names replaced by placeholders in order of appearance (builtins,
  attributes and constants kept). Renaming variables gives 1.0; changing one constant of a 50-token program about 0.98.
- `SimilarityIndex.pool(programs).nearest(program)`: the most similar programs of a buffer. difflib against a whole
  buffer (up to 16k programs) would take seconds per candidate, so MinHash signatures over token 4-grams shortlist
  the `shortlist` most overlapping programs (one numpy comparison against all) and only those get the exact ratio.
  It is a search heuristic: a program that is near by difflib's ratio but shares few 4-grams can be missed. Measured
  on 16k near-identical generated programs: every planted copy (changed constant, renamed variable, added or swapped
  line; ratio >= 0.9) was found, at 10-15 ms per candidate. Features cost 1-3 ms per new program, once (cached),
  so a process that starts with a full 16k buffer spends 20-40 s on its first review.

Nothing here runs the programs; `ast` only reads them.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import hashlib
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np

from botlab.agents.pyast import is_docstring, parse_or_none

_KEEP_NAMES = set(dir(builtins)) | {"f", "self", "cls"}
_SHINGLE = 4
_PERMUTATIONS = 64
# Hash family (a*x + b) mod 2**64 with odd a: a bijection, so each row is a permutation for MinHash.
# Fixed seed: verdicts must not change between runs.
_rng = np.random.default_rng(20240501)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_A = _rng.integers(0, 2**63, size=_PERMUTATIONS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_B = _rng.integers(0, 2**63, size=_PERMUTATIONS, dtype=np.uint64)


def _parse(program: str) -> ast.Module | None:
    tree = parse_or_none(program)
    if tree is None:
        return None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and is_docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]
    return tree


def fingerprint(program: str) -> str:
    """A short hex digest, equal for programs that differ only in comments, docstrings and formatting."""
    return _fingerprint(program, _parse(program))


def _fingerprint(program: str, tree: ast.Module | None) -> str:
    text = ast.dump(tree, include_attributes=False) if tree else "raw:" + " ".join(program.split())
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def canonical_tokens(program: str) -> tuple[str, ...]:
    """The AST in pre-order: node types, with local names as placeholders and constants/attributes as written."""
    return _tokens(program, _parse(program))


def _tokens(program: str, tree: ast.Module | None) -> tuple[str, ...]:
    if tree is None:
        return tuple(program.split())
    out: list[str] = []
    names: dict[str, str] = {}

    def name(text: str) -> str:
        return text if text in _KEEP_NAMES else names.setdefault(text, f"v{len(names)}")

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.expr_context):
            return
        out.append(type(node).__name__)
        if isinstance(node, ast.Name):
            out.append(name(node.id))
        elif isinstance(node, (ast.arg, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(name(getattr(node, "arg", None) or node.name))
        elif isinstance(node, ast.Attribute):
            out.append("." + node.attr)
        elif isinstance(node, ast.Constant):
            out.append(repr(node.value)[:40])
        for child in ast.iter_child_nodes(node):
            visit(child)

    try:
        visit(tree)
    except RecursionError:
        return tuple(program.split())
    return tuple(out)


def token_ratio(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def similarity(a: str, b: str) -> float:
    return token_ratio(canonical_tokens(a), canonical_tokens(b))


def _signature(tokens: tuple[str, ...]) -> np.ndarray:
    """MinHash of the token 4-grams. Token hashes are crc32 (stable across processes, unlike hash())."""
    ids = np.array([_token_hash(t) for t in tokens] or [0], dtype=np.uint64)
    grams = ids[: max(1, len(ids) - _SHINGLE + 1)].copy()
    for k in range(1, min(_SHINGLE, len(ids))):  # polynomial rolling combination of each window, wrapping
        grams = grams * _MIX + ids[k : k + len(grams)]
    return (np.outer(_A, grams) + _B[:, None]).min(axis=1)  # wraps mod 2**64 by design


@cache
def _token_hash(token: str) -> int:
    return zlib.crc32(token.encode())


@dataclass(frozen=True)
class Features:
    fingerprint: str
    tokens: tuple[str, ...]
    signature: np.ndarray


class SimilarityIndex:
    """Features per program text, from one parse, cached across calls (buffers change a little per step)."""

    def __init__(self, shortlist: int = 16, max_cached: int = 100_000):
        self.shortlist = shortlist
        self.max_cached = max_cached
        self._cache: dict[str, Features] = {}

    def features(self, program: str) -> Features:
        hit = self._cache.get(program)
        if hit is None:
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            tree = _parse(program)
            tokens = _tokens(program, tree)
            hit = self._cache[program] = Features(_fingerprint(program, tree), tokens, _signature(tokens))
        return hit

    def pool(self, programs: list[str]) -> "Pool":
        """A fixed set of programs to search, prepared once for many queries."""
        return Pool(self, programs)


class Pool:
    def __init__(self, index: SimilarityIndex, programs: list[str]):
        self.index = index
        self.programs = programs
        features = [index.features(p) for p in programs]
        self.fingerprints = {f.fingerprint: i for i, f in reversed(list(enumerate(features)))}  # first occurrence
        self.tokens = [f.tokens for f in features]
        empty = np.empty((0, _PERMUTATIONS), np.uint64)
        self.signatures = np.stack([f.signature for f in features]) if features else empty

    def nearest(self, program: str, k: int | None = None, min_score: float = 0.0) -> list[tuple[float, int]]:
        """(similarity, index into the pool) of the most similar programs scoring at least `min_score`, best first."""
        if not self.programs:
            return []
        mine = self.index.features(program)
        tokens, signature = mine.tokens, mine.signature
        if len(self.programs) > self.index.shortlist:
            overlap = (self.signatures == signature).sum(axis=1)
            order = [int(i) for i in np.argsort(-overlap, kind="stable")[: self.index.shortlist]]
        else:
            order = list(range(len(self.programs)))
        matcher = difflib.SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(tokens)  # the candidate's side is indexed once
        scored = []
        for i in order:
            matcher.set_seq1(self.tokens[i])
            # Cheap upper bounds first: most shortlisted programs are not near enough.
            if matcher.real_quick_ratio() >= min_score and matcher.quick_ratio() >= min_score:
                score = matcher.ratio()
                if score >= min_score:
                    scored.append((score, i))
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        return scored[:k] if k else scored
