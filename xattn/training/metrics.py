"""Metrics: exact match, BLEU and chrF (sacrebleu); alignment hit rates (the layer-and-head
mean, every head, the alignment head chosen on validation data)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "alignment_heads",
    "alignment_hit_rate",
    "corpus_scores",
    "describe_alignment_head",
    "head_hit_rates",
]


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """exact (fraction of identical strings), bleu and chrf (sacrebleu, 0-100)."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    exact = sum(h == r for h, r in zip(hypotheses, references, strict=True))
    return {
        "exact": exact / max(1, len(references)),
        "bleu": sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score,
        "chrf": sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score,
    }


def alignment_hit_rate(
    maps: Sequence[torch.Tensor], gold: Sequence[Sequence[Sequence[int]]]
) -> float:
    """How often the attention peak of a target token lands on one of its gold source tokens.

    maps[i]: (N, S) attention of example i's target tokens over its source tokens; gold[i]:
    for each target token the source indices it translates (tokens with no gold are skipped).
    """
    hits = total = 0
    for attention, links in zip(maps, gold, strict=True):
        peaks = attention.argmax(-1).tolist()
        for peak, link in zip(peaks, links, strict=False):
            if link:
                total += 1
                hits += peak in link
    return hits / max(1, total)


def head_hit_rates(
    maps: Sequence[torch.Tensor], gold: Sequence[Sequence[Sequence[int]]]
) -> torch.Tensor:
    """(L, H) alignment_hit_rate of every cross-attention head on its own; maps[i]:
    (L, H, N, S) attention of example i, every decoder layer and head."""
    layers, heads = maps[0].shape[:2]
    return torch.tensor([[alignment_hit_rate([m[layer, head] for m in maps], gold)
                          for head in range(heads)] for layer in range(layers)],
                        dtype=torch.float64)  # fmt: skip


def alignment_heads(valid: torch.Tensor, test: torch.Tensor) -> dict:
    """The head that aligns best on the validation split (like Whisper's alignment heads,
    chosen on data the figure is not reported on) and its test hit rate; valid and test are
    head_hit_rates tables. Layers and heads count from 1."""
    if valid.shape != test.shape:
        raise ValueError(f"head tables of shapes {tuple(valid.shape)} and {tuple(test.shape)}")
    layer, head = divmod(int(valid.argmax()), valid.shape[1])
    return {"alignment_head": [layer + 1, head + 1],
            "alignment_head_hit_rate": float(test[layer, head]),
            "alignment_hit_rate_per_head": test.tolist()}  # fmt: skip


def describe_alignment_head(heads: dict) -> str:
    """One line for a demo's output from an alignment_heads result."""
    layer, head = heads["alignment_head"]
    return (
        f"  the one head that aligns best on the validation split (layer {layer}, head "
        f"{head}): {heads['alignment_head_hit_rate']:.1%}; every head: summary.json"
    )
