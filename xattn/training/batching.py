"""Batches for training: bucketed by length, padded, with masks, reproducible by epoch."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Batch", "Item", "bucket_batches", "collate", "collate_items", "pad_sources"]

IGNORE = -100  # target positions the loss skips


@dataclass(frozen=True)
class Batch:
    """src (B, S) ids (or what a front end reads: (B, S, F) features, (B, N, L) sentences),
    src_mask (B, S) True = real, tgt_in (B, T) decoder inputs (<s> ...),
    tgt_out (B, T) what to predict (... </s>), IGNORE at padding.
    alignment: the gold alignment as (K, 3) long rows (b, t, s) - decoder row t of example b
    should look at memory position s - and (K,) weights, 1 / (positions of that row), so
    each supervised row's weights sum to 1; None without gold."""

    src: Tensor
    src_mask: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    alignment: tuple[Tensor, Tensor] | None = None

    @property
    def target_tokens(self) -> int:
        return int((self.tgt_out != IGNORE).sum())


@dataclass(frozen=True)
class Item:
    """One encoded example. source: token ids (S,), float features (S, F) (image columns,
    log-mel frames) or sentences of word ids (N, L). target: <s> ... </s>. prompt: how many
    leading target tokens are given rather than predicted (1: just <s>; a question
    fed to the decoder makes it longer)."""

    source: Sequence[int] | Tensor
    target: Sequence[int]
    prompt: int = 1
    alignment: Sequence[Sequence[int]] | None = None  # memory positions of each answer word

    @property
    def length(self) -> int:
        """What batches are bucketed by: the longer of source and target."""
        return max(len(self.source), len(self.target))


def pad_sources(sources: Sequence[Sequence[int] | Tensor], pad: int) -> tuple[Tensor, Tensor]:
    """Sources right-padded along their first dimension: (src, src_mask (B, S)).

    Token id lists give (B, S) padded with `pad`; float tensors (S, F) give (B, S, F) padded
    with zeros; long tensors (N, L) (sentences) give (B, N, L) padded with `pad`.
    """
    if not isinstance(sources[0], Tensor):
        from ..utils import pad_batch

        return pad_batch(sources, pad)
    B, S = len(sources), max(s.shape[0] for s in sources)
    rest = [max(s.shape[d] for s in sources) for d in range(1, sources[0].dim())]
    fill = 0 if sources[0].is_floating_point() else pad
    src = torch.full((B, S, *rest), fill, dtype=sources[0].dtype)
    mask = torch.zeros(B, S, dtype=torch.bool)
    for i, s in enumerate(sources):
        src[(i, *(slice(0, n) for n in s.shape))] = s
        mask[i, : s.shape[0]] = True
    return src, mask


def collate_items(items: Sequence[Item], pad: int) -> Batch:
    """A training batch of Items; the prompt's predictions are left out of the loss. The
    decoder row that predicts answer word k is row prompt - 1 + k."""
    src, src_mask = pad_sources([item.source for item in items], pad)
    batch = collate([([], item.target) for item in items], pad)
    for i, item in enumerate(items):
        batch.tgt_out[i, : item.prompt - 1] = IGNORE
    links, weights = [], []
    for i, item in enumerate(items):
        for k, positions in enumerate(item.alignment or ()):
            if not positions:
                continue
            links += [(i, item.prompt - 1 + k, s) for s in positions]
            weights += [1.0 / len(positions)] * len(positions)
    alignment = None
    if links:
        alignment = (torch.tensor(links, dtype=torch.long), torch.tensor(weights))
    return Batch(src, src_mask, batch.tgt_in, batch.tgt_out, alignment)


def collate(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad: int) -> Batch:
    """pairs of (source ids ending with </s>, target ids <s> ... </s>)."""
    B = len(pairs)
    S = max(1, max(len(s) for s, _ in pairs))
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
