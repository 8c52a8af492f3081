"""The fast scorer (cached prefix, batched continuations) agrees with one forward per context."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from igsearch.rewards.scorer import AnswerScorer, ScoreRequest, ig_from_scores


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(cfg).eval()


def _requests(seed: int):
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(3, 97, (n,), generator=g).tolist()

    prefix_a = ids(30)
    blocks = [ids(12), ids(7), ids(15), ids(12)]
    answers = [[5, 6] + ids(3), [5, 6] + ids(1), [5, 6] + ids(6)]
    return [
        ScoreRequest(prefix_a, blocks, answers, [2, 2, 2]),
        ScoreRequest(ids(5), [ids(4), ids(9)], [[7] + ids(2)], [1]),
    ]


@pytest.mark.parametrize("max_context", [256, 40])
def test_fast_path_matches_reference(model, max_context):
    scorer = AnswerScorer(model, max_context=max_context)
    reqs = _requests(1)
    fast, ref = scorer.score(reqs), scorer.score_reference(reqs)
    for f, r in zip(fast, ref, strict=True):
        assert f.shape == r.shape
        torch.testing.assert_close(f, r, atol=1e-4, rtol=0)


def test_fast_path_encodes_fewer_tokens(model):
    reqs = _requests(2)
    fast, ref = AnswerScorer(model), AnswerScorer(model)
    fast.score(reqs)
    ref.score_reference(reqs)
    assert fast.tokens_encoded < ref.tokens_encoded


def test_ig_zero_when_counterfactual_equals_real(model):
    reqs = _requests(3)
    same = ScoreRequest(
        reqs[0].prefix, [reqs[0].blocks[0]] * 3, reqs[0].answers, reqs[0].alias_starts
    )
    scores = AnswerScorer(model).score([same])[0]
    assert ig_from_scores(scores) == pytest.approx(0.0, abs=1e-5)


def test_ig_uses_best_real_alias_for_counterfactuals():
    scores = torch.tensor([[-3.0, -1.0], [-0.5, -2.0], [-0.5, -4.0]])
    assert ig_from_scores(scores) == pytest.approx(-1.0 - (-3.0))


def test_weights_first_tokens_by_three(model):
    req = _requests(4)[1]
    scorer = AnswerScorer(model)
    # Recompute by hand: per-token log-probs of the alias, weights 3,3 -> plain mean for 2 tokens.
    ids = list(req.prefix) + list(req.blocks[0]) + list(req.answers[0])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    tok = [lp[len(ids) - 3 + k, ids[len(ids) - 2 + k]].item() for k in range(2)]
    assert scorer.score_reference([req])[0][0, 0].item() == pytest.approx(sum(tok) / 2, abs=1e-5)
