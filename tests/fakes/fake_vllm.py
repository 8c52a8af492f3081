"""A CPU stand-in for vLLM's offline engine, backed by a Hugging Face causal LM.

It implements the part of vLLM that igsearch and TRL's colocate mode use, with vLLM's documented
semantics:
- `LLM(model, seed=0, logprobs_mode="raw_logprobs", max_model_len=None, **engine_kwargs)` and
  `LLM.generate(prompts, sampling_params=None, use_tqdm=True)`; a prompt is a `TokensPrompt`
  (a dict with `prompt_token_ids`) or a string; `sampling_params` is one `SamplingParams` for all
  prompts or one per prompt. Outputs come back in prompt order.
- `SamplingParams`: `n`; `temperature` (below 1e-5: greedy); `top_p`; `top_k` (0 or -1: off);
  `max_tokens`; `seed` (the request gets its own generator, so its samples do not depend on the
  rest of the batch; without a seed it draws from the engine's generator, seeded by `LLM(seed=)`);
  `stop` (generation ends once the output text contains a stop string; the text is cut before it,
  or after it with `include_stop_str_in_output`; `token_ids` keep every generated token, the one
  that completed the stop string included); `stop_token_ids` and the EOS (unless `ignore_eos`):
  the token is kept in `token_ids`, not in the text; `logprobs` (None: none; k >= 0: per position
  a dict with the sampled token's `Logprob` and the k most likely); `skip_special_tokens`.
- `RequestOutput.outputs[j]`: `CompletionOutput(index, text, token_ids, cumulative_logprob,
  logprobs, finish_reason "stop" | "length", stop_reason = the stop string or stop token id, None
  for EOS)`.
- `logprobs_mode`: "raw_logprobs" (log-softmax of the model's logits) or "processed_logprobs"
  (after temperature, top-k and top-p), as TRL starts the engine.
- TRL's colocate hooks: `llm.llm_engine.model_executor.driver_worker.model_runner.model
  .load_weights([(name, tensor)])`, `reset_prefix_cache()`, `llm_engine.model_config.max_model_len`,
  `get_tokenizer()`; `sleep` / `wake_up` do nothing.

`install(monkeypatch)` makes `import vllm` resolve to this module and points TRL's vLLM
integration at this `LLM`.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import torch

GREEDY_BELOW = 1e-5


class TokensPrompt(dict):
    """vllm.inputs.TokensPrompt: a dict with `prompt_token_ids`."""


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int | None = 16
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    repetition_penalty: float = 1.0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.n < 1 or not 0 < self.top_p <= 1 or self.temperature < 0:
            raise ValueError(f"invalid SamplingParams: {self}")


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = True


class _Weights:
    """The `model` TRL's colocate mode loads synced weights into."""

    def __init__(self, model: torch.nn.Module):
        self.hf = model
        self.loaded = 0

    def load_weights(self, weights: Any) -> None:
        params = dict(self.hf.named_parameters())
        with torch.no_grad():
            for name, tensor in weights:
                params[name].copy_(tensor.to(params[name].dtype))
                self.loaded += 1


def _ns(**kw: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(**kw)


class LLM:
    """vllm.LLM on a Hugging Face model, on the CPU (see the module docstring)."""

    instances: list[LLM] = []

    def __init__(
        self,
        model: str,
        seed: int = 0,
        logprobs_mode: str = "raw_logprobs",
        max_model_len: int | None = None,
        **engine_kwargs: Any,
    ):
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        if logprobs_mode not in ("raw_logprobs", "processed_logprobs"):
            raise ValueError(f"unsupported logprobs_mode {logprobs_mode!r}")
        hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(model)
        self.logprobs_mode = logprobs_mode
        self.engine_kwargs = engine_kwargs
        self.rng = torch.Generator().manual_seed(seed)
        limit = max_model_len or hf.config.max_position_embeddings
        self.weights = _Weights(hf)
        runner = _ns(model=self.weights)
        self.llm_engine = _ns(
            model_executor=_ns(driver_worker=_ns(model_runner=runner)),
            model_config=_ns(max_model_len=limit),
        )
        eos = hf.generation_config.eos_token_id
        self.eos = {eos} if isinstance(eos, int) else set(eos or [self.tokenizer.eos_token_id])
        LLM.instances.append(self)

    @property
    def model(self) -> torch.nn.Module:
        return self.weights.hf

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def reset_prefix_cache(self) -> bool:
        return True

    def sleep(self, level: int = 1) -> None:
        pass

    def wake_up(self, tags: Any = None) -> None:
        pass

    def generate(
        self, prompts: Any, sampling_params: Any = None, use_tqdm: bool = True, **_: Any
    ) -> list[RequestOutput]:
        prompts = prompts if isinstance(prompts, list) else [prompts]
        params = sampling_params if sampling_params is not None else SamplingParams()
        params = params if isinstance(params, list) else [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("the lengths of prompts and sampling_params must be the same")
        outs = []
        for i, (prompt, sp) in enumerate(zip(prompts, params, strict=True)):
            if isinstance(prompt, str):
                ids, text = self.tokenizer(prompt)["input_ids"], prompt
            else:
                ids, text = list(prompt["prompt_token_ids"]), None
            limit = self.llm_engine.model_config.max_model_len
            if len(ids) >= limit:
                raise ValueError(
                    f"prompt of {len(ids)} tokens is longer than max_model_len {limit}"
                )
            gen = torch.Generator().manual_seed(sp.seed) if sp.seed is not None else self.rng
            samples = [self._sample(ids, sp, gen, j) for j in range(sp.n)]
            outs.append(RequestOutput(str(i), text, ids, samples))
        return outs

    def _distributions(self, logits: torch.Tensor, sp: SamplingParams) -> tuple[torch.Tensor, ...]:
        """(raw log-probs, processed log-probs) of one position."""
        raw = torch.log_softmax(logits, -1)
        if sp.temperature < GREEDY_BELOW:
            return raw, raw
        x = logits / sp.temperature
        if sp.top_k and sp.top_k > 0:
            kth = torch.topk(x, min(sp.top_k, x.numel())).values[-1]
            x = x.masked_fill(x < kth, float("-inf"))
        if sp.top_p < 1:
            probs, order = torch.sort(torch.softmax(x, -1), descending=True)
            drop = probs.cumsum(-1) - probs >= sp.top_p  # keep the smallest set reaching top_p
            x = x.clone()
            x[order[drop]] = float("-inf")
        return raw, torch.log_softmax(x, -1)

    def _sample(
        self, prompt: list[int], sp: SamplingParams, gen: torch.Generator, index: int
    ) -> CompletionOutput:
        stops = set(sp.stop_token_ids) | (set() if sp.ignore_eos else self.eos)
        limit = self.llm_engine.model_config.max_model_len
        max_tokens = min(sp.max_tokens or limit, limit - len(prompt))
        ids: list[int] = []
        lps: list[dict[int, Logprob]] = []
        total, past, x = 0.0, None, torch.tensor([prompt])
        finish, reason, text = "length", None, ""
        with torch.no_grad():
            while len(ids) < max_tokens:
                out = self.model(input_ids=x, past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[0, -1].float()
                raw, processed = self._distributions(logits, sp)
                if sp.temperature < GREEDY_BELOW:
                    tok = int(torch.argmax(logits))
                else:
                    tok = int(torch.multinomial(processed.exp(), 1, generator=gen))
                report = processed if self.logprobs_mode == "processed_logprobs" else raw
                total += float(report[tok])
                if sp.logprobs is not None:
                    lps.append(self._logprob_entry(report, tok, sp.logprobs))
                ids.append(tok)
                x = torch.tensor([[tok]])
                if tok in stops:
                    finish, reason = "stop", (None if tok in self.eos else tok)
                    text = self._decode(ids[:-1], sp)
                    break
                text = self._decode(ids, sp)
                hit = self._stop_string(text, sp)
                if hit is not None:
                    (stop, at), finish, reason = hit, "stop", hit[0]
                    text = text[: at + len(stop)] if sp.include_stop_str_in_output else text[:at]
                    break
        return CompletionOutput(
            index, text, ids, total, lps if sp.logprobs is not None else None, finish, reason
        )

    def _decode(self, ids: list[int], sp: SamplingParams) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=sp.skip_special_tokens, clean_up_tokenization_spaces=False
        )

    @staticmethod
    def _stop_string(text: str, sp: SamplingParams) -> tuple[str, int] | None:
        found = [(text.find(s), s) for s in sp.stop if s and s in text]
        if not found:
            return None
        at, stop = min(found)
        return stop, at

    def _logprob_entry(self, report: torch.Tensor, tok: int, k: int) -> dict[int, Logprob]:
        rank = int((report > report[tok]).sum()) + 1
        entry = {tok: Logprob(float(report[tok]), rank, self.tokenizer.decode([tok]))}
        if k > 0:
            top = torch.topk(report, k)
            for r, (v, t) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
                entry.setdefault(int(t), Logprob(float(v), r + 1, self.tokenizer.decode([t])))
        return entry


def install(monkeypatch: Any) -> types.ModuleType:
    """Make `import vllm` (and `vllm.inputs`, `vllm.sampling_params`) resolve to this stand-in and
    point TRL's vLLM integration at it; undone by the monkeypatch fixture."""
    import trl.generation.vllm_generation as trl_vllm

    this = sys.modules[__name__]
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = TokensPrompt
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.SamplingParams = SamplingParams
    sampling.StructuredOutputsParams = dict
    vllm = types.ModuleType("vllm")
    for name in ("LLM", "SamplingParams", "RequestOutput", "TokensPrompt"):
        setattr(vllm, name, getattr(this, name))
    vllm.inputs, vllm.sampling_params = inputs, sampling
    for name, module in (
        ("vllm", vllm),
        ("vllm.inputs", inputs),
        ("vllm.sampling_params", sampling),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(trl_vllm, "is_vllm_available", lambda *a, **k: True)
    for name in ("LLM", "SamplingParams", "RequestOutput"):
        monkeypatch.setattr(trl_vllm, name, getattr(this, name), raising=False)
    monkeypatch.setattr(trl_vllm, "StructuredOutputsParams", dict, raising=False)
    return vllm
