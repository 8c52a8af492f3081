"""The fast scorer (shared trajectory prefixes, batched rows) agrees with one forward per context.

Requests are shaped like the ones compute_step_ig builds: the steps of one trajectory have nested
prefixes (step t's prefix ends where its information block starts; the next step's prefix runs on
through that block), counterfactual blocks share the real block's opening and closing tokens, and
questions have several aliases of different lengths.
"""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from igsearch.rewards.score_plan import chain_roots, common_prefix, plan_scoring
from igsearch.rewards.scorer import AnswerScorer, ScoreRequest, ig_from_scores

OPEN, CLOSE, ANSWER = [3, 4], [5], [6, 7]


VOCAB, POSITIONS = 97, 256


@pytest.fixture(scope="module")
def model(tiny_shape):
    torch.manual_seed(0)
    cfg = LlamaConfig(**tiny_shape, vocab_size=VOCAB, max_position_embeddings=POSITIONS)
    return LlamaForCausalLM(cfg).eval()


def _ids(g: torch.Generator, lo: int, hi: int) -> list[int]:
    n = int(torch.randint(lo, hi + 1, (1,), generator=g))
    return torch.randint(8, VOCAB, (n,), generator=g).tolist()


def _trajectory(g, prompt, n_steps, n_aliases, n_cf=3) -> list[ScoreRequest]:
    """The ScoreRequests of one trajectory's steps (nested prefixes)."""
    answers = [ANSWER + _ids(g, 1, 6) for _ in range(n_aliases)]
    starts = [len(ANSWER)] * n_aliases
    seq, out = list(prompt), []
    for t in range(n_steps):
        seq += _ids(g, 3, 10)  # the turn's generated text
        real = OPEN + _ids(g, 6, 18) + CLOSE
        cfs = [OPEN + _ids(g, 4, 20) + CLOSE for _ in range(n_cf)]
        if t == 1:
            cfs[0] = list(real)  # a counterfactual equal to the real block
        out.append(ScoreRequest(list(seq), [real, *cfs], answers, starts))
        seq += real
    return out


def _batch(seed: int) -> list[ScoreRequest]:
    """Five trajectories of 1-4 steps (two sharing a prompt), an empty-prefix step, no answer prefix."""
    g = torch.Generator().manual_seed(seed)
    shared = _ids(g, 6, 10)
    reqs = []
    for n_steps, n_aliases, prompt in [
        (1, 1, _ids(g, 5, 9)),
        (2, 3, shared),
        (3, 2, shared),
        (4, 2, _ids(g, 5, 9)),
        (4, 1, _ids(g, 5, 9)),
    ]:
        reqs += _trajectory(g, prompt, n_steps, n_aliases)
    reqs.append(ScoreRequest([], [OPEN + _ids(g, 3, 6), _ids(g, 3, 6)], [ANSWER + [9, 10]], [2]))
    reqs.append(ScoreRequest(_ids(g, 4, 8), [_ids(g, 2, 5), _ids(g, 2, 5)], [[11, 12]], [0]))
    return reqs


def _assert_agree(fast, ref):
    assert len(fast) == len(ref)
    for f, r in zip(fast, ref, strict=True):
        assert f.shape == r.shape
        torch.testing.assert_close(f, r, atol=1e-4, rtol=0)


@pytest.mark.parametrize("max_context", [256, 90, 40])
@pytest.mark.parametrize("max_batch_tokens", [16384, 300, 1])
def test_fast_path_matches_reference(model, max_context, max_batch_tokens):
    reqs = _batch(1)
    longest = max(
        len(r.prefix) + len(b) + len(a) for r in reqs for b in r.blocks for a in r.answers
    )
    assert longest > 90  # max_context 90 and 40 truncate some contexts on the left
    scorer = AnswerScorer(model, max_context=max_context, max_batch_tokens=max_batch_tokens)
    _assert_agree(scorer.score(reqs), scorer.score_reference(reqs))


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_fast_path_matches_reference_on_more_batches(model, seed):
    reqs = _batch(seed)
    scorer = AnswerScorer(model, max_context=64, max_batch_tokens=512)
    _assert_agree(scorer.score(reqs), scorer.score_reference(reqs))


def test_each_trajectory_prefix_is_encoded_once(model):
    """Tokens encoded <= each trajectory once + every counterfactual row + every answer."""
    g = torch.Generator().manual_seed(5)
    reqs = _trajectory(g, _ids(g, 5, 9), 4, 2) + _trajectory(g, _ids(g, 5, 9), 3, 1)
    fast, ref = AnswerScorer(model), AnswerScorer(model)
    fast.score(reqs)
    ref.score_reference(reqs)
    trajectories = [reqs[3], reqs[6]]  # the last step of each
    bound = sum(len(r.prefix) + len(r.blocks[0]) for r in trajectories)
    for r in reqs:
        for block in r.blocks[1:]:
            bound += sum(len(block) + len(a) for a in r.answers)
        bound += sum(len(a) for a in r.answers)
    assert fast.tokens_encoded <= bound < ref.tokens_encoded
    assert fast.forward_passes < ref.forward_passes


def test_fast_path_work_grows_linearly_with_steps(model):
    """Adding step t costs its own tokens (turn, block, counterfactuals, answers), not its prefix."""
    g = torch.Generator().manual_seed(6)
    reqs = _trajectory(g, _ids(g, 5, 9), 4, 1)
    costs = []
    for t in range(1, 5):
        scorer = AnswerScorer(model)
        scorer.score(reqs[:t])
        costs.append(scorer.tokens_encoded)
    for t in range(1, 4):
        step = reqs[t]
        own = len(step.prefix) - len(reqs[t - 1].prefix) + len(step.blocks[0])
        own += sum(len(b) + len(step.answers[0]) for b in step.blocks[1:]) + len(step.answers[0])
        assert costs[t] - costs[t - 1] <= own


def test_scoring_leaves_training_mode_and_works_with_gradient_checkpointing(model):
    m = copy.deepcopy(model)
    m.gradient_checkpointing_enable()
    m.train()
    reqs = _batch(7)[:3]
    fast = AnswerScorer(m).score(reqs)
    assert m.training
    _assert_agree(fast, AnswerScorer(model).score_reference(reqs))


def test_ig_zero_when_counterfactual_equals_real(model):
    g = torch.Generator().manual_seed(3)
    req = _trajectory(g, _ids(g, 5, 9), 2, 2)[1]
    same = ScoreRequest(req.prefix, [req.blocks[0]] * 3, req.answers, req.alias_starts)
    scores = AnswerScorer(model).score([same])[0]
    assert ig_from_scores(scores) == pytest.approx(0.0, abs=1e-5)


def test_ig_uses_best_real_alias_for_counterfactuals():
    scores = torch.tensor([[-3.0, -1.0], [-0.5, -2.0], [-0.5, -4.0]])
    assert ig_from_scores(scores) == pytest.approx(-1.0 - (-3.0))


def test_weights_first_tokens_by_three(model):
    req = ScoreRequest([20, 21, 22, 23, 24], [[30, 31, 32, 33]], [[7, 40, 41]], [1])
    scorer = AnswerScorer(model)
    # Recompute by hand: per-token log-probs of the alias, weights 3,3 -> plain mean for 2 tokens.
    ids = list(req.prefix) + list(req.blocks[0]) + list(req.answers[0])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    tok = [lp[len(ids) - 3 + k, ids[len(ids) - 2 + k]].item() for k in range(2)]
    assert scorer.score_reference([req])[0][0, 0].item() == pytest.approx(sum(tok) / 2, abs=1e-5)
    assert scorer.score([req])[0][0, 0].item() == pytest.approx(sum(tok) / 2, abs=1e-5)


def test_errors_name_the_input():
    with pytest.raises(ValueError, match="one alias start per answer"):
        plan_scoring([([1, 2], [[3]], [[4, 5]], [1, 1])], 64)
    with pytest.raises(ValueError, match="leaves no context"):
        plan_scoring([([1, 2], [[3]], [[4, 5]], [2])], 64)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        AnswerScorer(torch.nn.Linear(1, 1), max_batch_tokens=0)


def test_chain_roots_groups_prefixes():
    cands = [[1, 2, 3], [1, 2], [1, 2, 3, 4], [5], [1, 3], [], [1, 2, 3, 4]]
    roots, root_of = chain_roots(cands)
    assert sorted(map(tuple, roots)) == [(1, 2, 3, 4), (1, 3), (5,)]
    assert len({root_of[i] for i in (0, 1, 2, 6)}) == 1 and root_of[5] == -1
    for cand, r in zip(cands, root_of, strict=True):
        assert r == -1 or roots[r][: len(cand)] == cand
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2 and common_prefix([1], [1, 2]) == 1


def test_plan_caches_the_real_block_and_dedupes_rows():
    prefix, real, cf = [1, 2, 3], [4, 5, 6], [4, 7, 8]
    plan = plan_scoring([(prefix, [real, cf, real], [[9, 10]], [1])], 64)
    assert plan.roots == [prefix + real]  # one root: the real context
    assert plan.job_of[(0, 0, 0)] == plan.job_of[(0, 2, 0)]  # the repeated block runs once
    jobs = {plan.jobs[j].suffix: plan.jobs[j].cached for j in set(plan.job_of.values())}
    assert jobs == {(9, 10): 6, (7, 8, 9, 10): 4}  # cf shares its first block token with the real


def test_sliding_window_models_fall_back_to_the_reference_path(tiny_shape):
    """A sliding-window cache cannot be cropped per row: the scorer notices and stays exact."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(
        **tiny_shape, vocab_size=VOCAB, max_position_embeddings=POSITIONS, sliding_window=8
    )
    model = MistralForCausalLM(cfg).eval()
    reqs = _batch(8)[:3]
    _assert_agree(AnswerScorer(model).score(reqs), AnswerScorer(model).score_reference(reqs))


def test_scores_use_the_sampling_temperature(model):
    """s(C) is the answer's log-prob under the policy that sampled: softmax(logits / T)."""
    context, answer = list(range(10, 30)), [40, 41, 42]
    x = torch.tensor([context + answer])
    with torch.no_grad():
        logits = model(input_ids=x).logits[0, len(context) - 1 : -1].float()
    w = torch.tensor([3.0, 3.0, 3.0])
    for t in (1.0, 0.5):
        lp = torch.log_softmax(logits / t, -1).gather(-1, x[0, len(context) :, None]).squeeze(-1)
        want = (lp * w).sum() / w.sum()
        scorer = AnswerScorer(model, temperature=t)
        req = [ScoreRequest(context[:12], [context[12:]], [answer], [0])]
        assert scorer.score(req)[0][0, 0].item() == pytest.approx(want.item(), abs=1e-4)
        assert scorer.score_reference(req)[0][0, 0].item() == pytest.approx(want.item(), abs=1e-4)
    with pytest.raises(ValueError, match="sampling temperature"):
        AnswerScorer(model, temperature=0.0)
