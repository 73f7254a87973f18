"""TrainConfig: how to train (optimizer, schedule, batches, evaluation, checkpoints),
frozen and validated; each task keeps its recipe as one (see xattn.tasks)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train (validated). Steps count optimizer updates."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100
    schedule: str = "linear"  # after warmup: linear | cosine | constant
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    accumulation: int = 1
    eval_every: int = 250
    eval_size: int = 500
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    num_beams: int = 1
    max_new_tokens: int = 64
    seed: int = 0
    bf16: bool | None = None  # None: use bfloat16 autocast where CUDA supports it
    # supervised attention: pull this (layer, head)'s cross-attention toward the gold
    # alignment, weighted by alignment_loss (0: off); the layer may count from the end
    alignment_loss: float = 0.0
    alignment_head: tuple[int, int] = (-1, 0)

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: {why}")

        for name in (
            "steps",
            "batch_size",
            "accumulation",
            "eval_every",
            "checkpoint_every",
            "keep_checkpoints",
            "num_beams",
            "max_new_tokens",
            "eval_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "expected a positive int")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            fail("warmup_steps", "expected an int >= 0")
        if not self.lr > 0:
            fail("lr", "expected a positive learning rate")
        if self.schedule not in ("linear", "cosine", "constant"):
            fail("schedule", "expected linear, cosine or constant")
        if not 0 <= self.label_smoothing < 1:
            fail("label_smoothing", "expected 0 <= value < 1")
        if not self.clip_norm > 0:
            fail("clip_norm", "expected a positive norm")
        if not (isinstance(self.alignment_loss, (int, float)) and self.alignment_loss >= 0):
            fail("alignment_loss", "expected a weight >= 0")
        if len(self.alignment_head) != 2 or self.alignment_head[1] < 0:
            fail("alignment_head", "expected a (layer, head) pair")

    @property
    def trained_head(self) -> tuple[int, int] | None:
        """The (layer, head) this run teaches to align (supervised attention), or None."""
        return tuple(self.alignment_head) if self.alignment_loss > 0 else None

    def lr_factor(self, step: int) -> float:
        """Multiplier of lr at optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        progress = min(1.0, progress)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    def for_steps(self, steps: int | None) -> TrainConfig:
        """This recipe over another number of steps (None: unchanged): the warmup keeps its
        share of the steps; evaluations and checkpoints come at least once."""
        if steps is None:
            return self
        warmup = min(steps, round(self.warmup_steps * steps / self.steps))
        return dataclasses.replace(
            self,
            steps=steps,
            warmup_steps=warmup,
            eval_every=min(self.eval_every, steps),
            checkpoint_every=min(self.checkpoint_every, steps),
        )
