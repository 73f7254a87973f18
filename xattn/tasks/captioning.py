"""Image captioning: strips of handwritten digits -> "seven zero four".

The image goes in as its pixel columns (W, H); the image front end's convolutional stem
makes a 3 x 12 grid of patch tokens with 2-D positions, and the decoder writes the digit
words, one cross-attention look per word. Patch token k = c * 3 + r sits at row r and
column c, centered on pixel (4r, 4c); a word's gold patches are those whose center column
lies inside the digit it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..data.digits import HEIGHT, Strip, make_strips
from ..training import TrainConfig
from .base import Task

__all__ = ["STRIDE", "CaptionTask"]

STRIDE = 4  # pixels per patch token, both ways
ROWS = -(-HEIGHT // STRIDE)


class CaptionTask(Task):
    name = "caption"
    title = "an image captioner (handwritten digit strips -> digit words)"
    front_end = "image"
    # a long warmup (30% of the steps), then a cosine decay: a one-cycle schedule's shape
    recipe: ClassVar[TrainConfig] = TrainConfig(
        steps=700,
        batch_size=64,
        lr=2e-3,
        warmup_steps=210,
        schedule="cosine",
        label_smoothing=0.1,
        eval_every=350,
        eval_size=300,
        checkpoint_every=350,
        max_new_tokens=8,
    )
    demo_sizes: ClassVar[dict[str, int]] = {"train": 20000, "valid": 300, "test": 1000}
    model_overrides: ClassVar[dict] = {"source_features": HEIGHT, "ffn_dim": 256}

    @staticmethod
    def generate(train: int, valid: int, test: int, seed: int = 0) -> dict[str, list[Strip]]:
        return make_strips(train, valid, test, seed=seed)

    def source(self, example: Strip) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(example.image.T))  # (W, H) columns

    def reference(self, example: Strip) -> str:
        return example.caption

    def gold(self, example: Strip) -> list[list[int]]:
        cols = -(-example.image.shape[1] // STRIDE)
        return [
            [c * ROWS + r for c in range(cols) if x0 <= STRIDE * c < x1 for r in range(ROWS)]
            for x0, x1 in example.spans
        ]

    def source_labels(self, example: Strip, length: int) -> list[str]:
        return [f"r{k % ROWS}c{k // ROWS}" for k in range(length)]

    def explorer_source(self, example: Strip, length: int, words=None) -> dict:
        from ..viz.explorer import image_source

        cols = length // ROWS
        source = image_source(example.image, ROWS, cols)
        return {**source, "labels": self.source_labels(example, length)}

    def describe(self, example: Strip) -> str:
        return f"strip of {len(example.digits)} handwritten digit(s): {example.caption}"

    def draw(self, example: Strip, words, weights, path: Path, title: str) -> Path:
        from ..viz import plot_image_attention

        H, W = example.image.shape
        ys = np.clip(np.rint(np.arange(H) / STRIDE).astype(int), 0, ROWS - 1)
        xs = np.arange(W) / STRIDE
        cols = weights.shape[1] // ROWS
        xs = np.clip(np.rint(xs).astype(int), 0, cols - 1)
        grids = weights.reshape(len(words), cols, ROWS).transpose(1, 2)  # (T, rows, cols)
        heat = grids[:, ys][:, :, xs]  # (T, H, W): each pixel gets its patch's weight
        return plot_image_attention(example.image, heat, words, path, title=title)
