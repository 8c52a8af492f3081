"""Config loading: YAML + dotted overrides, unknown keys and wrong types rejected with fixes."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from igsearch.config import ConfigError, apply_overrides, from_dict, load_config, to_dict


@dataclass(frozen=True)
class Inner:
    alpha: float = 0.3
    """IG weight."""
    norm: Literal["none", "group", "batch"] = "none"
    """IG normalisation."""

    def __post_init__(self):
        if self.alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}")


@dataclass(frozen=True)
class Outer:
    name: str = "run"
    """Run name."""
    steps: int = 10
    """Number of steps."""
    clip: float | None = None
    """Optional clip."""
    files: tuple[str, ...] = ()
    """Input files."""
    inner: Inner = field(default_factory=Inner)
    """Nested section."""


def test_yaml_plus_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ninner:\n  alpha: 1\nfiles: [x, y]\n")
    cfg = load_config(Outer, path, ["inner.norm=group", "steps=5", "clip=0.5"])
    assert cfg == Outer(
        name="a", steps=5, clip=0.5, files=("x", "y"), inner=Inner(alpha=1.0, norm="group")
    )
    assert isinstance(cfg.inner.alpha, float)
    assert to_dict(cfg)["files"] == ["x", "y"]


def test_unknown_key_suggests_the_closest_one():
    with pytest.raises(
        ConfigError, match=r"config.inner: unknown key 'alhpa' \(did you mean 'alpha'\?\)"
    ):
        from_dict(Outer, {"inner": {"alhpa": 1}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": "ten"}, "config.steps: expected int"),
        ({"steps": True}, "config.steps: expected a number"),
        ({"inner": {"norm": "zscore"}}, "not one of"),
        ({"files": "x"}, "expected a list"),
        ({"inner": 3}, "expected a mapping"),
        ({"inner": {"alpha": -1}}, "alpha must be >= 0"),
        ({"inner": {"alpha": "fast"}}, "config.inner.alpha: expected a number"),
        ({"inner": {"alpha": "nan"}}, "config.inner.alpha: expected a finite number"),
        ({"clip": "inf"}, "config.clip: expected a finite number"),
    ],
)
def test_bad_values_fail_with_the_key_named(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_exponent_floats_typed_without_a_dot_are_numbers(tmp_path):
    # YAML 1.1 reads 2e-4 (no dot) as a string, in files and overrides alike
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  alpha: 2e-4\n")
    cfg = load_config(Outer, path, ["clip=3e-5"])
    assert cfg.inner.alpha == 2e-4 and cfg.clip == 3e-5


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["steps"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"steps": 3}, ["steps.x=1"])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(Outer, bad)


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"temperature": 0.0}, r"rollout.temperature=0.0: training needs sampled rollouts"),
        ({"temperature": 1e-5}, r"x100000"),
        ({"top_p": 0.9}, r"rollout.top_p=0.9: .*full tempered softmax.*top_p=1.0"),
    ],
)
def test_training_refuses_greedy_and_nucleus_sampling(rollout, message):
    from igsearch.config import TrainConfig

    base = {"model": "m", "data": {"train": ["t.jsonl"]}, "retriever": {"url": "http://x"}}
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, {**base, "rollout": rollout})
    assert from_dict(TrainConfig, {**base, "rollout": {"temperature": 0.7}}).rollout.top_p == 1.0


def test_sft_warmup_stable_decay_holds_the_peak_then_decays():
    from pathlib import Path

    import torch
    from transformers import get_scheduler

    from igsearch.config import SftConfig
    from igsearch.train.sft import _training_args

    with pytest.raises(ConfigError, match="sft.decay_ratio"):
        SftConfig(lr_scheduler="warmup_stable_decay", decay_ratio=0.99, warmup_ratio=0.05)
    # cosine ignores decay_ratio, so a long warmup is not refused over it
    assert SftConfig(lr_scheduler="cosine", warmup_ratio=0.9).decay_ratio == 0.25
    cfg = SftConfig(lr_scheduler="warmup_stable_decay", max_steps=100, decay_ratio=0.2)
    args = _training_args(cfg, Path("/nonexistent"))
    assert args.lr_scheduler_kwargs == {"num_decay_steps": 20}
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler(
        args.lr_scheduler_type,
        opt,
        num_warmup_steps=5,
        num_training_steps=100,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0 and all(lr == 1.0 for lr in lrs[5:80])
    assert lrs[90] < 0.6 and lrs[99] < 0.01
