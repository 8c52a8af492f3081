"""Generation backends for the rollout loop: Hugging Face `generate` (CPU or GPU) and vLLM (GPU).

A backend takes token-id contexts and returns only the new ids of each row, cut right after the
first stop string (the token completing it is kept whole) or after the first EOS; sampling is
seeded. Sampling uses the plain tempered softmax with nucleus `top_p` and nothing else (no top-k,
no repetition penalty, whatever the checkpoint's generation_config says), as policy-gradient
log-probs assume. With temperature > 0 a row's sample depends on the rest of its batch (one RNG
stream per call); greedy decoding gives the same ids batched or alone (left padding with position
ids from the attention mask), up to floating-point ties.

`generate_with_logprobs` also returns, per row, the log-probability each returned token had under
the distribution it was sampled from (tempered softmax; the untempered one when greedy), which the
trainer hands to TRL for its sampling importance correction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from igsearch.errors import IGSearchError
from igsearch.tokens import cut_turn, eos_ids


@runtime_checkable
class Generator(Protocol):
    """Continues a batch of token-id contexts; the rollout loop's only view of a policy."""

    tokenizer: Any
    """Tokenizer of the policy (the loop encodes prompts and blocks and decodes turns with it)."""
    eos_token_ids: frozenset[int]
    """Ids that end a trajectory."""

    def generate(
        self,
        batch: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_strings: Sequence[str] = (),
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[list[int]]:
        """New ids per row (at most `max_new_tokens`), cut after a stop string or EOS; 0 = greedy."""
        ...


class _StopOnStrings:
    """StoppingCriteria: a row is done once its generated tail contains a stop string."""

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], prompt_width: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stop_strings if s]
        self.prompt_width = prompt_width
        self.window = max((len(s.encode()) for s in self.stops), default=0) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tails = input_ids[:, self.prompt_width :][:, -self.window :].tolist()
        texts = self.tokenizer.batch_decode(
            tails, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        done = [any(s in t for s in self.stops) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _SampledLogprobs:
    """LogitsProcessor that records log_softmax(scores / T) at every step and, one step later (when
    the sampled token is known), the sampled token's entry. transformers runs custom processors
    before its own temperature / top-p warpers, so the temperature is applied here."""

    def __init__(self, temperature: float):
        self.temperature = temperature if temperature > 0 else 1.0
        self.prev: Any = None
        self.values: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.prev is not None:
            self.take(input_ids[:, -1])
        self.prev = torch.log_softmax(scores.float() / self.temperature, -1)
        return scores

    def take(self, tokens: Any) -> None:
        """Record the previous step's log-prob of `tokens` (B,)."""
        self.values.append(self.prev.gather(-1, tokens[:, None]).squeeze(-1))
        self.prev = None

    def rows(self) -> list[list[float]]:
        """(B, steps) recorded log-probs as lists."""
        import torch

        return torch.stack(self.values, 1).tolist() if self.values else []


def bind_policy(gen: Any, model: Any, tokenizer: Any, device: Any = None) -> None:
    """Set what every Hugging Face backend holds: the model in eval mode (moved to `device` when
    given) and its device, the tokenizer, the EOS ids of tokenizer and generation config, and the
    pad id (the smallest EOS id when the tokenizer has none)."""
    gen.model = model.eval()
    if device is not None:
        gen.model.to(device)
    gen.device = next(gen.model.parameters()).device
    gen.tokenizer = tokenizer
    gen_config = getattr(model, "generation_config", None)
    gen.eos_token_ids = eos_ids(tokenizer.eos_token_id, getattr(gen_config, "eos_token_id", None))
    pad = tokenizer.pad_token_id
    gen.pad_token_id = int(pad) if pad is not None else min(gen.eos_token_ids)


class HFGenerator:
    """Batched `model.generate` with left padding; works on CPU and GPU.

    `device` defaults to the model's device; `logits_processor` (a transformers
    LogitsProcessorList) applies at every step, e.g. for constrained decoding. Rows are padded on
    the left with an attention mask (transformers derives position ids from it); each call's
    sampling RNG is seeded from `seed` inside `torch.random.fork_rng`, so the caller's global RNG
    state is left untouched.
    """

    def __init__(
        self, model: Any, tokenizer: Any, device: Any = None, logits_processor: Any = None
    ):
        import torch

        bind_policy(self, model, tokenizer, device)
        self.logits_processor = logits_processor
        self._torch = torch

    def _pad(self, batch: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        torch = self._torch
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ids in enumerate(batch):
            if ids:
                input_ids[i, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
                mask[i, width - len(ids) :] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _generation_config(self, max_new_tokens: int, temperature: float, top_p: float) -> Any:
        from transformers import GenerationConfig

        sampling = temperature > 0
        # explicit values override the checkpoint's generation_config (top_k=0: no top-k cut)
        if sampling:
            extra = dict(temperature=temperature, top_p=top_p, top_k=0)
        else:  # neutral values, so transformers does not warn about sampling flags it ignores
            extra = dict(temperature=1.0, top_p=1.0, top_k=50)
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            pad_token_id=self.pad_token_id,
            eos_token_id=sorted(self.eos_token_ids),
            **extra,
        )

    def generate(
        self,
        batch: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_strings: Sequence[str] = (),
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[list[int]]:
        """New ids per row, cut after the first stop string or EOS (see the module docstring)."""
        return self.generate_with_logprobs(
            batch, max_new_tokens, stop_strings, temperature, top_p, seed
        )[0]

    def generate_with_logprobs(
        self,
        batch: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_strings: Sequence[str] = (),
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> tuple[list[list[int]], list[list[float]]]:
        """(new ids, their sampling log-probs) per row; log-probs are of the tempered full softmax
        (after any user logits processor), whatever `top_p`."""
        if not batch:
            return [], []
        if any(not ids for ids in batch):
            raise IGSearchError("HFGenerator.generate: every context needs at least one token")
        torch = self._torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        input_ids, mask = self._pad(batch)
        width = input_ids.shape[1]
        stop = (
            StoppingCriteriaList([_StopOnStrings(self.tokenizer, stop_strings, width)])
            if stop_strings
            else None
        )
        record = _SampledLogprobs(temperature)
        processors = LogitsProcessorList([*(self.logits_processor or []), record])
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=self._generation_config(max_new_tokens, temperature, top_p),
                stopping_criteria=stop,
                logits_processor=processors,
            )
            if record.prev is not None and out.shape[1] > width:
                record.take(out[:, -1])
        new, logprobs = out[:, width:].tolist(), record.rows()
        ids = [cut_turn(self.tokenizer, row, stop_strings, self.eos_token_ids)[0] for row in new]
        return ids, [
            lp[: len(row)] for lp, row in zip(logprobs or [[]] * len(ids), ids, strict=True)
        ]


VLLM_HINT = (
    "pip install 'igsearch[vllm]' on a machine with an NVIDIA GPU and CUDA, or use HFGenerator"
)


def _generation_eos(model: str) -> Any:
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        return None


class VLLMGenerator:
    """vLLM offline engine fed token-id prompts; needs the `vllm` extra and a CUDA GPU.

    `model` is a Hugging Face folder or hub name; `llm_kwargs` go to `vllm.LLM` (e.g.
    gpu_memory_utilization, dtype, max_model_len). `from_llm` wraps an engine that already exists
    (TRL's colocated one during training). Row i of a call is sampled with its own seed `seed + i`,
    so its tokens do not depend on the rest of the batch; EOS ids are passed as `stop_token_ids`.
    Log-probs are what the engine reports for the sampled tokens: tempered ones when the engine
    runs with `logprobs_mode="processed_logprobs"` (as TRL starts it), raw ones otherwise.
    """

    def __init__(self, model: str, tokenizer: Any = None, **llm_kwargs: Any):
        try:
            import vllm
        except ImportError:
            raise IGSearchError(
                f"VLLMGenerator needs vLLM, which is not installed: {VLLM_HINT}"
            ) from None
        import torch

        if not torch.cuda.is_available():
            raise IGSearchError(f"VLLMGenerator needs a CUDA GPU and none is visible: {VLLM_HINT}")
        self.llm = vllm.LLM(model=str(model), **llm_kwargs)
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self.eos_token_ids = eos_ids(self.tokenizer.eos_token_id, _generation_eos(str(model)))

    @classmethod
    def from_llm(
        cls, llm: Any, tokenizer: Any, eos_token_ids: Iterable[int] | None = None
    ) -> VLLMGenerator:
        """Wrap an existing `vllm.LLM`; `eos_token_ids` default to the tokenizer's EOS."""
        gen = cls.__new__(cls)
        gen.llm, gen.tokenizer = llm, tokenizer
        gen.eos_token_ids = eos_ids(tokenizer.eos_token_id, eos_token_ids)
        return gen

    def generate(
        self,
        batch: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_strings: Sequence[str] = (),
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[list[int]]:
        """New ids per row, cut after the first stop string or EOS (see the module docstring)."""
        return self.generate_with_logprobs(
            batch, max_new_tokens, stop_strings, temperature, top_p, seed
        )[0]

    def generate_with_logprobs(
        self,
        batch: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_strings: Sequence[str] = (),
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> tuple[list[list[int]], list[list[float]]]:
        """(new ids, the engine's log-probs of them) per row (see the class docstring)."""
        if not batch:
            return [], []
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                n=1,
                max_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p if temperature > 0 else 1.0,
                seed=seed + i,
                stop=list(stop_strings),
                stop_token_ids=sorted(self.eos_token_ids),
                include_stop_str_in_output=True,
                skip_special_tokens=False,
                spaces_between_special_tokens=False,
                logprobs=0,
            )
            for i in range(len(batch))
        ]
        prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in batch]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        ids, logprobs = [], []
        for out in outs:
            row = list(out.outputs[0].token_ids)
            cut = cut_turn(self.tokenizer, row, stop_strings, self.eos_token_ids)[0]
            ids.append(cut)
            logprobs.append(_sampled_logprobs(out.outputs[0].logprobs, cut))
        return ids, logprobs


def _sampled_logprobs(per_position: Any, ids: Sequence[int]) -> list[float]:
    """The log-prob of each of `ids` from vLLM's per-position {token id: Logprob} dicts (NaN where
    the engine reported none)."""
    if per_position is None:
        return [float("nan")] * len(ids)
    return [
        float(getattr(entry.get(t), "logprob", float("nan")))
        for entry, t in zip(per_position, ids, strict=False)
    ]
