"""What the training loop needs to know about a task: how an example becomes an Item, what
the reference output is, how outputs are scored, and which scores pick the best model.

Translation is the default (`TextPairs`); captioning, question answering and speech
recognition define their own in xattn/tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .batching import Item, pad_sources

__all__ = ["Task", "TextPairs", "predict"]


class Task:
    """A task's view of its examples (override encode, reference and metrics).

    best_keys: the scores compared, in order, to keep the best model (higher is better;
    name a score "-wer" to prefer lower word error rates).
    """

    name = "task"
    best_keys: tuple[str, ...] = ("exact",)

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def encode(self, example: Any) -> Item:
        raise NotImplementedError

    def reference(self, example: Any) -> str:
        """The expected output text of an example."""
        raise NotImplementedError

    def metrics(self, hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        exact = sum(h == r for h, r in zip(hypotheses, references, strict=True))
        return {"exact": exact / max(1, len(references))}

    def best_score(self, scores: dict[str, float]) -> list[float]:
        return [(-scores[k[1:]] if k.startswith("-") else scores[k]) for k in self.best_keys]


class TextPairs(Task):
    """Translation: (source text, target text) pairs; exact match, BLEU and chrF."""

    name = "translate"
    best_keys = ("exact", "bleu")

    def encode(self, example: tuple[str, str]) -> Item:
        source, target = example
        return Item(self.tokenizer.encode(source), self.tokenizer.encode_target(target))

    def reference(self, example: tuple[str, str]) -> str:
        return example[1]

    def metrics(self, hypotheses, references) -> dict[str, float]:
        from .metrics import corpus_scores

        return corpus_scores(hypotheses, references)


@torch.no_grad()
def predict(
    model,
    task: Task,
    examples: Sequence[Any],
    *,
    batch_size: int = 64,
    num_beams: int = 1,
    max_new_tokens: int = 64,
) -> list[str]:
    """The model's output text for each example (batched; prompts of one length together)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokenizer = task.tokenizer
    items = [task.encode(e) for e in examples]
    order = sorted(range(len(items)), key=lambda i: (items[i].prompt, items[i].length))
    out: list[str] = [""] * len(items)
    start = 0
    while start < len(order):
        prompt = items[order[start]].prompt
        chunk = [i for i in order[start : start + batch_size] if items[i].prompt == prompt]
        start += len(chunk)
        src, mask = pad_sources([items[i].source for i in chunk], tokenizer.pad_token_id)
        prefix = torch.tensor([list(items[i].target[:prompt]) for i in chunk])
        rows = model.generate(
            src.to(device),
            src_mask=mask.to(device),
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            decoder_input_ids=prefix.to(device),
        )
        for i, row in zip(chunk, rows, strict=True):
            generated = row[prompt:].tolist()
            out[i] = tokenizer.decode([tokenizer.bos_token_id, *generated])
    model.train(was_training)
    return out
