"""Scores of output text against references: exact match, BLEU and chrF (sacrebleu) for
translation; exact match, word and character error rates (jiwer) for the other tasks.
(What cross-attention aligns is measured in xattn.alignment.)"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["error_rates", "exact_match", "translation_scores"]


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """The fraction of hypotheses identical to their reference."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return sum(h == r for h, r in zip(hypotheses, references, strict=True)) / max(
        1, len(references)
    )


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """exact (fraction of identical strings), bleu and chrf (sacrebleu, 0-100)."""
    import sacrebleu

    exact = exact_match(hypotheses, references)
    return {
        "exact": exact,
        "bleu": sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score,
        "chrf": sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score,
    }


def error_rates(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """exact, wer and cer (jiwer, fractions); an empty hypothesis is scored as the word
    "<empty>" (jiwer refuses empty strings)."""
    import jiwer

    exact = exact_match(hypotheses, references)
    refs, hyps = list(references), [h if h.strip() else "<empty>" for h in hypotheses]
    return {
        "exact": exact,
        "wer": float(jiwer.wer(refs, hyps)),
        "cer": float(jiwer.cer(refs, hyps)),
    }
