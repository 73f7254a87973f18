"""Batches for training: bucketed by length, padded, with masks, reproducible by epoch."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Batch", "bucket_batches", "collate"]

IGNORE = -100  # target positions the loss skips


@dataclass(frozen=True)
class Batch:
    """src (B, S) ids, src_mask (B, S) True = real, tgt_in (B, T) decoder inputs (<s> ...),
    tgt_out (B, T) what to predict (... </s>), IGNORE at padding."""

    src: Tensor
    src_mask: Tensor
    tgt_in: Tensor
    tgt_out: Tensor

    @property
    def target_tokens(self) -> int:
        return int((self.tgt_out != IGNORE).sum())


def collate(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad: int) -> Batch:
    """pairs of (source ids ending with </s>, target ids <s> ... </s>)."""
    B = len(pairs)
    S = max(len(s) for s, _ in pairs)
    T = max(len(t) for _, t in pairs) - 1
    src = torch.full((B, S), pad, dtype=torch.long)
    tgt_in = torch.full((B, T), pad, dtype=torch.long)
    tgt_out = torch.full((B, T), IGNORE, dtype=torch.long)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s)] = torch.tensor(s)
        tgt_in[i, : len(t) - 1] = torch.tensor(t[:-1])
        tgt_out[i, : len(t) - 1] = torch.tensor(t[1:])
    return Batch(src, src != pad, tgt_in, tgt_out)


def bucket_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, bucket_factor: int = 50
) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), shuffled.

    The same (seed, epoch) always gives the same batches, which is what exact resume needs.
    Examples are shuffled, cut into pools of batch_size * bucket_factor, sorted by length
    inside each pool, cut into batches, and the batches shuffled.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * bucket_factor
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
