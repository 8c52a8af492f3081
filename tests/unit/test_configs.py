"""Every shipped training config parses and validates; impossible values fail before any work."""

from pathlib import Path

import pytest

from igsearch.config import ConfigError, TrainConfig, load_config

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.train.batch_size % cfg.train.group_size == 0
    assert cfg.algo.estimator in ("grpo", "ig_grpo")
    assert ("-ig" in path.name) == (cfg.algo.estimator == "ig_grpo")


def test_paper_settings_in_the_qwen_configs():
    cfg = load_config(TrainConfig, Path(CONFIGS[0]).parent / "qwen2.5-3b-nq-hotpot-ig.yaml")
    assert (
        cfg.train.group_size,
        cfg.train.learning_rate,
        cfg.algo.alpha,
        cfg.algo.n_counterfactuals,
    ) == (5, 1e-6, 0.3, 3)
    assert (
        cfg.rollout.topk,
        cfg.rollout.max_turns,
        cfg.train.beta,
        cfg.rollout.temperature,
        cfg.train.steps,
    ) == (3, 5, 0.001, 1.0, 200)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=41", "not divisible by train.group_size=5"),
        ("algo.alpha=-0.1", "algo.alpha=-0.1: must be >= 0"),
        ("algo.estimator=ppo", "choose one of: grpo, ig_grpo, ig_grpo_empty"),
        ("train.lerning_rate=1e-3", "did you mean 'learning_rate'"),
        ("retriever.url=http://x", "exactly one of retriever.index"),
        ("train.update_chunks=0", r"train.update_chunks=0: must be an integer >= 1 \(1 = one"),
    ],
)
def test_impossible_values_fail_with_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, Path(CONFIGS[0]).parent / "nano-synthetic-ig.yaml", [override])
