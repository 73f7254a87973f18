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

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .config import GenerationConfig
from .processors import apply_processors, build_processors

__all__ = ["SearchResult", "Stepper", "beam_search", "greedy_search", "search"]

_BIG = 1.0e9  # transformers' "impossible" score offset


class Stepper(Protocol):
    def step(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]: ...

    def reorder(self, indices: Tensor) -> None: ...


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
    """
    max_length = config.total_length(start.shape[1])
    procs = build_processors(config, max_length, start.shape[1])
    eos = torch.tensor(config.eos_token_id or (), dtype=torch.long, device=start.device)
    pad = _pad_id(config)
    ids = start
    unfinished = torch.ones(start.shape[0], dtype=torch.bool, device=start.device)
    extras: list[Tensor] = []
    while ids.shape[1] < max_length:
        logits, extra = stepper.step(ids[:, -1:])
        scores = apply_processors(procs, ids, logits.float())  # (N, V)
        if config.do_sample:
            next_tokens = torch.multinomial(torch.softmax(scores, -1), 1).squeeze(1)
        else:
            next_tokens = scores.argmax(-1)  # (N,)
        next_tokens = torch.where(unfinished, next_tokens, pad)
        if extra is not None:
            extras.append(extra * unfinished.view(-1, *[1] * (extra.dim() - 1)))
        ids = torch.cat([ids, next_tokens[:, None]], dim=1)
        unfinished &= ~torch.isin(next_tokens, eos)
        if not bool(unfinished.any()):
            break
    return SearchResult(ids, None, torch.stack(extras, 1) if extras else None)


def beam_search(
    stepper: Stepper, start: Tensor, config: GenerationConfig, batch_size: int
) -> SearchResult:
    """Beam search over `batch_size` sources with config.num_beams beams each.

    start: (B * K, 1); rows b * K .. b * K + K - 1 belong to source b. Returns the best
    config.num_return_sequences hypotheses per source, best first.
    """
    K, B = config.num_beams, batch_size
    device = start.device
    prompt_len = cur_len = start.shape[1]
    max_length = config.total_length(prompt_len)
    procs = build_processors(config, max_length, prompt_len)
    eos_ids = config.eos_token_id or ()
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    length_penalty, early_stopping = config.length_penalty, config.early_stopping
    keep = max(2, 1 + len(eos_ids)) * K  # candidates kept per source each step
    top_k_mask = torch.arange(keep, device=device) < K  # (keep,)

    pad = config.pad_token_id
    fill = (pad if pad else eos_ids[0]) if eos_ids else -1  # transformers' fill value
    running = torch.full((B, K, max_length), fill, dtype=torch.long, device=device)
    running[:, :, :cur_len] = start.view(B, K, cur_len)
    finished_seqs = running.clone()
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = -_BIG  # beams start identical: only the first one expands
    finished_scores = torch.full((B, K), -_BIG, device=device)
    is_finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    can_improve = torch.ones(B, 1, dtype=torch.bool, device=device)
    hits = torch.zeros(B, K, dtype=torch.bool, device=device)
    steps = max_length - cur_len
    running_origin = torch.full((B, K, steps), -1, dtype=torch.long, device=device)
    finished_origin = running_origin.clone()
    offsets = torch.arange(B, device=device).view(B, 1) * K  # row of beam 0 of each source
    step_extras: list[Tensor] = []

    def gather(x: Tensor, index: Tensor) -> Tensor:  # x (B, beams, ...) by index (B, k)
        while index.dim() < x.dim():
            index = index.unsqueeze(-1)
        return torch.take_along_dim(x, index, dim=1)

    while True:
        flat = running[:, :, :cur_len].reshape(B * K, cur_len)
        logits, extra = stepper.step(flat[:, -1:])
        if extra is not None:
            step_extras.append(extra)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        log_probs = apply_processors(procs, flat, log_probs)  # (B*K, V)
        V = log_probs.shape[-1]
        totals = (log_probs.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)

        # c. the best `keep` continuations of each source, over all its beams
        if config.do_sample:
            picked = torch.multinomial(torch.softmax(totals, -1), keep)
            cand_scores = torch.gather(totals, 1, picked)
            cand_scores, order = cand_scores.sort(dim=-1, descending=True)
            picked = picked.gather(-1, order)
        else:
            cand_scores, picked = torch.topk(totals, keep)  # (B, keep)
        from_beam = picked // V
        cand_seqs = gather(running, from_beam)
        cand_seqs[:, :, cur_len] = picked % V
        cand_origin = gather(running_origin, from_beam)
        cand_origin[:, :, cur_len - prompt_len] = from_beam + offsets

        # d. which candidates end here (end token, or no room left)
        hits = torch.isin(cand_seqs[:, :, cur_len], eos) | (cur_len + 1 >= max_length)

        # e. the best K unfinished candidates keep running
        alive_scores = cand_scores + hits.float() * -_BIG
        best = torch.topk(alive_scores, K)[1]
        running = gather(cand_seqs, best)
        running_scores = gather(alive_scores, best)
        running_origin = gather(cand_origin, best)

        # f. finished candidates among the top K enter the finished pool if good enough
        just_finished = hits & top_k_mask[None, :]
        ended = cand_scores / ((cur_len + 1 - prompt_len) ** length_penalty)
        full = is_finished.all(-1, keepdim=True) & (early_stopping is True)
        ended = ended + full.float() * -_BIG
        ended = ended + (~can_improve).float() * -_BIG
        ended = ended + (~just_finished) * -_BIG
        merged_scores = torch.cat([finished_scores, ended], dim=1)
        top = torch.topk(merged_scores, K)[1]
        finished_seqs = gather(torch.cat([finished_seqs, cand_seqs], 1), top)
        finished_scores = gather(merged_scores, top)
        finished_origin = gather(torch.cat([finished_origin, cand_origin], 1), top)
        is_finished = gather(torch.cat([is_finished, just_finished], 1), top)

        # g. the decoder state follows the surviving beams
        stepper.reorder(running_origin[:, :, cur_len - prompt_len].reshape(B * K))
        cur_len += 1

        if early_stopping == "never" and length_penalty > 0.0:
            best_length = max_length - prompt_len
        else:
            best_length = cur_len - prompt_len
        best_running = running_scores[:, :1] / (best_length**length_penalty)
        worst_finished = torch.where(
            is_finished, finished_scores.min(dim=1, keepdim=True)[0], -_BIG
        )
        can_improve = can_improve & (best_running > worst_finished).any(-1, keepdim=True)
        open_beams = not (bool(is_finished.all()) and early_stopping is True)
        if not (bool(can_improve.any()) and open_beams and not bool(hits.all())):
            break

    R = config.num_return_sequences
    sequences = finished_seqs[:, :R].reshape(B * R, max_length)
    scores = finished_scores[:, :R].reshape(B * R)
    origin = finished_origin[:, :R].reshape(B * R, steps)
    generated = int((origin >= 0).sum(1).max())
    sequences, origin = sequences[:, : prompt_len + generated], origin[:, :generated]
    extras = None
    if step_extras:  # the extras of each token come from the row that produced it
        stacked = torch.stack(step_extras[:generated], 0)  # (N, B*K, ...)
        index = origin.clamp(min=0).T  # (N, B*R)
        extras = stacked[torch.arange(generated, device=device)[:, None], index]  # (N, B*R, ...)
        extras = extras * (origin.T >= 0).view(*index.shape, *[1] * (extras.dim() - 2))
        extras = extras.transpose(0, 1)  # (B*R, N, ...)
    return SearchResult(sequences, scores, extras)


def search(stepper: Stepper, start: Tensor, config: GenerationConfig, batch_size: int):
    """Greedy/sampling when num_beams == 1, beam search otherwise."""
    if config.num_beams == 1:
        return greedy_search(stepper, start, config)
    return beam_search(stepper, start, config, batch_size)
