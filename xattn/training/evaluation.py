"""Evaluation: the model's outputs for a task's examples (batched generation), the
teacher-forced loss, and the task's scores.

A task (see xattn.tasks.Task) is what turns examples into model inputs and scores outputs:
`tokenizer`, `source(example)`, `prompt_ids(example)`, `encode(example)` (an Item),
`reference(example)`, `metrics(hypotheses, references)` and `best_score(scores)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .batching import IGNORE, collate_items, pad_sources
from .config import TrainConfig
from .losses import token_cross_entropy

__all__ = ["evaluate", "predict"]


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict(
    model,
    task,
    examples: Sequence[Any],
    *,
    batch_size: int = 64,
    num_beams: int = 1,
    max_new_tokens: int = 64,
) -> list[str]:
    """The model's output text for each example, in order. Batches group examples with
    prompts of one length (the decoder continues the prompt) and similar source lengths."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    sources = [task.source(e) for e in examples]
    prompts = [task.prompt_ids(e) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: (len(prompts[i]), len(sources[i])))
    out = [""] * len(examples)
    start = 0
    while start < len(order):
        width = len(prompts[order[start]])
        chunk = [i for i in order[start : start + batch_size] if len(prompts[i]) == width]
        start += len(chunk)
        src, mask = pad_sources([sources[i] for i in chunk], task.tokenizer.pad_token_id)
        prefix = torch.tensor([prompts[i] for i in chunk], device=device) if width else None
        rows = model.generate(
            src.to(device),
            src_mask=mask.to(device),
            decoder_input_ids=prefix,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
        )
        for i, row in zip(chunk, rows, strict=True):
            out[i] = task.tokenizer.decode(row[max(1, width) :].tolist())
    model.train(was_training)
    return out


@torch.no_grad()
def evaluate(
    model,
    task,
    examples: Sequence[Any],
    config: TrainConfig,
    *,
    hypotheses: list[str] | None = None,
) -> dict[str, float]:
    """The teacher-forced loss over the examples, and the task's scores of the outputs
    decoded for the first config.eval_size of them (a `hypotheses` list gets those)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, count = 0.0, 0
    encoded = [task.encode(e) for e in examples]
    for start in range(0, len(encoded), config.batch_size):
        batch = collate_items(
            encoded[start : start + config.batch_size], task.tokenizer.pad_token_id
        )
        logits = model(
            batch.src.to(device), batch.tgt_in.to(device), src_mask=batch.src_mask.to(device)
        )
        targets = batch.tgt_out.to(device).flatten()
        total += token_cross_entropy(
            logits.flatten(0, 1).float(), targets, ignore_index=IGNORE
        ).item()
        count += batch.target_tokens
    subset = list(examples[: config.eval_size])
    hyps = predict(
        model,
        task,
        subset,
        batch_size=config.batch_size,
        num_beams=config.num_beams,
        max_new_tokens=config.max_new_tokens,
    )
    scores = task.metrics(hyps, [task.reference(e) for e in subset])
    if hypotheses is not None:
        hypotheses.extend(hyps)
    model.train(was_training)
    return {"loss": total / max(1, count), **scores}
