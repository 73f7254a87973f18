"""Metrics: exact match, BLEU and chrF (sacrebleu); alignment hit rates (the layer-and-head
mean, every head, the alignment heads chosen on validation data)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "alignment_heads",
    "alignment_hit_rate",
    "choose_alignment_heads",
    "corpus_scores",
    "describe_alignment_heads",
    "head_hit_rates",
    "head_mean",
    "head_names",
    "heads_hit_rate",
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
    return torch.tensor(
        [
            [alignment_hit_rate([m[layer, head] for m in maps], gold) for head in range(heads)]
            for layer in range(layers)
        ],
        dtype=torch.float64,
    )


def head_mean(
    layers: torch.Tensor | Sequence[torch.Tensor], heads: Sequence[Sequence[int]] | None = None
) -> torch.Tensor:
    """(T, S) mean attention of `heads` ((layer, head) pairs counting from 0; None: every
    layer and head) from one (L, H, T, S) tensor or a list of L (H, T, S) maps."""
    maps = layers if isinstance(layers, torch.Tensor) else torch.stack(list(layers))
    if heads is None:
        return maps.mean((0, 1))
    count, per_layer = maps.shape[:2]
    outside = [list(h) for h in heads if not (0 <= h[0] < count and 0 <= h[1] < per_layer)]
    if not heads or outside:
        raise ValueError(
            f"alignment heads {[list(h) for h in heads]}: expected (layer, head) pairs within "
            f"{count} layers x {per_layer} heads, counting from 0"
        )
    rows = torch.tensor([layer for layer, _ in heads])
    return maps[rows, torch.tensor([head for _, head in heads])].mean(0)


def head_names(heads: Sequence[Sequence[int]]) -> str:
    """'layer 1 head 1 + layer 2 head 3' for (layer, head) pairs counting from 0 (the names
    count from 1)."""
    return " + ".join(f"layer {layer + 1} head {head + 1}" for layer, head in heads)


def heads_hit_rate(
    maps: Sequence[torch.Tensor],
    gold: Sequence[Sequence[Sequence[int]]],
    heads: Sequence[tuple[int, int]],
) -> float:
    """alignment_hit_rate of the mean attention of `heads` ((layer, head) pairs counting from
    0); maps[i]: (L, H, N, S)."""
    return alignment_hit_rate([head_mean(m, heads) for m in maps], gold)


def choose_alignment_heads(
    maps: Sequence[torch.Tensor],
    gold: Sequence[Sequence[Sequence[int]]],
    *,
    min_gain: float = 0.005,
) -> list[tuple[int, int]]:
    """The cross-attention heads whose mean attention aligns best on these (validation)
    maps, as Whisper reads word times from a few alignment heads rather than from all of
    them: grown greedily from the best single head, one head at a time while a head raises
    the hit rate by at least `min_gain` (a guard against choosing on a few words' noise);
    all heads if their mean does at least as well. (layer, head) pairs count from 0."""
    if not maps:
        raise ValueError("no attention maps to choose alignment heads on")
    layers, per_layer = maps[0].shape[:2]
    every = [(layer, head) for layer in range(layers) for head in range(per_layer)]
    rate = {}

    def score(heads: list[tuple[int, int]]) -> float:
        key = tuple(sorted(heads))
        if key not in rate:
            rate[key] = heads_hit_rate(maps, gold, heads)
        return rate[key]

    chosen = [max(every, key=lambda h: score([h]))]  # the first of equals, in layer order
    while len(chosen) < len(every):
        best = max((h for h in every if h not in chosen), key=lambda h: score([*chosen, h]))
        if score([*chosen, best]) < score(chosen) + min_gain:
            break
        chosen.append(best)
    return every if score(every) >= score(chosen) else sorted(chosen)


def alignment_heads(valid: tuple[Sequence, Sequence], test: tuple[Sequence, Sequence]) -> dict:
    """Alignment heads chosen on the validation split (choose_alignment_heads) and their hit
    rate on the test split, with every head's own test rate; valid and test are (maps,
    gold) with maps[i] (L, H, N, S). (layer, head) pairs count from 0, as in
    generation_config.json."""
    shapes = {tuple(m.shape[:2]) for m in (*valid[0], *test[0])}
    if len(shapes) != 1:
        raise ValueError(f"maps with different layers x heads: {sorted(shapes)}")
    heads = choose_alignment_heads(*valid)
    return {
        "alignment_heads": [list(h) for h in heads],
        "alignment_heads_hit_rate": heads_hit_rate(*test, heads),
        "alignment_heads_valid_hit_rate": heads_hit_rate(*valid, heads),
        "alignment_hit_rate_per_head": head_hit_rates(*test).tolist(),
    }


def describe_alignment_heads(heads: dict) -> str:
    """One line for a demo's output from an alignment_heads result."""
    chosen = heads["alignment_heads"]
    every = len(heads["alignment_hit_rate_per_head"]) * len(heads["alignment_hit_rate_per_head"][0])
    if len(chosen) == every:
        which = "all of them (no subset does better there)"
    else:
        which = head_names(chosen)
    return (
        f"  alignment heads chosen on the validation split: {which}: "
        f"{heads['alignment_heads_hit_rate']:.1%} of test words; every head: summary.json"
    )
