"""Logits processors: small pure functions (ids (N, L), scores (N, V)) -> scores (N, V).

`build_processors` returns them in transformers' order, so that the same settings give the
same scores; greedy and sampling apply them to logits, beam search to log-probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .config import GenerationConfig

Processor = Callable[[Tensor, Tensor], Tensor]

__all__ = ["Processor", "apply_processors", "build_processors"]

NEG_INF = -math.inf


def repetition_penalty(penalty: float) -> Processor:
    """Divide positive scores (multiply negative ones) of tokens already in the row."""

    def process(ids: Tensor, scores: Tensor) -> Tensor:
        seen = torch.gather(scores, 1, ids)  # (N, L)
        seen = torch.where(seen < 0, seen * penalty, seen / penalty)
        return scores.scatter(1, ids, seen)

    return process


def no_repeat_ngram(size: int) -> Processor:
    """Ban any token that would complete an n-gram already present in the row."""

    def process(ids: Tensor, scores: Tensor) -> Tensor:
        L = ids.shape[1]
        if L < size:
            return scores
        prefix = ids[:, L + 1 - size :]  # (N, size - 1): what the next token would extend
        windows = ids.unfold(1, size, 1)  # (N, L - size + 1, size)
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(-1)  # (N, W)
        V = scores.shape[-1]
        banned = torch.zeros(scores.shape[0], V + 1, dtype=torch.bool, device=scores.device)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=V), V), True)
        return scores.masked_fill(banned[:, :V], NEG_INF)

    return process


def bad_words(sequences: Sequence[Sequence[int]], eos: Sequence[int]) -> Processor:
    """Ban single tokens always, and the last token of a longer sequence after its prefix.
    A bad "word" that is just an end token is ignored (as transformers does)."""
    sequences = [tuple(s) for s in sequences if not (len(s) == 1 and s[0] in eos)]
    single = sorted({s[0] for s in sequences if len(s) == 1})
    longer = [s for s in sequences if len(s) > 1]

    def process(ids: Tensor, scores: Tensor) -> Tensor:
        V = scores.shape[-1]
        too_big = [t for s in sequences for t in s if t >= V]
        if too_big:
            raise ValueError(f"bad_words_ids name tokens {too_big} outside the vocabulary of {V}")
        bias = torch.zeros_like(scores)
        if single:
            bias[:, single] = NEG_INF
        for seq in longer:
            prefix = torch.tensor(seq[:-1], device=ids.device)
            if len(prefix) > ids.shape[1]:
                continue
            hit = (ids[:, -len(prefix) :] == prefix).all(-1)  # (N,)
            bias[:, seq[-1]] += torch.where(hit, NEG_INF, 0.0).to(bias.dtype)
        return scores + bias

    return process


def _ban(tokens: Sequence[int]) -> Callable[[Tensor], Tensor]:
    """scores (N, V) -> scores with the columns of `tokens` set to -inf (a new tensor); the
    index of those columns is made once per device, not at every step."""
    index: dict[torch.device, Tensor] = {}

    def ban(scores: Tensor) -> Tensor:
        columns = index.get(scores.device)
        if columns is None:
            columns = index[scores.device] = torch.tensor(tokens, device=scores.device)
        return scores.index_fill(1, columns, NEG_INF)

    return ban


def min_length(length: int, eos: Sequence[int], skip: int = 0) -> Processor:
    """No end token while the row (minus `skip` prompt tokens) is shorter than `length`."""
    ban = _ban(list(eos))

    def process(ids: Tensor, scores: Tensor) -> Tensor:
        return ban(scores) if ids.shape[1] - skip < length else scores

    return process


def forced_bos(token: int) -> Processor:
    def process(ids: Tensor, scores: Tensor) -> Tensor:
        if ids.shape[1] == 1:
            scores = torch.full_like(scores, NEG_INF)
            scores[:, token] = 0
        return scores

    return process


def forced_eos(max_length: int, eos: Sequence[int]) -> Processor:
    def process(ids: Tensor, scores: Tensor) -> Tensor:
        if ids.shape[1] == max_length - 1:
            scores = torch.full_like(scores, NEG_INF)
            scores[:, list(eos)] = 0
        return scores

    return process


def temperature(value: float) -> Processor:
    return lambda ids, scores: scores / value


def top_k(k: int, min_keep: int = 1) -> Processor:
    def process(ids: Tensor, scores: Tensor) -> Tensor:
        kth = torch.topk(scores, min(max(k, min_keep), scores.shape[-1]))[0][..., -1, None]
        return scores.masked_fill(scores < kth, NEG_INF)

    return process


def top_p(p: float, min_keep: int = 1) -> Processor:
    def process(ids: Tensor, scores: Tensor) -> Tensor:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        remove = cumulative <= (1 - p)
        remove[..., -min_keep:] = False
        return scores.masked_fill(remove.scatter(1, order, remove), NEG_INF)

    return process


def suppress(tokens: Sequence[int], *, only_at: int | None = None) -> Processor:
    """Ban these tokens (only when the row has `only_at` tokens, with only_at set: the first
    generated position, for Whisper's begin_suppress_tokens)."""
    ban = _ban(list(tokens))

    def process(ids: Tensor, scores: Tensor) -> Tensor:
        if only_at is not None and ids.shape[1] != only_at:
            return scores
        return ban(scores)

    return process


def build_processors(config: GenerationConfig, max_length: int, prompt_length: int = 1):
    """The processors of `config`, in transformers' order."""
    eos = config.eos_token_id or ()
    procs: list[Processor] = []
    if config.repetition_penalty != 1.0:
        procs.append(repetition_penalty(config.repetition_penalty))
    if config.no_repeat_ngram_size > 0:
        procs.append(no_repeat_ngram(config.no_repeat_ngram_size))
    if config.bad_words_ids:
        procs.append(bad_words(config.bad_words_ids, eos))
    if config.min_length > 0 and eos:
        procs.append(min_length(config.min_length, eos))
    if config.min_new_tokens and eos:
        procs.append(min_length(config.min_new_tokens, eos, skip=prompt_length))
    if config.forced_bos_token_id is not None:
        procs.append(forced_bos(config.forced_bos_token_id))
    if config.forced_eos_token_id is not None:
        procs.append(forced_eos(max_length, config.forced_eos_token_id))
    if config.suppress_tokens:
        procs.append(suppress(config.suppress_tokens))
    if config.begin_suppress_tokens:
        procs.append(suppress(config.begin_suppress_tokens, only_at=prompt_length))
    if config.do_sample:
        min_keep = (len(eos) + 1 if eos else 2) if config.num_beams > 1 else 1
        if config.temperature != 1.0:
            procs.append(temperature(config.temperature))
        if config.top_k:
            procs.append(top_k(config.top_k, min_keep))
        if config.top_p < 1.0:
            procs.append(top_p(config.top_p, min_keep))
    return procs


def apply_processors(procs: Sequence[Processor], ids: Tensor, scores: Tensor) -> Tensor:
    for process in procs:
        scores = process(ids, scores)
    return scores
