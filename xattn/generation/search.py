"""Search: greedy, sampling and beam search, driving a step function, not a model.

A `Stepper` is anything with
    step(tokens (N, 1)) -> (logits (N, V), extras (N, ...) or None)
    reorder(indices (N,)) -> None      # beam search: row i continues row indices[i]
that keeps its own decoding state (an xattn model's cached decoder, or a table of
hand-made log-probabilities in the tests). `extras` (e.g. cross-attention maps of the
step) are collected and follow the beams.

Beam search reproduces transformers' vectorized beam search (same candidates kept, same
length penalty, same `early_stopping` modes, same output layout), so that the same weights
give the same beams token for token.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .config import GenerationConfig
from .processors import BanTable, apply_processors, ban_table, build_processors

__all__ = [
    "BeamRule",
    "BeamStepper",
    "GreedyStepper",
    "SearchResult",
    "Stepper",
    "beam_advance",
    "beam_search",
    "greedy_search",
    "search",
]

_BIG = 1.0e9  # transformers' "impossible" score offset


class Stepper(Protocol):
    def step(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]: ...

    def reorder(self, indices: Tensor) -> None: ...


class GreedyStepper(Stepper, Protocol):
    """A stepper that also takes steps_per_call greedy steps in one call (a compiled
    graph): greedy_steps(ids (N, W), unfinished (N,), bans, eos (V,) bool, pad (,)) reads
    the rows' last tokens from the column of ids at its own length and writes the next
    steps_per_call tokens after them (finished rows given pad; W leaves room for steps
    past the search's last column), with the bans and forced tokens
    (processors.BanTable) applied to each step's logits; it updates unfinished in place
    and returns the number of its steps after which no row was unfinished
    (steps_per_call + 1 where one still is), a long tensor."""

    vocabulary: int
    steps_per_call: int

    def greedy_steps(
        self, ids: Tensor, unfinished: Tensor, bans: BanTable, eos: Tensor, pad: Tensor
    ) -> Tensor: ...


class BeamStepper(Stepper, Protocol):
    """A stepper that also takes a whole beam search step in one call (a compiled graph):
    beam_steps(beams, bans, rule) feeds the running rows' last tokens, applies the bans
    and forced tokens (processors.BanTable) to the log-probabilities, advances beams in
    place (beam_advance), reorders its own state, and returns whether the search is done
    (a bool tensor)."""

    vocabulary: int

    def beam_steps(self, beams: _Beams, bans: BanTable, rule: BeamRule) -> Tensor: ...


@dataclass(frozen=True)
class SearchResult:
    """sequences (B * R, 1 + N): start token, generated tokens, pad after the end token.
    scores (B * R,): beam scores (length-penalized sum of log-probs) or None for greedy.
    extras (B * R, N, ...): what the stepper returned for each generated token, or None."""

    sequences: Tensor
    scores: Tensor | None = None
    extras: Tensor | None = None


def _pad_id(config: GenerationConfig) -> int:
    if config.pad_token_id is not None:
        return config.pad_token_id
    if config.eos_token_id:
        return config.eos_token_id[0]
    raise ValueError("generation needs pad_token_id or eos_token_id to pad finished rows")


def greedy_search(stepper: Stepper, start: Tensor, config: GenerationConfig) -> SearchResult:
    """Greedy decoding, or sampling when config.do_sample (transformers' `_sample`).

    start: (N, 1) decoder start tokens. Finished rows are padded with pad_token_id.
    A GreedyStepper takes the greedy steps several at a time where every processor is a
    ban or a forced token (no sampling, repetition penalty, n-gram rule or longer bad word).
    """
    length = start.shape[1]
    max_length = config.total_length(length)
    procs = build_processors(config, max_length, length)
    eos = torch.tensor(config.eos_token_id or (), dtype=torch.long, device=start.device)
    pad = torch.tensor(_pad_id(config), device=start.device)
    chunked = hasattr(stepper, "greedy_steps") and not config.do_sample
    slack = stepper.steps_per_call - 1 if chunked else 0
    ids = start.new_empty(start.shape[0], max(length, max_length) + slack)  # column by column
    ids[:, :length] = start
    unfinished = torch.ones(start.shape[0], dtype=torch.bool, device=start.device)
    if chunked:
        bans = ban_table(procs, stepper.vocabulary, start.device)
        if bans is not None:
            length = _greedy_chunks(stepper, ids, length, max_length, unfinished, bans, eos, pad)
            return SearchResult(ids[:, :length].contiguous())
    extras: list[Tensor] = []
    while length < max_length:
        logits, extra = stepper.step(ids[:, length - 1 : length])
        scores = apply_processors(procs, ids[:, :length], logits.float())  # (N, V)
        if config.do_sample:
            next_tokens = torch.multinomial(torch.softmax(scores, -1), 1).squeeze(1)
        else:
            next_tokens = scores.argmax(-1)  # (N,)
        next_tokens = torch.where(unfinished, next_tokens, pad)
        if extra is not None:
            extras.append(extra * unfinished.view(-1, *[1] * (extra.dim() - 1)))
        ids[:, length] = next_tokens
        length += 1
        unfinished &= torch.isin(next_tokens, eos, invert=True)
        if not bool(unfinished.any()):
            break
    sequences = ids[:, :length].contiguous()
    return SearchResult(sequences, None, torch.stack(extras, 1) if extras else None)


def _greedy_chunks(
    stepper: GreedyStepper, ids, length, max_length, unfinished, bans, eos, pad
) -> int:
    """greedy_search's loop, several steps per stepper call: writes ids (N, W) from column
    `length` on (W has steps_per_call - 1 columns past max_length for the steps a last
    call runs past the end, which are not kept); returns the length of the rows (up to
    the step after which every row had ended)."""
    is_eos = torch.zeros(stepper.vocabulary, dtype=torch.bool, device=ids.device)
    is_eos[eos[eos < stepper.vocabulary]] = True  # an id outside V is never generated
    while length < max_length:
        ended = int(stepper.greedy_steps(ids, unfinished, bans, is_eos, pad))
        if ended <= stepper.steps_per_call:  # a row that ended stays ended
            return min(length + ended, max_length)
        length += stepper.steps_per_call
    return max_length


@dataclass
class _Beams:
    """Beam search state over B sources with K beams each: the running hypotheses (B, K, L)
    with their scores, the finished pool (B, K, L) with its scores, and for each kept
    token the decoder row that produced it (origin, -1 where none), which is how the
    extras (attention maps) follow the beams."""

    running: Tensor
    running_scores: Tensor
    running_origin: Tensor
    finished: Tensor
    finished_scores: Tensor
    finished_origin: Tensor
    is_finished: Tensor
    can_improve: Tensor

    @classmethod
    def start(cls, start: Tensor, B: int, K: int, max_length: int, fill: int) -> _Beams:
        prompt_len, device = start.shape[1], start.device
        running = torch.full((B, K, max_length), fill, dtype=torch.long, device=device)
        running[:, :, :prompt_len] = start.view(B, K, prompt_len)
        scores = torch.zeros(B, K, device=device)
        scores[:, 1:] = -_BIG  # beams start identical: only the first one expands
        origin = torch.full((B, K, max_length - prompt_len), -1, dtype=torch.long, device=device)
        return cls(
            running,
            scores,
            origin,
            running.clone(),
            torch.full((B, K), -_BIG, device=device),
            origin.clone(),
            torch.zeros(B, K, dtype=torch.bool, device=device),
            torch.ones(B, 1, dtype=torch.bool, device=device),
        )

    def unless(self, done: Tensor, new: _Beams) -> _Beams:
        """new, or this state where done (a bool tensor): a search that has ended keeps its
        state through the steps a compiled graph runs after the end."""
        return _Beams(
            *(
                torch.where(done, getattr(self, f.name), getattr(new, f.name))
                for f in dataclasses.fields(self)
            )
        )

    def copy_(self, other: _Beams) -> None:
        """other's values written into this state's tensors (a compiled graph's output
        written into its inputs, which the next call passes again)."""
        for field in dataclasses.fields(self):
            getattr(self, field.name).copy_(getattr(other, field.name))


@dataclass(frozen=True)
class BeamRule:
    """A beam search's settings, for its steps, in tensors (a compiled beam step reads them
    without compiling again when they change): the end tokens (E,), the prompt's length
    and the rows' full length (1,), divisor[n] = n ** length_penalty for n generated
    tokens (float32), early: early_stopping is True, never: early_stopping is "never" with
    a positive length penalty; and the candidates kept per source each step."""

    eos: Tensor
    prompt: Tensor
    max_length: Tensor
    divisor: Tensor
    early: Tensor
    never: Tensor
    keep: int

    @classmethod
    def of(cls, config: GenerationConfig, prompt_len: int, device: torch.device) -> BeamRule:
        eos_ids = config.eos_token_id or ()
        max_length = config.total_length(prompt_len)
        lengths = range(1, max(2, max_length - prompt_len + 1))
        never = config.early_stopping == "never" and config.length_penalty > 0.0
        return cls(
            torch.tensor(eos_ids, dtype=torch.long, device=device),
            torch.tensor([prompt_len], device=device),
            torch.tensor([max_length], device=device),
            torch.tensor([1.0] + [n**config.length_penalty for n in lengths], device=device),
            torch.tensor(config.early_stopping is True, device=device),
            torch.tensor(never, device=device),
            max(2, 1 + len(eos_ids)) * config.num_beams,
        )


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """x (B, beams, ...) at beam index (B, k)."""
    while index.dim() < x.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(x, index, dim=1)


def _top(x: Tensor, k: int, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """torch.topk(x, k) over the last dimension of x (B, n), largest first, found within
    the k chunks of `chunk` entries whose maxima are largest (the k largest entries lie in
    them): on the CPU a few times faster than torch.topk over beam search's n = beams x
    vocabulary. Entries tied at the k-th value may be picked differently, as they may by
    torch.topk on another machine."""
    B, n = x.shape
    if n <= 4 * k * chunk:
        return torch.topk(x, k)
    if n % chunk:  # pad to whole chunks with entries that are never picked
        x = torch.nn.functional.pad(x, (0, chunk - n % chunk), value=-math.inf)
    chunks = x.view(B, -1, chunk)
    best = torch.topk(chunks.amax(-1), k, sorted=False)[1]  # (B, k) chunk indices
    picked = chunks.gather(1, best[:, :, None].expand(B, k, chunk)).view(B, k * chunk)
    values, where = torch.topk(picked, k)  # (B, k) within the picked chunks
    return values, best.gather(1, where // chunk) * chunk + where % chunk


def _candidates(
    beams: _Beams, log_probs: Tensor, cur: Tensor, rule: BeamRule, do_sample: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The best rule.keep continuations of each source over all its beams (or drawn, for
    beam sampling), the new tokens written at column cur (1,): (scores (B, keep),
    sequences (B, keep, L), origins, tokens (B, keep))."""
    B, K, _ = beams.running.shape
    V = log_probs.shape[-1]
    # log_probs is the search's own (its buffer, or a processor's new tensor): add in place
    totals = log_probs.view(B, K, V).add_(beams.running_scores[:, :, None]).view(B, K * V)
    if do_sample:
        picked = torch.multinomial(torch.softmax(totals, -1), rule.keep)
        scores, order = torch.gather(totals, 1, picked).sort(dim=-1, descending=True)
        picked = picked.gather(-1, order)
    else:
        scores, picked = _top(totals, rule.keep)  # (B, keep)
    from_beam, tokens = picked // V, picked % V
    seqs = _gather(beams.running, from_beam).index_copy_(2, cur, tokens[:, :, None])
    rows = torch.arange(B, device=picked.device).view(B, 1) * K  # row of beam 0 per source
    origin = _gather(beams.running_origin, from_beam)
    origin.index_copy_(2, cur - rule.prompt, (from_beam + rows)[:, :, None])
    return scores, seqs, origin, tokens


def _keep_running(beams: _Beams, scores, seqs, origin, ended: Tensor, K: int) -> None:
    """The best K candidates that did not end keep running."""
    alive = scores + ended.float() * -_BIG
    best = torch.topk(alive, K)[1]
    beams.running = _gather(seqs, best)
    beams.running_scores = _gather(alive, best)
    beams.running_origin = _gather(origin, best)


def _update_finished(beams: _Beams, scores, seqs, origin, ended, divisor: Tensor, rule) -> None:
    """Candidates among the top K that ended enter the finished pool if good enough (scores
    divided by divisor (1,), the length penalty of their generated tokens)."""
    K = beams.finished.shape[1]
    just_finished = ended & (torch.arange(ended.shape[1], device=ended.device) < K)[None, :]
    penalized = scores / divisor
    full = beams.is_finished.all(-1, keepdim=True) & rule.early
    penalized = penalized + full.float() * -_BIG
    penalized = penalized + (~beams.can_improve).float() * -_BIG
    penalized = penalized + (~just_finished) * -_BIG
    merged = torch.cat([beams.finished_scores, penalized], dim=1)
    top = torch.topk(merged, K)[1]
    beams.finished = _gather(torch.cat([beams.finished, seqs], 1), top)
    beams.finished_scores = _gather(merged, top)
    beams.finished_origin = _gather(torch.cat([beams.finished_origin, origin], 1), top)
    beams.is_finished = _gather(torch.cat([beams.is_finished, just_finished], 1), top)


def _done(beams: _Beams, ended: Tensor, generated: Tensor, rule: BeamRule) -> Tensor:
    """Whether no source can still improve its finished pool (transformers' rule), a bool
    tensor; generated (1,): the tokens generated so far."""
    # "never": the length penalty of the longest a running hypothesis may still grow to
    divisor = torch.where(rule.never, rule.divisor[-1:], rule.divisor[generated])
    best_running = beams.running_scores[:, :1] / divisor
    worst_finished = torch.where(
        beams.is_finished, beams.finished_scores.min(dim=1, keepdim=True)[0], -_BIG
    )
    beams.can_improve = beams.can_improve & (best_running > worst_finished).any(-1, keepdim=True)
    open_beams = ~(beams.is_finished.all() & rule.early)
    return ~(beams.can_improve.any() & open_beams & ~ended.all())


def beam_advance(
    beams: _Beams, log_probs: Tensor, cur: Tensor, rule: BeamRule, do_sample=False, skip=False
) -> tuple[_Beams, Tensor, Tensor]:
    """One beam search step after the log-probabilities (B * K, V) of the rows' next tokens
    (processors applied), the tokens written at column cur (1,): (the new state, the
    decoder row each row continues (B * K,), whether the search is done (a bool tensor)).
    skip: leave the finished pool as it is where no candidate among the top K ended (that
    check reads a tensor's value: not inside a compiled graph)."""
    B, K, _ = beams.running.shape
    new = dataclasses.replace(beams)
    scores, seqs, origin, tokens = _candidates(new, log_probs, cur, rule, do_sample)
    ended = torch.isin(tokens, rule.eos) | (cur + 1 >= rule.max_length)
    _keep_running(new, scores, seqs, origin, ended, K)
    generated = cur + 1 - rule.prompt
    if not skip or bool(ended[:, :K].any()):  # else nothing can enter the finished pool
        _update_finished(new, scores, seqs, origin, ended, rule.divisor[generated], rule)
    indices = new.running_origin.gather(2, (generated - 1).expand(B, K, 1)).view(B * K)
    return new, indices, _done(new, ended, generated, rule)


def _follow_origins(step_extras: list[Tensor], origin: Tensor) -> Tensor:
    """extras (B*R, N, ...): each generated token's extras from the row that produced it
    (zeros where there is no token); step_extras[n] (B*K, ...), origin (B*R, N)."""
    generated = origin.shape[1]
    stacked = torch.stack(step_extras[:generated], 0)  # (N, B*K, ...)
    index = origin.clamp(min=0).T  # (N, B*R)
    steps = torch.arange(generated, device=origin.device)[:, None]
    extras = stacked[steps, index]  # (N, B*R, ...)
    extras = extras * (origin.T >= 0).view(*index.shape, *[1] * (extras.dim() - 2))
    return extras.transpose(0, 1)


def beam_search(
    stepper: Stepper, start: Tensor, config: GenerationConfig, batch_size: int
) -> SearchResult:
    """Beam search over `batch_size` sources with config.num_beams beams each.

    start: (B * K, P); rows b * K .. b * K + K - 1 belong to source b. Returns the best
    config.num_return_sequences hypotheses per source, best first. A BeamStepper takes
    each step with its search in one call where every processor is a ban or a forced
    token and no beam is drawn (beam sampling).
    """
    K, B = config.num_beams, batch_size
    prompt_len = start.shape[1]
    max_length = config.total_length(prompt_len)
    procs = build_processors(config, max_length, prompt_len)
    eos_ids = config.eos_token_id or ()
    pad = config.pad_token_id
    fill = (pad if pad else eos_ids[0]) if eos_ids else -1  # transformers' fill value
    beams = _Beams.start(start, B, K, max_length, fill)
    rule = BeamRule.of(config, prompt_len, start.device)
    step_extras: list[Tensor] = []
    bans = None
    if hasattr(stepper, "beam_steps") and not config.do_sample:
        bans = ban_table(procs, stepper.vocabulary, start.device)
    if bans is not None:
        while not bool(stepper.beam_steps(beams, bans, rule)):
            pass
    else:
        cur_len = prompt_len
        cur = torch.tensor([cur_len], device=start.device)  # the column of the next tokens
        buffer = None  # the log-probabilities of a step, written into the same memory each step
        while True:
            rows = beams.running.view(B * K, -1)[:, :cur_len]  # a view: no copy
            logits, extra = stepper.step(rows[:, -1:])
            if extra is not None:
                step_extras.append(extra)
            if buffer is None:  # (B * K, V) at every step
                buffer = torch.empty_like(logits, dtype=torch.float32)
            log_probs = torch.log_softmax(logits.float(), dim=-1, out=buffer)
            log_probs = apply_processors(procs, rows, log_probs)
            beams, indices, done = beam_advance(
                beams, log_probs, cur, rule, config.do_sample, skip=True
            )
            stepper.reorder(indices)
            cur_len += 1
            cur += 1
            if bool(done):
                break
    R = config.num_return_sequences
    sequences = beams.finished[:, :R].reshape(B * R, max_length)
    scores = beams.finished_scores[:, :R].reshape(B * R)
    origin = beams.finished_origin[:, :R].reshape(B * R, max_length - prompt_len)
    generated = int((origin >= 0).sum(1).max())
    sequences, origin = sequences[:, : prompt_len + generated], origin[:, :generated]
    extras = _follow_origins(step_extras, origin) if step_extras else None
    return SearchResult(sequences, scores, extras)


def search(stepper: Stepper, start: Tensor, config: GenerationConfig, batch_size: int):
    """Greedy/sampling when num_beams == 1, beam search otherwise."""
    if config.num_beams == 1:
        return greedy_search(stepper, start, config)
    return beam_search(stepper, start, config, batch_size)
