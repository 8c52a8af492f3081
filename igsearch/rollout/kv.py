"""Key/value caches for `CachedHFGenerator`: in-place batch buffers and per-row caches kept between calls.

One generate call owns a `BatchCache`: per layer, key and value buffers of shape (B, H, cap, d)
written in place (a transformers `DynamicLayer` whose `update` copies the new states into the
buffer and returns a view of the filled columns; `DynamicCache` concatenates instead, copying the
whole cache at every token), and an attention mask (B, cap) that marks which columns hold a real
token of each row. Columns are shared by the batch, so a row's tokens need not be contiguous: the
mask and explicit position ids keep attention and rotary positions exact across the holes.

When the call ends, each row's real columns become a `RowCache` (the token ids they encode, the
buffers, the row and the column indices); the next call gathers them into its own buffers, right
aligned before the new tokens, and prefills only what was appended since (an inserted block and
the last generated token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class BufferLayer(DynamicLayer):
    """One layer's keys and values, (B, H, cap, d) buffers filled in place from column 0 on."""

    def __init__(self, batch: int, cap: int):
        super().__init__()
        self.batch, self.cap, self.length = batch, cap, 0
        self.buf_k: torch.Tensor | None = None
        self.buf_v: torch.Tensor | None = None

    def allocate(self, heads: int, k_dim: int, v_dim: int, dtype: Any, device: Any) -> None:
        """Zeroed buffers (masked columns must hold finite values: 0 x NaN is NaN in attention)."""
        self.buf_k = torch.zeros((self.batch, heads, self.cap, k_dim), dtype=dtype, device=device)
        self.buf_v = torch.zeros((self.batch, heads, self.cap, v_dim), dtype=dtype, device=device)
        self.dtype, self.device, self.is_initialized = dtype, device, True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        heads, k_dim, v_dim = key_states.shape[1], key_states.shape[-1], value_states.shape[-1]
        self.allocate(heads, k_dim, v_dim, key_states.dtype, key_states.device)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.cap:
            raise RuntimeError(
                f"key/value buffer overflow: {end} columns for a capacity of {self.cap}"
            )
        self.buf_k[:, :, self.length : end] = key_states
        self.buf_v[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.buf_k[:, :, :end], self.buf_v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (new buffers: the old ones may still back a RowCache)."""
        self.batch = len(rows)
        if self.is_initialized:
            self.buf_k, self.buf_v = self.buf_k[rows], self.buf_v[rows]
            self.keys, self.values = (
                self.buf_k[:, :, : self.length],
                self.buf_v[:, :, : self.length],
            )


@dataclass
class RowCache:
    """The keys and values of one row's tokens, left in the buffers of the call that computed them."""

    ids: list[int]
    """The token ids whose states are cached, in order."""
    keys: list[torch.Tensor]
    """Per layer, the (B, H, cap, d) key buffer holding them."""
    values: list[torch.Tensor]
    """Per layer, the value buffer holding them."""
    row: int
    """Row of the buffers."""
    columns: torch.Tensor
    """(len(ids),) buffer columns of the tokens, increasing."""

    def bind(self, ids: list[int]) -> RowCache:
        """The cache of the first len(ids) cached tokens, which are `ids`."""
        if len(ids) > len(self.columns):
            raise RuntimeError(f"row {self.row} caches {len(self.columns)} tokens, not {len(ids)}")
        return RowCache(list(ids), self.keys, self.values, self.row, self.columns[: len(ids)])


class BatchCache:
    """Buffers, attention mask and next positions of one generate call's batch."""

    def __init__(self, n_layers: int, batch: int, cap: int, device: Any):
        self.layers = [BufferLayer(batch, cap) for _ in range(n_layers)]
        self.cache = Cache(layers=self.layers)
        self.mask = torch.zeros((batch, cap), dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)
        self.device = device

    @property
    def length(self) -> int:
        """Columns written so far (the same for every layer)."""
        return self.layers[0].length

    def load(self, cached: list[RowCache | None], width: int) -> None:
        """Gather each row's cached states into columns [width - len, width), right aligned."""
        rows = [i for i, c in enumerate(cached) if c is not None and c.ids]
        for layer in self.layers:
            layer.length = width
        if not rows:
            return
        first = cached[rows[0]]
        for layer, k, v in zip(self.layers, first.keys, first.values, strict=True):
            layer.allocate(k.shape[1], k.shape[-1], v.shape[-1], k.dtype, k.device)
        groups: dict[int, list[int]] = {}
        for i in rows:
            groups.setdefault(id(cached[i].keys[0]), []).append(i)
        for members in groups.values():
            self._gather([cached[i] for i in members], members, width)
        for i in rows:
            n = len(cached[i].ids)
            self.mask[i, width - n : width] = 1
            self.positions[i] = n

    def _gather(self, sources: list[RowCache], rows: list[int], width: int) -> None:
        """Copy rows sharing one source buffer: (g, width) source columns, left-padded by repeats."""
        cols = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
        for j, src in enumerate(sources):
            c = src.columns.to(self.device)
            cols[j, width - len(c) :] = c
            cols[j, : width - len(c)] = c[0]
        src_rows = torch.tensor([s.row for s in sources], device=self.device)[:, None]
        dst = torch.tensor(rows, device=self.device)
        for layer, k, v in zip(self.layers, sources[0].keys, sources[0].values, strict=True):
            # (g, width, H, d) -> (g, H, width, d)
            layer.buf_k[dst, :, :width] = k[src_rows, :, cols].permute(0, 2, 1, 3)
            layer.buf_v[dst, :, :width] = v[src_rows, :, cols].permute(0, 2, 1, 3)

    def select(self, rows: list[int]) -> None:
        """Keep only `rows` of the batch (in that order)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        for layer in self.layers:
            layer.select(index)
        self.mask, self.positions = self.mask[index], self.positions[index]

    def snapshot(self, row: int) -> RowCache:
        """Every real column of `row` so far (ids unset: `RowCache.bind` names them)."""
        columns = torch.nonzero(self.mask[row, : self.length]).flatten()
        keys = [layer.buf_k for layer in self.layers]
        values = [layer.buf_v for layer in self.layers]
        return RowCache([], keys, values, row, columns)
