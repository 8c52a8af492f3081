"""Information gain of every search step of a batch of rollouts (glue between trajectories,
counterfactual sampling and the scorer).

For step t of a rollout, the prefix is the prompt plus the response up to the step's information
block, the real block is the block's own token ids as the policy saw them, and each counterfactual
block is the same wrapper rendered around other documents and tokenised alone (as the rollout
loop tokenises blocks). The answer continuation is the answer prefix (default "\\n<answer>")
followed by " " + alias, each tokenised alone, so the scored text reads "\\n<answer> alias".

All steps of the batch go to the scorer in one call, so the steps of one trajectory share one
encoding of its prefix and rows of many steps share forward passes (igsearch.rewards.scorer). A
document set that serves several steps (the same fallback documents, or the one empty set of the
`empty` counterfactual) is rendered and tokenised once per call, as is each question's answers.
Steps that cannot change any advantage are not scored (an empty query span gets IG 0).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from igsearch.errors import IGSearchError
from igsearch.protocol import TagSet
from igsearch.retrieval.base import Hit
from igsearch.rewards.info_gain import Fallback, StepDocs, sample_counterfactuals
from igsearch.rewards.scorer import AnswerScorer, ScoreRequest, ig_from_scores
from igsearch.rollout.loop import Trajectory, observation_text
from igsearch.tokens import encode_block


def answer_continuations(
    tokenizer: Any, answer_prefix: str, aliases: Sequence[str]
) -> tuple[list[list[int]], list[int]]:
    """Token ids of answer prefix + alias for every alias, and where each alias starts."""
    prefix = encode_block(tokenizer, answer_prefix) if answer_prefix else []
    conts = [prefix + encode_block(tokenizer, " " + a.strip()) for a in aliases]
    return conts, [len(prefix)] * len(conts)


class BlockTokens:
    """Token ids of the information block around a document set, tokenised once per set.

    Rendered as the rollout loop renders a search's documents (same `rendering`), keyed by the
    documents' raw contents, which is all either rendering reads.
    """

    def __init__(
        self,
        tokenizer: Any,
        tags: TagSet,
        max_obs_tokens: int | None,
        rendering: str = "igsearch",
    ):
        self.tokenizer, self.tags, self.max_obs_tokens = tokenizer, tags, max_obs_tokens
        self.rendering = rendering
        self.memo: dict[tuple[str, ...], list[int]] = {}

    def __call__(self, docs: Sequence[Hit]) -> list[int]:
        key = tuple(d.contents for d in docs)
        if key not in self.memo:
            text = observation_text(
                self.tokenizer, self.tags, docs, self.max_obs_tokens, self.rendering
            )
            self.memo[key] = encode_block(self.tokenizer, text)
        return self.memo[key]


def compute_step_ig(
    trajectories: Sequence[Trajectory],
    golden_answers: Sequence[Sequence[str]],
    questions: Sequence[Hashable],
    scorer: AnswerScorer,
    tokenizer: Any,
    tags: TagSet,
    *,
    counterfactual: str = "random",
    n_sets: int = 3,
    seed: int = 0,
    answer_prefix: str = "\n<answer>",
    max_obs_tokens: int | None = None,
    fallback: Fallback[Hit] | None = None,
    skip_empty_queries: bool = True,
    rendering: str = "igsearch",
) -> list[list[float]]:
    """IG per search step of each trajectory: result[i][t] for rollout i, step t.

    `questions[i]` keys rollout i's question (documents retrieved for the same question never serve
    as its counterfactuals). Steps whose query span is empty cannot change any advantage and get 0
    without being scored when `skip_empty_queries`. `rendering` must be the rollouts' own
    (RolloutConfig.rendering), so that a counterfactual block is written as the real one was.
    """
    refs = [(i, t) for i, tr in enumerate(trajectories) for t in range(len(tr.steps))]
    cf_sets = sample_counterfactuals(
        [StepDocs(questions[i], trajectories[i].steps[t].hits) for i, t in refs],
        n_sets=n_sets,
        seed=seed,
        kind=counterfactual,
        fallback=fallback,
    )
    out: list[list[float]] = [[0.0] * len(tr.steps) for tr in trajectories]
    block_of = BlockTokens(tokenizer, tags, max_obs_tokens, rendering)
    answers_of: dict[tuple[str, ...], tuple[list[list[int]], list[int]]] = {}
    requests, slots = [], []
    for (i, t), sets in zip(refs, cf_sets, strict=True):
        tr, step = trajectories[i], trajectories[i].steps[t]
        if skip_empty_queries and step.query_span[1] <= step.query_span[0]:
            continue
        start, end = step.info_span
        golden = tuple(golden_answers[i])
        if golden not in answers_of:
            answers_of[golden] = answer_continuations(tokenizer, answer_prefix, golden)
        answers, starts = answers_of[golden]
        blocks = [tr.response_ids[start:end]] + [block_of(docs) for docs in sets]
        requests.append(
            ScoreRequest(tr.prompt_ids + tr.response_ids[:start], blocks, answers, starts)
        )
        slots.append((i, t))
    if requests:
        for (i, t), scores in zip(slots, scorer.score(requests), strict=True):
            out[i][t] = ig_from_scores(scores)
    return out


def corpus_fallback(retriever: Any):
    """Random corpus documents for counterfactual sets, when the retriever holds a corpus store:
    `draw(rng, n, exclude)` returns n distinct documents whose ids are not in `exclude`."""
    store = getattr(retriever, "store", None)
    if store is None or not len(store):
        return None

    def draw(rng, n: int, exclude: frozenset = frozenset()) -> list[Hit]:
        size, picked, seen = len(store), [], set()
        small = size <= 4 * (n + len(exclude))  # walk a permutation; else sample and reject
        order = iter(rng.permutation(size)) if small else None
        while len(picked) < n:
            i = int(next(order, -1)) if order is not None else int(rng.integers(size))
            if i < 0:
                raise IGSearchError(
                    f"the corpus has {size} documents, too few for {n} counterfactual documents "
                    "outside the step's question; use a larger corpus or a larger batch"
                )
            if i in seen:
                continue
            seen.add(i)
            if store[i].id not in exclude:
                picked.append(Hit(store[i], 0.0))
        return picked

    return draw
