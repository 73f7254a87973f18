"""Caches for attention: passed into modules and returned by them, never stored on them.

- `KVCache`: preallocated keys and values of causal self-attention, grown one decoding
  step at a time (gpt-fast style: one buffer, a small update method).
- `CrossAttentionMemory`: the projected keys and values of one source, computed once by
  `CrossAttention.project_memory` and reused by every decoding step and every beam.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..utils import format_shape

__all__ = ["CrossAttentionMemory", "KVCache", "moved_rows"]


def moved_rows(indices: Tensor) -> Tensor:
    """The rows i with indices[i] != i (those a reorder by `indices` must copy)."""
    rows = torch.arange(len(indices), device=indices.device)
    return (indices != rows).nonzero().squeeze(1)


@dataclass(frozen=True)
class CrossAttentionMemory:
    """Projected source keys and values for cross-attention (immutable).

    key: (B, Hkv, S, Dh); value: (B, Hkv, S, Dh); mask: (B, S) bool, True = real token,
    or None when every source position is real.
    """

    key: Tensor
    value: Tensor
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        if self.key.dim() != 4 or self.value.shape[:3] != self.key.shape[:3]:
            raise ValueError(
                f"memory key {format_shape(self.key.shape)} and value "
                f"{format_shape(self.value.shape)}; "
                f"expected (B, Hkv, S, Dh) each with the same B, Hkv, S"
            )
        B, S = self.key.shape[0], self.key.shape[2]
        if self.mask is not None and (
            self.mask.dtype != torch.bool or tuple(self.mask.shape) != (B, S)
        ):
            raise ValueError(
                f"memory mask has shape {format_shape(self.mask.shape)} and dtype "
                f"{self.mask.dtype}; "
                f"expected (B, S) = ({B}, {S}) of torch.bool"
            )

    @property
    def batch_size(self) -> int:
        return self.key.shape[0]

    @property
    def source_length(self) -> int:
        return self.key.shape[2]

    def index_select(self, indices: Tensor) -> CrossAttentionMemory:
        """The memory of sources `indices` (B',), e.g. to drop finished sources."""
        mask = None if self.mask is None else self.mask.index_select(0, indices)
        return CrossAttentionMemory(
            self.key.index_select(0, indices), self.value.index_select(0, indices), mask
        )


@dataclass(frozen=True)
class KVCache:
    """A preallocated key/value cache for causal self-attention.

    key: (B, Hkv, max_length, Dh) and value: (B, Hkv, max_length, Dv) buffers, of which
    the first `length` positions are filled. `append` writes the new positions into the
    shared buffers and returns a new KVCache with the larger length; nothing is stored on
    any module. The buffers are written in place, so a cache is for inference (no_grad).
    rows: None, or (B, max_length) long, for compiled beam search steps (write_at): row
    b's key and value at position t are those of buffer row rows[b, t], so that beams
    that continue other beams read their keys where they were written, and no cache is
    reordered. Such a cache is written with write_at and reordered by its table (reorder);
    append, which fills positions in order, refuses it (write, unchecked, is for caches
    without rows).
    """

    key: Tensor
    value: Tensor
    length: int = 0
    rows: Tensor | None = None

    @classmethod
    def empty(
        cls,
        batch_size: int,
        num_kv_heads: int,
        max_length: int,
        head_dim: int,
        *,
        value_dim: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> KVCache:
        shape = (batch_size, num_kv_heads, max_length, head_dim)
        value_shape = (batch_size, num_kv_heads, max_length, value_dim or head_dim)
        return cls(
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(value_shape, dtype=dtype, device=device),
            0,
        )

    @property
    def max_length(self) -> int:
        return self.key.shape[2]

    def append(self, key: Tensor, value: Tensor) -> tuple[KVCache, Tensor, Tensor]:
        """Write key (B, Hkv, t, Dh) and value (B, Hkv, t, Dv) after the filled positions.

        Returns (new cache, all keys (B, Hkv, length + t, Dh), all values).
        """
        if self.rows is not None:
            raise ValueError(
                f"KVCache.append fills positions in order, but this cache reads its rows "
                f"through a table (rows {format_shape(self.rows.shape)}, compiled beam "
                f"search): write it with write_at"
            )
        B, Hkv, _, Dh = self.key.shape
        t = key.shape[2]
        if key.dim() != 4 or key.shape[:2] != (B, Hkv) or key.shape[3] != Dh:
            raise ValueError(
                f"new key has shape {format_shape(key.shape)}; expected (B, Hkv, t, Dh) with "
                f"B={B}, Hkv={Hkv}, Dh={Dh} (the cache's)"
            )
        if value.shape[:3] != key.shape[:3] or value.shape[3] != self.value.shape[3]:
            raise ValueError(
                f"new value has shape {format_shape(value.shape)}; expected (B, Hkv, t, Dv) = "
                f"({B}, {Hkv}, {t}, {self.value.shape[3]})"
            )
        end = self.length + t
        if end > self.max_length:
            raise ValueError(
                f"KVCache holds {self.max_length} positions; appending {t} to {self.length} "
                f"would need {end}. Allocate a longer cache"
            )
        self.key[:, :, self.length : end] = key
        self.value[:, :, self.length : end] = value
        new = KVCache(self.key, self.value, end)
        return new, self.key[:, :, :end], self.value[:, :, :end]

    def write(self, key: Tensor, value: Tensor) -> tuple[KVCache, Tensor, Tensor]:
        """append without its checks, for decoding steps whose shapes generate checked:
        writes key (B, Hkv, t, Dh) and value in place; (new cache, all keys, all values)."""
        end = self.length + key.shape[2]
        self.key[:, :, self.length : end] = key
        self.value[:, :, self.length : end] = value
        return (
            KVCache(self.key, self.value, end),
            self.key[:, :, :end],
            self.value[:, :, :end],
        )

    def write_at(self, key: Tensor, value: Tensor, position: Tensor) -> tuple[Tensor, Tensor]:
        """write for compiled decoding steps, at a tensor position (1,) rather than at
        `length`, so one compiled graph serves every length: writes key (B, Hkv, 1, Dh) and
        value in place there and returns the whole buffers (B, Hkv, max_length, Dh), whose
        positions after `position` are to be masked (`filled`). The length is left to the
        caller. With rows, the buffers are read through them (B, Hkv, max_length, Dh); the key
        and value written land in each row's own buffer row, so rows[:, position] is to name
        each row itself (the caller writes that column, as compiled beam search does)."""
        self.key.index_copy_(2, position, key)
        self.value.index_copy_(2, position, value)
        if self.rows is None:
            return self.key, self.value
        at = torch.arange(self.max_length, device=position.device)
        # (B, max_length, Hkv, Dh): the two index tensors broadcast and come first
        keys, values = self.key[self.rows, :, at], self.value[self.rows, :, at]
        return keys.transpose(1, 2), values.transpose(1, 2)

    def filled(self, position: Tensor) -> Tensor:
        """The attention mask (1, 1, 1, max_length) of the positions up to `position` (1,)."""
        return (torch.arange(self.max_length, device=position.device) <= position)[None, None, None]

    def reorder(self, indices: Tensor, moved: Tensor | None = None) -> KVCache:
        """The cache of batch rows `indices` (B,) (e.g. surviving beams: row i continues
        row indices[i]), written into the same buffers: only the rows that continue another
        row are copied (beam search keeps most rows where they are), so the cache this is
        called on is not to be used after. moved: the rows i with indices[i] != i, when the
        caller has them (one reorder per layer needs them once). A cache with rows copies
        nothing: its table's rows are reordered (row i reads what row indices[i] read)."""
        if self.rows is not None:
            return dataclasses.replace(self, rows=self.rows.index_select(0, indices))
        if self.key.requires_grad or self.value.requires_grad:  # autograd: new tensors
            keys, values = self.key.index_select(0, indices), self.value.index_select(0, indices)
            return KVCache(keys, values, self.length)
        if moved is None:
            moved = moved_rows(indices)
        if len(moved):
            sources, L = indices[moved], self.length
            for buffer in (self.key[:, :, :L], self.value[:, :, :L]):
                buffer.index_copy_(0, moved, buffer.index_select(0, sources))
        return self
