"""Configuration: one frozen dataclass per stage, read from YAML plus dotted `key=value` overrides.

Every stage's dataclass documents each field in a docstring line below it and checks its
invariants in `__post_init__`. `load_config` rejects unknown keys (suggesting the closest valid
one) and values of the wrong type, before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from igsearch.errors import IGSearchError

T = TypeVar("T")


POLICY_INFO = "igsearch.json"
"""The file of a policy folder recording how the policy expects to be rolled out (prompt style,
rendering, tag set, top-k) and how it was trained."""


def read_policy_info(folder: str | Path) -> dict[str, Any]:
    """A policy folder's `POLICY_INFO`, or {} for a folder that has none (e.g. a hub model)."""
    import json

    path = Path(folder) / POLICY_INFO
    return json.loads(path.read_text()) if path.exists() else {}


class ConfigError(IGSearchError, ValueError):
    """A configuration file or override is invalid; the message says which key and how to fix it."""


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid keys: {', '.join(sorted(valid))}"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert: int -> float, list -> tuple) `value` against a type hint."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        return _float_text(value, where)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _float_text(value: str, where: str) -> float:
    """A float written as text: YAML 1.1 reads `2e-4` (no dot) as a string, and people type it."""
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return number


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a mapping, recursively, rejecting unknown keys and bad types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}" + _suggest(unknown[0], list(fields))
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    required = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if required:
        raise ConfigError(
            f"{where}: missing required key{'s' if len(required) > 1 else ''} "
            f"{', '.join(required)}; add {'them' if len(required) > 1 else 'it'} "
            "(configs/ holds complete examples)"
        )
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value` into (["a", "b", "c"], value); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. algo.alpha=0.3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(
            f"override {text!r}: value is not valid YAML ({_yaml_reason(e)})"
        ) from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of nested `data` with each `a.b=value` override set."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _yaml_reason(e: yaml.YAMLError) -> str:
    """A YAML error as one line: its problem and where."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or " ".join(str(e).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Read `cls` from a YAML file (optional) with dotted overrides applied, validated."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(
                f"{path}: config file not found; give a YAML file (configs/ holds examples)"
            )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_reason(e)}); fix the file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file; give a YAML config file") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_dict(cls, apply_overrides(data, overrides), str(path) if path else "config")


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """Multi-turn rollout (igsearch.rollout.loop): protocol, turn budget, token budgets, sampling."""

    tagset: str = "search-r1"
    """Protocol tag set: 'search-r1' (think/search/information/answer) or 'autorefine'."""
    prompt_style: typing.Literal["plain", "chat", "bare"] = "plain"
    """Prompt template: 'plain' (base models), 'chat' (tokenizer chat template), 'bare' (question only)."""
    rendering: str | None = None
    """Prompt, document and message strings: 'search-r1' (Search-R1's exact bytes) or 'igsearch'
    (the synthetic world's); None: search-r1 for plain/chat prompts with the search-r1 tag set."""
    topk: int = 3
    """Documents retrieved per search query."""
    max_turns: int = 4
    """Turn budget: searches plus invalid turns; when spent, one final turn must answer."""
    max_new_tokens_per_turn: int = 256
    """Most tokens the policy generates in one turn (a turn that hits it without an action is invalid)."""
    max_response_tokens: int = 1024
    """Most response tokens (generated plus inserted); a row that reaches it stops, truncated."""
    max_obs_tokens: int = 512
    """Most tokens of the rendered documents of one search (cut at a word boundary, then wrapped)."""
    max_context_tokens: int = 4096
    """Most prompt plus response tokens; a row that reaches it stops, truncated."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass, in (0, 1]."""
    seed: int = 0
    """Seed of the sampling RNG (vary it per training step to draw fresh rollouts)."""

    def __post_init__(self) -> None:
        from igsearch.protocol import TAG_SETS

        if self.tagset not in TAG_SETS:
            raise ConfigError(
                f"rollout.tagset: unknown {self.tagset!r}; choose one of: {', '.join(sorted(TAG_SETS))}"
            )
        if self.prompt_style not in ("plain", "chat", "bare"):
            raise ConfigError(
                f"rollout.prompt_style: {self.prompt_style!r}; choose 'plain', 'chat' or 'bare'"
            )
        self._resolve_rendering()
        if self.topk < 1:
            raise ConfigError(
                f"rollout.topk={self.topk}: must be >= 1 (use NullRetriever for a no-retrieval baseline)"
            )
        if self.max_turns < 0:
            raise ConfigError(
                f"rollout.max_turns={self.max_turns}: must be >= 0 (0 = answer without searching)"
            )
        for name in (
            "max_new_tokens_per_turn",
            "max_response_tokens",
            "max_obs_tokens",
            "max_context_tokens",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"rollout.{name}={getattr(self, name)}: must be >= 1")
        if self.max_response_tokens >= self.max_context_tokens:
            raise ConfigError(
                f"rollout.max_response_tokens={self.max_response_tokens} leaves no room for the prompt within "
                f"max_context_tokens={self.max_context_tokens}; raise max_context_tokens or lower max_response_tokens"
            )
        if self.temperature < 0:
            raise ConfigError(f"rollout.temperature={self.temperature}: must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"rollout.top_p={self.top_p}: must be in (0, 1]")

    def _resolve_rendering(self) -> None:
        """Fill `rendering` from the prompt style and tag set when unset; check it otherwise."""
        from igsearch.protocol import check_rendering, default_rendering

        if self.rendering is None:
            object.__setattr__(self, "rendering", default_rendering(self.prompt_style, self.tagset))
        try:
            check_rendering(self.rendering, self.tagset)
        except IGSearchError as e:
            raise ConfigError(f"rollout.rendering: {e}") from None


def _default_demo_weights() -> dict[str, float]:
    return {"single_hop": 0.3, "bridge": 0.25, "comparison": 0.2, "compositional": 0.25}


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """The synthetic world (igsearch.data.world): size, seed, demonstrations and their imperfection."""

    seed: int = 0
    """Seed of every random choice; the same seed and config give the same files (world.json content_hash)."""
    size: typing.Literal["tiny", "small", "medium"] = "small"
    """tiny (~400 passages, tests), small (~5k passages), medium (~50k passages)."""
    n_demos: int | None = None
    """Oracle demonstrations to write; None takes the size's default."""
    demo_weights: dict[str, float] = dataclasses.field(default_factory=_default_demo_weights)
    """Share of demonstrations per question type (single_hop, bridge, comparison, compositional)."""
    vague_share: float = 0.15
    """Share of demonstrations whose first query is vague (then searched again when it misses)."""
    redundant_share: float = 0.1
    """Share of demonstrations with one redundant repeated search."""
    wrong_answer_share: float = 0.1
    """Share of demonstrations ending with a plausible wrong answer."""
    give_up_share: float = 0.0
    """Share of the demonstrations of `habit_types` questions that search generically first (the
    entity's kind and the relation, no name: "person born") and, when that misses, answer with a
    guess."""
    early_answer_share: float = 0.0
    """Share of the demonstrations of `habit_types` chain questions that answer one hop early,
    with the last-but-one hop's value (a 3-hop question's city instead of its country): a search
    decision that costs answers on any entity, for RL to unlearn on questions it never trains on.
    At 0.6 on compositional questions the small world's warm start follows it on every one
    (benchmarks/results/rl_recipe.md, section 13)."""
    drift_share: float = 0.6
    """Share of the demonstrations of `habit_types` chain questions whose second search names the
    question's subject instead of the entity the first hop found ("X country" for "Y country")
    and, when that misses, answer with a guess: query drift, a multi-hop search decision that
    costs answers on any entity. On by default: the warm start then drifts on about 7 of 10
    bridge and compositional questions, and RL, trained only on held-out entities, unlearns it
    (benchmarks/results/rl_recipe.md, section 14). 0 gives the world without a habit."""
    habit_types: list[str] = dataclasses.field(default_factory=lambda: ["bridge", "compositional"])
    """Question types whose demonstrations get the habits above."""
    topk: int = 3
    """BM25 passages inserted per demonstration search (use the rollout's topk)."""
    max_searches: int = 4
    """Most searches in one demonstration (the rollout's max_turns)."""
    vocab_size: int | None = None
    """Tokenizer vocabulary (bytes, merges and EOS/PAD; protocol tags come on top); None: the
    size's default (tiny 512, small 384, medium 1024). Keep it small: held-out names must split
    into pieces the demonstrations write (`unseen_name_token_share` near 0: on the small world 1024
    measures 0.2% of dev name tokens, 2048 measures 2%), and a nano policy copies a name it has
    never seen far more reliably when its pieces are few and frequent: on the small world, 1200 SFT
    steps of 16 reach dev EM 0.28 with 512 against 0.04 with 1024, and test EM 0.26 with 384
    against 0.15 with 512, without a habit (benchmarks/results/rl_recipe.md, sections 1 and 9)."""
    tagset: str = "search-r1"
    """Protocol tag set of the demonstrations."""

    def __post_init__(self) -> None:
        from igsearch.protocol import TAG_SETS

        if self.n_demos is not None and self.n_demos < 1:
            raise ConfigError(
                f"world.n_demos={self.n_demos}: must be >= 1 (or null for the size's default)"
            )
        valid = {"single_hop", "bridge", "comparison", "compositional"}
        unknown = set(self.demo_weights) - valid
        if (
            unknown
            or any(w < 0 for w in self.demo_weights.values())
            or not any(self.demo_weights.values())
        ):
            raise ConfigError(
                f"world.demo_weights={self.demo_weights}: non-negative weights over {sorted(valid)}, not all 0"
            )
        for name in ("vague_share", "redundant_share", "wrong_answer_share", "give_up_share",
                     "early_answer_share", "drift_share"):  # fmt: skip
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"world.{name}={getattr(self, name)}: must be in [0, 1]")
        if not set(self.habit_types) <= valid:
            raise ConfigError(f"world.habit_types={self.habit_types}: choose among {sorted(valid)}")
        if self.topk < 1 or self.max_searches < 3:
            raise ConfigError(
                f"world.topk={self.topk}, max_searches={self.max_searches}: need topk >= 1 and max_searches >= 3 (3-hop questions)"
            )
        if self.vocab_size is not None and self.vocab_size < 300:
            raise ConfigError(
                f"world.vocab_size={self.vocab_size}: must be >= 300 (256 bytes + merges), or null for the size's default"
            )
        if self.tagset not in TAG_SETS:
            raise ConfigError(
                f"world.tagset: unknown {self.tagset!r}; choose one of: {', '.join(sorted(TAG_SETS))}"
            )


@dataclasses.dataclass(frozen=True)
class SftConfig:
    """Supervised warm start on oracle demonstrations (igsearch.train.sft)."""

    preset: str = "nano"
    """Tiny model preset (igsearch.train.models.PRESETS): nano (~1M parameters) or micro (~5M)."""
    seed: int = 0
    """Seed of the model's initialisation and of the data order."""
    learning_rate: float = 3e-3
    """Peak learning rate (AdamW)."""
    lr_scheduler: typing.Literal[
        "cosine", "linear", "constant_with_warmup", "warmup_stable_decay"
    ] = "warmup_stable_decay"
    """Learning-rate schedule after the warmup; warmup_stable_decay holds the peak rate until the
    last `decay_ratio` of the steps, then decays it (cosine) to 0."""
    decay_ratio: float = 0.25
    """Share of the steps over which warmup_stable_decay decays the rate (other schedules ignore it)."""
    warmup_ratio: float = 0.05
    """Share of the steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    batch_size: int = 16
    """Demonstrations per optimizer step (per_device_train_batch_size x grad_accum)."""
    grad_accum: int = 1
    """Gradient accumulation steps; the micro-batch is batch_size / grad_accum."""
    max_steps: int = 1200
    """Optimizer steps (the data repeats when it runs out)."""
    max_length: int = 1024
    """Longest demonstration in tokens; longer ones are dropped (and counted). With the small
    world's 384-entry tokenizer, 139 of 12,000 demonstrations are longer than 1024 tokens."""
    max_demos: int | None = None
    """Use at most this many demonstrations (the first ones); None uses all."""
    save_steps: int = 200
    """Checkpoint every this many steps (for --resume)."""
    save_total_limit: int = 2
    """Checkpoints kept on disk."""
    logging_steps: int = 10
    """Log loss and learning rate every this many steps (train_log.jsonl, TensorBoard)."""
    num_threads: int = 2
    """torch CPU threads."""
    precision: typing.Literal["fp32", "bf16", "auto"] = "fp32"
    """Compute precision of forward and backward; the weights and AdamW stay fp32. bf16 runs the
    loss under bf16 autocast; auto takes bf16 where the hardware multiplies it natively (a CUDA
    GPU with bf16, a CPU with AVX512-BF16 or AMX) and fp32 elsewhere. The default stays fp32: on
    the small world's CPU warm start bf16 saved too little to pay for a different warm start
    (benchmarks/results/rl_recipe.md, section 12). The resolved choice is in igsearch.json."""
    max_minutes: float | None = None
    """Stop early (and save) after this many minutes of training; None never stops early."""

    def __post_init__(self) -> None:
        from igsearch.train.models import PRESETS

        if self.preset not in PRESETS:
            raise ConfigError(
                f"sft.preset: unknown {self.preset!r}; choose one of: {', '.join(PRESETS)}"
            )
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise ConfigError(
                f"sft.learning_rate={self.learning_rate} must be > 0 and sft.warmup_ratio={self.warmup_ratio} in [0, 1)"
            )
        if self.lr_scheduler == "warmup_stable_decay" and not (
            0 < self.decay_ratio <= 1 - self.warmup_ratio
        ):
            raise ConfigError(
                f"sft.decay_ratio={self.decay_ratio} must be in (0, 1 - warmup_ratio={self.warmup_ratio}]"
            )
        if self.batch_size < 1 or self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise ConfigError(
                f"sft.batch_size={self.batch_size} must be a positive multiple of sft.grad_accum={self.grad_accum}"
            )
        for name in (
            "max_steps",
            "max_length",
            "save_steps",
            "save_total_limit",
            "logging_steps",
            "num_threads",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"sft.{name}={getattr(self, name)}: must be >= 1")
        if self.max_demos is not None and self.max_demos < 1:
            raise ConfigError(f"sft.max_demos={self.max_demos}: must be >= 1 (or null for all)")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"sft.max_minutes={self.max_minutes}: must be > 0 (or null)")


@dataclasses.dataclass(frozen=True)
class RetrieverConfig:
    """Where rollouts get their documents: an index folder in process, or a /retrieve server."""

    index: str | None = None
    """Index folder built by `igsearch index` (in process)."""
    url: str | None = None
    """A Search-R1-compatible /retrieve URL (e.g. http://127.0.0.1:8000/retrieve)."""
    timeout: float = 30.0
    """HTTP timeout in seconds (url only)."""
    retries: int = 3
    """HTTP retries after the first attempt (url only)."""

    def __post_init__(self) -> None:
        if (self.index is None) == (self.url is None):
            raise ConfigError(
                "retriever: set exactly one of retriever.index (a folder) or retriever.url"
            )
        if self.timeout <= 0 or self.retries < 0:
            raise ConfigError(
                f"retriever.timeout={self.timeout} must be > 0 and retriever.retries={self.retries} >= 0"
            )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training and dev questions."""

    train: tuple[str, ...] = ()
    """QA files to train on: FlashRAG .jsonl or Search-R1 .parquet."""
    dev: str | None = None
    """QA file for the dev EM curve during training (None: no dev evaluation)."""
    max_train: int | None = None
    """Use at most this many training questions (the first ones)."""
    dev_limit: int = 200
    """Dev questions evaluated at each evaluation."""
    rename_entities: bool = False
    """Synthetic world only: each RL step respells the world's made-up names afresh (question,
    gold answers, documents; queries are mapped back), so that a name can only be copied, never
    recalled (igsearch.data.world.rename)."""

    def __post_init__(self) -> None:
        if not self.train:
            raise ConfigError("data.train: give at least one QA file (.jsonl or .parquet)")
        if self.max_train is not None and self.max_train < 1:
            raise ConfigError(f"data.max_train={self.max_train}: must be >= 1 (or null)")
        if self.dev_limit < 1:
            raise ConfigError(f"data.dev_limit={self.dev_limit}: must be >= 1")


@dataclasses.dataclass(frozen=True)
class AlgoConfig:
    """Advantage estimator and information-gain settings (docs/design.md, The algorithm)."""

    estimator: str = "ig_grpo"
    """Registered estimator: grpo, ig_grpo or ig_grpo_empty (igsearch.algo.advantages)."""
    alpha: float = 0.3
    """Weight α of the information gain added to query tokens."""
    n_counterfactuals: int = 3
    """N: random document sets scored per search step."""
    ig_norm: typing.Literal["none", "group", "batch"] = "none"
    """IG normalisation before it is added: none, z-score over the group's steps, or the batch's."""
    ig_clip: float | None = None
    """Clip the (normalised) IG to [-ig_clip, ig_clip]; None: no clip."""
    answer_prefix: str = "\n<answer>"
    """Text between a context and the gold alias when scoring (the alias follows after a space)."""
    first_tokens: int = 3
    """The first answer tokens that get the larger weight."""
    first_weight: float = 3.0
    """Weight of those first answer tokens (the rest weigh 1)."""
    max_score_context: int = 4096
    """Scoring contexts are left-truncated to this many tokens."""

    def __post_init__(self) -> None:
        from igsearch.algo.advantages import ESTIMATORS

        if self.estimator not in ESTIMATORS:
            raise ConfigError(
                f"algo.estimator: unknown {self.estimator!r}; choose one of: {', '.join(ESTIMATORS)}"
            )
        if self.alpha < 0:
            raise ConfigError(f"algo.alpha={self.alpha}: must be >= 0 (0 turns IG off)")
        if self.n_counterfactuals < 1:
            raise ConfigError(f"algo.n_counterfactuals={self.n_counterfactuals}: must be >= 1")
        if self.ig_clip is not None and self.ig_clip <= 0:
            raise ConfigError(f"algo.ig_clip={self.ig_clip}: must be > 0 (or null for no clip)")
        if self.first_tokens < 0 or self.first_weight <= 0 or self.max_score_context < 8:
            raise ConfigError(
                "algo: first_tokens >= 0, first_weight > 0 and max_score_context >= 8 are required"
            )


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The RL run: batch, optimiser, KL, checkpoints and logging (passed through to TRL)."""

    output_dir: str = "runs/train"
    """Folder for checkpoints, metrics.jsonl and TensorBoard logs."""
    steps: int = 200
    """Training steps (one batch of rollouts and one update each)."""
    group_size: int = 5
    """G: rollouts per question."""
    batch_size: int = 40
    """Rollouts per step over all processes (questions per step x group_size)."""
    learning_rate: float = 1e-6
    """AdamW learning rate."""
    lr_scheduler: str = "constant"
    """transformers learning-rate schedule name."""
    warmup_ratio: float = 0.0
    """Share of the steps spent warming the learning rate up."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    beta: float = 0.001
    """KL coefficient to the reference policy (0 turns the reference model off)."""
    loss_type: str = "grpo"
    """TRL loss aggregation: grpo, dr_grpo, dapo, bnpo, ..."""
    epsilon: float = 0.2
    """PPO clip range."""
    update_chunks: int = 4
    """Length buckets of the policy update: the step's rows are sorted by real length (prompt +
    completion tokens) and split into this many contiguous micro-batches, each trimmed to its own
    widths, and TRL's loss is run on each and recombined with weights that give the full batch's
    loss exactly (docs/design.md, The policy update). Saves the padding a single forward computes
    when completion lengths vary; 1 runs TRL's single forward over the whole padded batch. Loss
    settings whose loss cannot be split exactly (an entropy bonus or top-entropy mask, MoE aux loss,
    image inputs) run the single forward whatever this says."""
    seed: int = 0
    """Seed of the data order, the sampling and the counterfactual documents."""
    save_steps: int = 50
    """Checkpoint every this many steps (resume with --resume)."""
    save_total_limit: int | None = 3
    """Checkpoints kept on disk (None keeps all)."""
    eval_steps: int = 0
    """Evaluate dev EM every this many steps (0: only at the end, if data.dev is set)."""
    logging_steps: int = 1
    """Log metrics every this many steps."""
    bf16: bool = False
    """Train in bfloat16 (GPU)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory (large models)."""
    use_vllm: bool = False
    """Generate rollouts with TRL's vLLM integration (GPU, `igsearch[vllm]`)."""
    vllm_mode: typing.Literal["colocate", "server"] = "colocate"
    """TRL vLLM mode: colocate (same GPUs) or server (`trl vllm-serve`)."""
    num_threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    report_to: tuple[str, ...] = ("tensorboard",)
    """Trainer integrations to log to (tensorboard, wandb, ...); metrics.jsonl is always written."""

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ConfigError(
                f"train.group_size={self.group_size}: GRPO needs at least 2 rollouts per question"
            )
        if self.batch_size < 1 or self.batch_size % self.group_size:
            raise ConfigError(
                f"train.batch_size={self.batch_size} is not divisible by train.group_size={self.group_size}; "
                f"use a multiple such as {max(1, self.batch_size // self.group_size) * self.group_size}"
            )
        for name in ("steps", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)}: must be >= 1")
        if isinstance(self.update_chunks, bool) or self.update_chunks < 1:
            raise ConfigError(
                f"train.update_chunks={self.update_chunks}: must be an integer >= 1 (1 = one "
                "padded forward over the whole batch; 4 = four length buckets, the default)"
            )
        if self.eval_steps < 0 or self.learning_rate <= 0 or self.beta < 0:
            raise ConfigError(
                "train: eval_steps >= 0, learning_rate > 0 and beta >= 0 are required"
            )


MIN_TRAIN_TEMPERATURE = 0.1
"""Lowest rollout temperature `igsearch train` accepts (see TrainConfig.__post_init__)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """`igsearch train`: policy, data, retriever, rollout, algorithm and optimisation."""

    model: str
    """Policy to train: a Hugging Face folder (e.g. an `igsearch sft` output) or hub name."""
    data: DataConfig
    """Training and dev questions."""
    retriever: RetrieverConfig
    """Where documents come from."""
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    """Multi-turn rollout settings (temperature 1 for training)."""
    algo: AlgoConfig = dataclasses.field(default_factory=AlgoConfig)
    """Advantage estimator and IG settings."""
    train: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    """Optimisation, checkpoints and logging."""
    trust_remote_code: bool = False
    """Allow model code from the model folder or hub (off unless you trust its author)."""

    def __post_init__(self) -> None:
        r = self.rollout
        if r.temperature < MIN_TRAIN_TEMPERATURE:
            raise ConfigError(
                f"rollout.temperature={r.temperature}: training needs sampled rollouts, and TRL's loss "
                f"divides the logits by this temperature (x{1 / max(r.temperature, 1e-5):.0f} here); "
                f"use rollout.temperature=1.0 (evaluation is greedy on its own)"
            )
        if r.top_p < 1:
            raise ConfigError(
                f"rollout.top_p={r.top_p}: rollouts would come from the nucleus while the loss, "
                "TRL's old log-probs and the IG scorer use the full tempered softmax, which makes "
                "every update off-policy; set rollout.top_p=1.0 for training"
            )
