"""Logits processors: small pure functions (ids (N, L), scores (N, V)) -> scores (N, V).

`build_processors` returns them in transformers' order, so that the same settings give the
same scores; greedy and sampling apply them to logits, beam search to log-probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import GenerationConfig

Processor = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "Ban",
    "BanTable",
    "Force",
    "Processor",
    "apply_processors",
    "ban_table",
    "build_processors",
]

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
    if not longer:
        return Ban(single, setting="bad_words_ids")

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


class Ban:
    """A processor that sets the scores of `tokens` to -inf while the rows hold n tokens,
    first <= n < stop (n = ids.shape[1]). A search whose processors are all bans may apply
    them inside a compiled graph, at an n held in a tensor (ban_table)."""

    def __init__(
        self, tokens: Sequence[int], first: int = 0, stop: float = math.inf, *, setting: str
    ) -> None:
        self.tokens, self.first, self.stop = tuple(tokens), first, stop
        self.setting = setting  # the setting an error about a token names
        self.index: dict[torch.device, Tensor] = {}  # the tokens' index, made once per device

    def check(self, vocabulary: int) -> None:
        too_big = [t for t in self.tokens if not 0 <= t < vocabulary]
        if too_big:
            raise ValueError(
                f"{self.setting} name tokens {too_big} outside the vocabulary of {vocabulary}"
            )

    def __call__(self, ids: Tensor, scores: Tensor) -> Tensor:
        if not (self.tokens and self.first <= ids.shape[1] < self.stop):
            return scores
        columns = self.index.get(scores.device)
        if columns is None:
            self.check(scores.shape[-1])
            columns = self.index[scores.device] = torch.tensor(self.tokens, device=scores.device)
        return scores.index_fill(1, columns, NEG_INF)


def min_length(length: int, eos: Sequence[int], skip: int = 0) -> Ban:
    """No end token while the row (minus `skip` prompt tokens) is shorter than `length`."""
    return Ban(eos, 0, length + skip, setting="eos_token_id")


class Force(Ban):
    """A processor that leaves only `tokens` possible (score 0, every other -inf) while the
    rows hold n tokens, first <= n < stop."""

    def __call__(self, ids: Tensor, scores: Tensor) -> Tensor:
        if not self.first <= ids.shape[1] < self.stop:
            return scores
        self.check(scores.shape[-1])
        scores = torch.full_like(scores, NEG_INF)
        scores[:, list(self.tokens)] = 0
        return scores


def forced_bos(token: int) -> Force:
    return Force([token], 1, 2, setting="forced_bos_token_id")


def forced_eos(max_length: int, eos: Sequence[int]) -> Force:
    return Force(eos, max_length - 1, max_length, setting="forced_eos_token_id")


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


def suppress(tokens: Sequence[int], *, only_at: int | None = None) -> Ban:
    """Ban these tokens (only when the row has `only_at` tokens, with only_at set: the first
    generated position, for Whisper's begin_suppress_tokens)."""
    if only_at is None:
        return Ban(tokens, setting="suppress_tokens")
    return Ban(tokens, only_at, only_at + 1, setting="begin_suppress_tokens")


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


@dataclass(frozen=True)
class BanTable:
    """The bans (and forced tokens) of a search as tensors, for a compiled graph: in order,
    while the rows hold n tokens, first[r] <= n < stop[r] (R,), rule r sets the scores of
    the tokens where mask[r] (R, V) to -inf, or where force[r], leaves only those tokens
    possible (0, every other -inf: the row of `forced` (R, V), float32)."""

    mask: Tensor
    first: Tensor
    stop: Tensor
    force: Tensor
    forced: Tensor

    def apply(self, scores: Tensor, n: Tensor) -> Tensor:
        """scores (N, V) float32 after the rules at n tokens, a tensor (1,)."""
        active = (self.first <= n) & (n < self.stop)  # (R,)
        for r in range(self.mask.shape[0]):
            scores = scores.masked_fill(self.mask[r] & active[r] & ~self.force[r], NEG_INF)
            scores = torch.where(active[r] & self.force[r], self.forced[r], scores)
        return scores


def ban_table(procs: Sequence[Processor], vocabulary: int, device: torch.device) -> BanTable | None:
    """procs as a BanTable (bans over the same n with no forced tokens between them merged,
    padded to a multiple of 4 rules with rules that do nothing), or None where a processor
    is neither a Ban nor a Force."""
    if not all(isinstance(p, Ban) for p in procs):
        return None
    rules: list[tuple[bool, int, float, set[int]]] = []
    for proc in procs:
        proc.check(vocabulary)
        force = isinstance(proc, Force)
        if not (proc.tokens or force):
            continue
        same = [r for r in rules if not r[0] and r[1:3] == (proc.first, proc.stop)]
        if not force and same and not any(r[0] for r in rules[rules.index(same[-1]) :]):
            same[-1][3].update(proc.tokens)
        else:
            rules.append((force, proc.first, proc.stop, set(proc.tokens)))
    R = 4 * max(1, -(-len(rules) // 4))
    mask = torch.zeros(R, vocabulary, dtype=torch.bool)
    first, stop = torch.zeros(R, dtype=torch.long), torch.zeros(R, dtype=torch.long)
    forced = torch.zeros(R, dtype=torch.bool)
    for r, (force, lo, hi, tokens) in enumerate(rules):
        mask[r, sorted(tokens)] = True
        first[r], stop[r], forced[r] = lo, min(hi, 2**62), force
    only = torch.where(mask, 0.0, NEG_INF)  # the scores a forced rule leaves
    return BanTable(*(t.to(device) for t in (mask, first, stop, forced, only)))
