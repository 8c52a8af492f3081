"""Multi-turn rollouts, token in / token out: generate, parse the action, retrieve, insert, repeat.

All active rows generate together; a turn ends at the first `</search>` / `</answer>` or at EOS.
Searches of every row in a turn go to the retriever as one batch. Rows that finished leave the
batch. Ids are never re-derived from text: the trajectory holds exactly what the policy saw and
produced, and spans / masks are computed on those ids.

Segmentation contract (igsearch.tokens; igsearch.train.sft_data tokenises demonstrations alike):
  ids = encode_prompt(tok, prompt, style)  [tokenizer(prompt)["input_ids"], special tokens as the
        tokenizer adds them; add_special_tokens=False for 'chat' prompts, whose template has them]
      + gen_1 + block_1 + gen_2 + block_2 + ... + gen_n
  gen_i: the ids generated in turn i, cut right after the first stop string (an EOS is kept and ends
  the row). A turn that answers without generating EOS gets the tokenizer's EOS appended as part
  of gen_i (trained like a generated token, so the policy learns to stop, and TRL sees a finished
  completion), when the budgets leave room for it. block_i: each inserted text encoded ALONE by
  `encode_block` (add_special_tokens=False): `observation_text(...)` after a search
  (= wrap_observation(tags, render_docs(hits, max_obs_tokens, rendering), rendering)),
  `invalid_message(tags, rendering)` after an invalid turn, then `tags.final_turn_message` (its
  own block) once the turn budget is spent; `rendering` is cfg.rendering (docs/design.md,
  Renderings).

Turn budget: searches and invalid turns count against `max_turns`; when it is spent the final-turn
message is inserted and one last turn must answer (a search there is not run; the row ends with
answer None). Truncation: each turn may generate min(max_new_tokens_per_turn, room left under
max_response_tokens, room left under max_context_tokens) tokens; a turn cut by a budget (rather
than the per-turn cap), a block that does not fit, or no room left stops the row with
truncated=True. Documents longer than `max_obs_tokens` are cut by render_docs' token budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from igsearch.config import RolloutConfig
from igsearch.errors import RetrieverError
from igsearch.protocol import (
    Answer,
    Search,
    TagSet,
    get_tagset,
    invalid_message,
    normalize_query,
    parse_action,
    render_docs,
    wrap_observation,
)
from igsearch.retrieval.base import Hit
from igsearch.tokens import (
    cut_turn,
    decode_ids,
    encode_block,
    encode_prompt,
    policy_eos_ids,
    token_span,
)

__all__ = [  # decode_ids and the encoders stay importable from here
    "NullRetriever",
    "Segment",
    "Step",
    "Trajectory",
    "cut_turn",
    "decode_ids",
    "encode_block",
    "encode_prompt",
    "observation_text",
    "run_rollouts",
    "token_span",
]

if TYPE_CHECKING:
    from igsearch.retrieval.base import Retriever
    from igsearch.rollout.backends import Generator

# ----------------------------------------------------------------------------- blocks


def observation_text(
    tokenizer: Any,
    tags: TagSet,
    hits: Sequence[Hit],
    max_obs_tokens: int | None,
    rendering: str = "igsearch",
) -> str:
    """The inserted block for a search's hits in `rendering`: documents cut to `max_obs_tokens`,
    then wrapped."""
    count = lambda s: len(encode_block(tokenizer, s))  # noqa: E731
    docs = render_docs(hits, max_obs_tokens, count, rendering)
    return wrap_observation(tags, docs, rendering)


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Segment:
    """A run of response tokens: `kind` is "generated", "information", "invalid" or "final"."""

    kind: str
    start: int
    end: int

    @property
    def inserted(self) -> bool:
        return self.kind != "generated"


@dataclass
class Step:
    """One executed search. Spans are [start, end) in response-token coordinates."""

    query: str
    """The query as generated (the retriever got it white-space normalised)."""
    query_span: tuple[int, int]
    """Tokens of the query inside `<search>…</search>`, tags excluded."""
    info_span: tuple[int, int]
    """The inserted observation block (wrapping tags and new lines included)."""
    hits: list[Hit]
    """The retrieved documents with their scores, best first."""
    turn: int
    """Index of the turn (0-based) that issued the search."""

    @property
    def doc_ids(self) -> list[str]:
        return [h.id for h in self.hits]

    @property
    def titles(self) -> list[str]:
        return [h.title for h in self.hits]

    @property
    def texts(self) -> list[str]:
        return [h.text for h in self.hits]

    @property
    def scores(self) -> list[float]:
        return [h.score for h in self.hits]


@dataclass
class Trajectory:
    """One rollout: ids, loss mask (1 = generated, 0 = inserted), search steps and outcome."""

    prompt_ids: list[int]
    response_ids: list[int]
    loss_mask: list[int]
    steps: list[Step]
    answer: str | None
    """The final answer text, or None when the row ended without one."""
    num_turns: int
    """Generation turns taken (== len(actions))."""
    well_formed: bool
    """Ended with an answer, no invalid turn, not truncated."""
    hit_max_turns: bool
    """The turn budget was spent and the final-turn message inserted."""
    truncated: bool
    """Stopped by max_response_tokens or max_context_tokens."""
    actions: list[str] = field(default_factory=list)
    """Per turn: "search", "answer" or "invalid"."""
    segments: list[Segment] = field(default_factory=list)
    stop_reason: str = ""
    """"answer", "eos", "max_turns", "response_budget" or "context_budget"."""
    prompt: str | None = None

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids

    @property
    def num_searches(self) -> int:
        return len(self.steps)

    @property
    def num_invalid(self) -> int:
        return self.actions.count("invalid")


# ----------------------------------------------------------------------------- retrieval


class NullRetriever:
    """Answers every query with no documents: the "no retrieval" baseline."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        return [[] for _ in queries]


# ----------------------------------------------------------------------------- the loop


@dataclass
class _Row:
    """Mutable state of one rollout while it runs."""

    prompt_ids: list[int]
    prompt: str | None
    response: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    used: int = 0
    final_turn: bool = False
    hit_max_turns: bool = False
    done: bool = False
    stop_reason: str = ""
    answer: str | None = None
    truncated: bool = False
    pending: tuple[Search, tuple[int, int]] | None = None

    def room(self, cfg: RolloutConfig) -> tuple[int, str]:
        """Tokens that may still be appended, and the budget that binds."""
        resp = cfg.max_response_tokens - len(self.response)
        ctx = cfg.max_context_tokens - len(self.prompt_ids) - len(self.response)
        return (resp, "response_budget") if resp <= ctx else (ctx, "context_budget")

    def finish(self, reason: str, truncated: bool = False) -> None:
        self.done, self.stop_reason, self.truncated = True, reason, truncated

    def append(self, ids: list[int], kind: str, cfg: RolloutConfig) -> bool:
        """Append a segment; an inserted block that does not fit stops the row instead."""
        room, reason = self.room(cfg)
        if kind != "generated" and len(ids) > room:
            self.finish(reason, truncated=True)
            return False
        start = len(self.response)
        self.response += ids
        self.mask += [int(kind == "generated")] * len(ids)
        self.segments.append(Segment(kind, start, start + len(ids)))
        return True

    def to_trajectory(self) -> Trajectory:
        well_formed = (
            self.stop_reason == "answer" and "invalid" not in self.actions and not self.truncated
        )
        return Trajectory(
            prompt_ids=self.prompt_ids,
            response_ids=self.response,
            loss_mask=self.mask,
            steps=self.steps,
            answer=self.answer,
            num_turns=len(self.actions),
            well_formed=well_formed,
            hit_max_turns=self.hit_max_turns,
            truncated=self.truncated,
            actions=self.actions,
            segments=self.segments,
            stop_reason=self.stop_reason,
            prompt=self.prompt,
        )


@dataclass
class _Ctx:
    """What every row's turn needs: tokenizer, tags, budgets, retriever, EOS ids."""

    tok: Any
    tags: TagSet
    cfg: RolloutConfig
    retriever: Any
    eos_ids: frozenset[int]
    invalid: str = ""
    """The invalid-turn message in the configured rendering."""


_ACTION_KINDS = {Search: "search", Answer: "answer"}


def _answer_eos(ctx: _Ctx) -> list[int]:
    """The EOS appended after an answer: the tokenizer's, else the smallest EOS id, else none."""
    eos = ctx.tok.eos_token_id
    return [eos] if eos in ctx.eos_ids else sorted(ctx.eos_ids)[:1]


def _take_turn(row: _Row, out: Sequence[int], limit: int, ctx: _Ctx) -> None:
    """Record one generated turn and act on it (answer, invalid message, or queue a search)."""
    ids, text, ended = cut_turn(ctx.tok, list(out)[:limit], ctx.tags.stop_strings, ctx.eos_ids)
    action = parse_action(text, ctx.tags)
    if isinstance(action, Answer) and ended != "eos" and len(ids) < row.room(ctx.cfg)[0]:
        ids = ids + _answer_eos(ctx)
    start = len(row.response)
    row.append(ids, "generated", ctx.cfg)
    kind = _ACTION_KINDS.get(type(action), "invalid")
    row.actions.append(kind)
    if isinstance(action, Answer):
        row.answer = action.text
        row.finish("answer")
    elif ended == "eos":
        row.finish("eos")
    elif row.final_turn:
        row.finish("max_turns")
    elif ended == "length" and len(ids) >= limit and limit < ctx.cfg.max_new_tokens_per_turn:
        row.finish(row.room(ctx.cfg)[1], truncated=True)
    elif isinstance(action, Search):
        a, b = token_span(ctx.tok, ids, action.start, action.end)
        row.pending = (action, (start + a, start + b))
    else:
        row.used += 1
        row.append(encode_block(ctx.tok, ctx.invalid), "invalid", ctx.cfg)


def _retrieve(rows: list[_Row], turn: int, ctx: _Ctx) -> None:
    """One batched retriever call for every row that searched this turn; insert the documents."""
    queries = [normalize_query(r.pending[0].query) for r in rows if r.pending]
    results = ctx.retriever.search(queries, ctx.cfg.topk)
    if len(results) != len(queries):
        raise RetrieverError(
            f"retriever answered {len(results)} result lists for {len(queries)} queries"
        )
    for row, hits in zip(rows, results, strict=True):
        (action, span), row.pending = row.pending, None
        hits = list(hits)[: ctx.cfg.topk]
        block = encode_block(
            ctx.tok,
            observation_text(ctx.tok, ctx.tags, hits, ctx.cfg.max_obs_tokens, ctx.cfg.rendering),
        )
        start = len(row.response)
        row.used += 1
        if row.append(block, "information", ctx.cfg):
            row.steps.append(Step(action.query, span, (start, start + len(block)), hits, turn))


def _turn_seed(seed: int, turn: int) -> int:
    return (seed * 1_000_003 + turn) % (2**31 - 1)


def _active_rows(rows: list[_Row], cfg: RolloutConfig) -> tuple[list[_Row], list[int]]:
    """Rows still running, with this turn's token limit; rows with no room left stop here."""
    active, limits = [], []
    for row in rows:
        if row.done:
            continue
        room, reason = row.room(cfg)
        if room <= 0:
            row.finish(reason, truncated=True)
            continue
        active.append(row)
        limits.append(min(cfg.max_new_tokens_per_turn, room))
    return active, limits


def run_rollouts(
    prompts: Sequence[str | Sequence[int]],
    generator: Generator,
    retriever: Retriever,
    cfg: RolloutConfig,
    *,
    seed: int | None = None,
) -> list[Trajectory]:
    """Roll out every prompt (text, or ids taken as they are) to an answer or a budget.

    `generator.tokenizer` encodes prompts and blocks and decodes turns; `seed` overrides cfg.seed
    (pass the training step to draw fresh samples). Returns one Trajectory per prompt, in order.
    """
    tok = generator.tokenizer
    tags = get_tagset(cfg.tagset)
    invalid = invalid_message(tags, cfg.rendering)
    ctx = _Ctx(tok, tags, cfg, retriever, policy_eos_ids(generator), invalid)
    rows = [
        _Row(encode_prompt(tok, p, cfg.prompt_style), p)
        if isinstance(p, str)
        else _Row(list(p), None)
        for p in prompts
    ]
    for row in rows:
        row.final_turn = cfg.max_turns == 0
    seed = cfg.seed if seed is None else seed
    turn = 0
    while True:
        active, limits = _active_rows(rows, cfg)
        if not active:
            return [r.to_trajectory() for r in rows]
        outs = generator.generate(
            [r.prompt_ids + r.response for r in active],
            max(limits),
            ctx.tags.stop_strings,
            cfg.temperature,
            cfg.top_p,
            _turn_seed(seed, turn),
        )
        if len(outs) != len(active):
            raise RuntimeError(
                f"generator returned {len(outs)} sequences for a batch of {len(active)}"
            )
        for row, out, limit in zip(active, outs, limits, strict=True):
            _take_turn(row, out, limit, ctx)
        searching = [r for r in active if r.pending]
        if searching:
            _retrieve(searching, turn, ctx)
        for row in active:
            if not row.done and not row.final_turn and row.used >= cfg.max_turns:
                row.final_turn = row.hit_max_turns = True
                row.append(encode_block(tok, ctx.tags.final_turn_message), "final", cfg)
        turn += 1
