"""Translation: English to Spanish on the generated corpus (the demo), or any parallel corpus
(xattn.data.parallel); the source is token ids, the decoder writes the translation.

Gold alignment: the generated corpus knows, for each Spanish word, the English words it
translates; a user's corpus has none (its hit rates are not measured).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from ..alignment import AlignmentScores, alignment_error_rate, hard_alignment
from ..data.en_es import Example, split_corpus
from ..data.parallel import SentencePair
from ..model import ModelConfig
from ..training import TrainConfig, predict
from ..training.metrics import translation_scores
from .base import Task

__all__ = ["TranslationTask", "translate"]

log = logging.getLogger("xattn")


class TranslationTask(Task):
    """Sentence pairs (en_es.Example or data.parallel.SentencePair: .source, .target).

    truncate_to: cut longer sources to this many tokens, keeping the end token (None:
    sources are used whole)."""

    name = "translate"
    title = "an English-to-Spanish translator"
    recipe: ClassVar[TrainConfig] = TrainConfig(
        steps=1000,
        batch_size=64,
        lr=2e-3,
        warmup_steps=75,
        label_smoothing=0.0,
        eval_every=250,
        eval_size=300,
        checkpoint_every=250,
        max_new_tokens=128,
    )
    demo_sizes: ClassVar[dict[str, int]] = {"train": 20000, "valid": 500, "test": 1000}
    model_overrides: ClassVar[dict] = {"dropout": 0.1}  # real corpora overfit without it
    demo_model_overrides: ClassVar[dict] = {"dropout": 0.0}
    best_keys = ("exact", "bleu")

    def __init__(self, tokenizer, *, truncate_to: int | None = None) -> None:
        super().__init__(tokenizer)
        self.truncate_to = truncate_to

    @staticmethod
    def generate(train: int, valid: int, test: int, seed: int = 0) -> dict[str, list[Example]]:
        return split_corpus(train=train, valid=valid, test=test, seed=seed)

    @classmethod
    def held_out(cls, count: int, seed: int = 0) -> list[Example]:
        # the split shuffles the whole corpus: the demo's test sentences need the demo's sizes
        sizes = {**cls.demo_sizes, "test": max(count, cls.demo_sizes["test"])}
        return cls.generate(**sizes, seed=seed)["test"][:count]

    def source(self, example) -> list[int]:
        ids = self.tokenizer.encode(example.source)
        if self.truncate_to is not None and len(ids) > self.truncate_to:
            ids = [*ids[: self.truncate_to - 1], ids[-1]]  # keep the end token
        return ids

    def source_text(self, example) -> str:
        return example.source

    def reference(self, example) -> str:
        return example.target

    def gold(self, example) -> list[list[int]] | None:
        alignment = getattr(example, "alignment", None)
        if alignment is None or len(self.source_tokens(example)) != len(example.source_tokens):
            return None  # no gold, or a tokenizer that splits the words otherwise
        return [list(links) for links in alignment]

    def source_tokens(self, example) -> list[str]:
        return self.tokenizer.source_tokens(example.source)

    def source_labels(self, example, length: int) -> list[str]:
        return [*self.source_tokens(example), "</s>"][:length]

    def describe(self, example) -> str:
        return example.source

    def draw(self, example, words, weights, path: Path, title: str) -> Path:
        from ..viz import plot_attention

        labels = self.source_labels(example, weights.shape[1])
        return plot_attention(weights, labels, words, path, title=f"{example.source}\n-> {title}")

    def keep_fitting(self, examples: Sequence, config: ModelConfig) -> list:
        limit = config.max_positions
        kept = [
            e
            for e in examples
            if len(self.tokenizer.encode(e.source)) <= limit
            and len(self.tokenizer.encode_target(e.target)) <= limit
        ]
        if len(kept) < len(examples):
            log.warning(
                "left out %d pairs longer than the model's %d positions",
                len(examples) - len(kept),
                limit,
            )
        return kept

    def metrics(self, hypotheses, references) -> dict[str, float]:
        return translation_scores(hypotheses, references)

    def score_line(self, scores: dict[str, float]) -> str:
        return (
            f"exact match {scores['exact']:.1%}, BLEU {scores['bleu']:.1f}, "
            f"chrF {scores['chrf']:.1f}"
        )

    def word_alignment(self, maps, examples: Sequence) -> tuple[AlignmentScores, list[list]]:
        """Hard word alignments of (T, S) maps (each target word's peak among the source
        words, end tokens left out) scored against the gold links: (scores, the links of
        each example, (source, target) pairs)."""
        links, gold = [], []
        for weights, example in zip(maps, examples, strict=True):
            words = len(self.source_tokens(example))
            links.append(hard_alignment(weights, sources=words, targets=weights.shape[0] - 1))
            pairs = self.gold(example) or []
            gold.append([(s, t) for t, sources in enumerate(pairs) for s in sources])
        return alignment_error_rate(links, gold), links


def translate(
    model,
    texts: Sequence[str],
    *,
    num_beams: int = 1,
    max_new_tokens: int = 64,
    truncate: bool = False,
    batch_size: int = 64,
) -> list[str]:
    """Translate texts with a model and its tokenizer (xattn's, or a Marian folder's); a
    source longer than the model's positions is an error naming it, or is cut with
    truncate=True."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer: load a folder with tokenizer files")
    limit = model.config.max_positions
    for number, text in enumerate(texts, 1):
        count = len(model.tokenizer.encode(text))
        if count > limit and not truncate:
            raise ValueError(
                f"input {number} has {count} tokens; the model reads at most {limit} "
                f"(truncate=True, or --truncate, cuts it)"
            )
    task = TranslationTask(model.tokenizer, truncate_to=limit)
    pairs = [SentencePair(text, "") for text in texts]
    new_tokens = min(max_new_tokens, limit - 1)  # the decoder's positions end there
    return predict(
        model, task, pairs, batch_size=batch_size, num_beams=num_beams, max_new_tokens=new_tokens
    )
