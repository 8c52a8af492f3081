"""Plan of the fast scoring path (pure, no model): which tokens of each row come from which cache.

Every (request, block, alias) is a row: ids = (prefix + block + answer)[-max_context:], whose last
`n_alias` tokens are scored. The tokens before the one that predicts the first alias token (the
row's context) may come from a key/value cache, provided they are a prefix of a sequence encoded
from position 0 (a root).

Roots are chosen so that the steps of one trajectory share one. Each request's real context
(prefix + first block) is a candidate, and a candidate that is a prefix of another joins the
other's root. One lexicographic sort finds them all: a sequence is a prefix of some candidate iff
it is a prefix of the candidate right after it in sorted order. A truncated row's positions are
shifted, so its own truncated context is a candidate as well. A row is then cached up to its
longest common prefix with its request's root; a row sharing nothing with it becomes a root of
its own, and a row with a single context token is left to score alone (nothing to cache).
Identical (root, cached length, remaining tokens) rows become one job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

RequestIds = tuple[Sequence[int], Sequence[Sequence[int]], Sequence[Sequence[int]], Sequence[int]]
"""(prefix, blocks, answers, alias_starts) of one ScoreRequest."""


@dataclass(frozen=True)
class Row:
    """One (request, block, alias) context to score."""

    slot: tuple[int, int, int]
    """(request, block, alias) indices."""
    ids: list[int]
    """(prefix + block + answer)[-max_context:]."""
    n_alias: int
    """The last n_alias ids are the scored alias tokens."""
    truncated: bool
    """The full sequence was longer than max_context (so positions are shifted)."""

    @property
    def context_len(self) -> int:
        """Tokens before the one whose logits predict the first alias token (cacheable)."""
        return len(self.ids) - self.n_alias - 1


@dataclass(frozen=True)
class Job:
    """One forward row: `cached` tokens of root `root` from its cache, then `suffix` run anew."""

    root: int
    cached: int
    suffix: tuple[int, ...]
    n_alias: int


@dataclass
class ScorePlan:
    """Roots to encode, jobs to run over their caches, and where each row's score comes from."""

    roots: list[list[int]]
    """Root token ids, cut to the longest cached length any job needs."""
    jobs: list[Job] = field(default_factory=list)
    job_of: dict[tuple[int, int, int], int] = field(default_factory=dict)
    """Row slot -> index of the job that scores it."""
    uncached: list[Row] = field(default_factory=list)
    """Rows with a single context token, scored alone."""


def score_rows(requests: Sequence[RequestIds], max_context: int) -> list[Row]:
    """Every (request, block, alias) row, left-truncated to `max_context` tokens."""
    rows = []
    for r, (prefix, blocks, answers, starts) in enumerate(requests):
        if len(answers) != len(starts):
            raise ValueError(
                f"request {r}: {len(answers)} answers but {len(starts)} alias starts; "
                "give one alias start per answer"
            )
        for b, block in enumerate(blocks):
            context = list(prefix) + list(block)
            for a, (answer, start) in enumerate(zip(answers, starts, strict=True)):
                ids, n = context + list(answer), len(answer) - start
                kept = ids[-max_context:]
                if n <= 0 or len(kept) <= n:
                    raise ValueError(
                        f"max_context {max_context} leaves no context before the {n} answer tokens"
                    )
                rows.append(Row((r, b, a), kept, n, len(ids) > max_context))
    return rows


def chain_roots(candidates: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """Group sequences into chains of prefixes: (roots, root index of each candidate).

    A candidate that is a prefix of another shares that one's root; the others are roots. Empty
    candidates get root -1.
    """
    order = sorted(range(len(candidates)), key=lambda i: list(candidates[i]))
    roots: list[list[int]] = []
    root_of = [-1] * len(candidates)
    after: list[int] = []
    after_root = -1
    for i in reversed(order):
        seq = list(candidates[i])
        if not seq:
            continue
        if after[: len(seq)] == seq:  # a prefix of the next candidate: same chain
            root_of[i] = after_root
        else:
            root_of[i] = len(roots)
            roots.append(seq)
        after, after_root = seq, root_of[i]
    return roots, root_of


def common_prefix(a: Sequence[int], b: Sequence[int], start: int = 0) -> int:
    """Length of the longest common prefix of a and b, given that the first `start` ids agree."""
    i, n = start, min(len(a), len(b))
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan_scoring(requests: Sequence[RequestIds], max_context: int) -> ScorePlan:
    """The roots and jobs that score every row of `requests` (see the module docstring)."""
    rows = score_rows(requests, max_context)
    anchors = [
        (list(prefix) + (list(blocks[0]) if blocks else []))[: max_context - 1]
        for prefix, blocks, _, _ in requests
    ]
    own = [row for row in rows if row.truncated]
    roots, root_of = chain_roots(anchors + [row.ids[: row.context_len] for row in own])
    own_root = {row.slot: root_of[len(anchors) + k] for k, row in enumerate(own)}
    plan = ScorePlan(roots)
    seen: dict[tuple, int] = {}
    for row in rows:
        root, cached = _place(row, requests, roots, root_of, own_root)
        if cached == 0 and row.context_len > 0:  # shares nothing with its root: a root of its own
            root, cached = len(roots), row.context_len
            roots.append(row.ids[:cached])
        if cached == 0:
            plan.uncached.append(row)
            continue
        key = (root, cached, tuple(row.ids[cached:]), row.n_alias)
        if key not in seen:
            seen[key] = len(plan.jobs)
            plan.jobs.append(Job(*key))
        plan.job_of[row.slot] = seen[key]
    need = [0] * len(roots)
    for job in plan.jobs:
        need[job.root] = max(need[job.root], job.cached)
    plan.roots = [root[:n] for root, n in zip(roots, need, strict=True)]
    return plan


def _place(
    row: Row,
    requests: Sequence[RequestIds],
    roots: list[list[int]],
    root_of: list[int],
    own_root: dict[tuple[int, int, int], int],
) -> tuple[int, int]:
    """(root, tokens of the row's context found in it); 0 tokens when it shares none."""
    if row.truncated:
        root = own_root[row.slot]
        return root, row.context_len if root >= 0 else 0
    r = row.slot[0]
    root = root_of[r]
    if root < 0:
        return root, 0
    # The row starts with its request's prefix, which its root starts with too.
    shared = common_prefix(row.ids, roots[root], start=len(requests[r][0]))
    return root, min(shared, row.context_len)
