"""Translation metrics: exact match, BLEU and chrF (sacrebleu), alignment hit rate."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["alignment_hit_rate", "corpus_scores"]


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
