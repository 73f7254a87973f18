"""Image captioning data: strips of handwritten digits and their captions ("seven zero four").

The digits are the 1,797 8x8 images of the UCI "Optical Recognition of Handwritten Digits"
data set (E. Alpaydin and C. Kaynak, 1998; CC BY 4.0), as bundled with scikit-learn and
embedded here unchanged (digits.csv.gz: 64 pixel values 0..16 and the label per line).

A strip puts 1-4 digits left to right on a 12 x 48 canvas with random gaps, vertical
jitter and light noise. Splits are made by source image: the test strips use digit images
(handwriting) that no training strip contains. Each example knows which pixel columns each
caption word came from (its gold alignment). Training strips (only those) draw each glyph
through a small random affine warp (rotation, scale, shear): more handwriting from the
1,445 training images.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib.resources import files

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DIGIT_WORDS", "HEIGHT", "WIDTH", "Strip", "load_digits", "make_strips", "warp_glyphs"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HEIGHT, WIDTH = 12, 48
GLYPH = 8


@dataclass(frozen=True)
class Strip:
    """image (HEIGHT, WIDTH) float32 in [0, 1]; digits; caption; spans[i] = (first, last + 1)
    pixel columns of the digit named by caption word i; sources: the digit images used."""

    image: np.ndarray
    digits: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    sources: tuple[int, ...]

    @property
    def caption(self) -> str:
        return " ".join(DIGIT_WORDS[d] for d in self.digits)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int64) from the embedded CSV."""
    raw = gzip.decompress((files("xattn.data") / "digits.csv.gz").read_bytes())
    table = np.loadtxt(raw.decode("ascii").splitlines(), delimiter=",", dtype=np.float32)
    return (table[:, :64] / 16.0).reshape(-1, 8, 8), table[:, 64].astype(np.int64)


def _split_images(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Image indices per split (80 / 10 / 10 %), stratified by digit."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for digit in range(10):
        ids = rng.permutation(np.flatnonzero(labels == digit))
        n_test = n_valid = len(ids) // 10
        parts["test"] += ids[:n_test].tolist()
        parts["valid"] += ids[n_test : n_test + n_valid].tolist()
        parts["train"] += ids[n_test + n_valid :].tolist()
    return {k: np.array(sorted(v)) for k, v in parts.items()}


def warp_glyphs(
    glyphs: np.ndarray,
    rng: np.random.Generator,
    *,
    rotation: float = 12.0,
    scale: float = 0.12,
    shear: float = 0.15,
) -> np.ndarray:
    """Each glyph (n, 8, 8) through its own random affine map about the glyph's center:
    a rotation of up to `rotation` degrees, a scale of exp(+-scale) per axis and a shear of
    up to `shear`, sampled bilinearly (ink pushed past the edge is cut off). All zero: the
    glyphs unchanged."""
    n = len(glyphs)
    angle = np.deg2rad(rng.uniform(-rotation, rotation, n))
    sx, sy = np.exp(rng.uniform(-scale, scale, (2, n)))
    k = rng.uniform(-shear, shear, n)
    cos, sin = np.cos(angle), np.sin(angle)
    # forward map A = rotation @ shear @ diag(sx, sy) in (x, y); the grid samples A^-1
    forward = np.stack(
        [
            np.stack([cos * sx, (cos * k - sin) * sy], -1),
            np.stack([sin * sx, (sin * k + cos) * sy], -1),
        ],
        1,
    )
    theta = np.concatenate([np.linalg.inv(forward), np.zeros((n, 2, 1))], 2)
    theta = torch.from_numpy(theta).float()
    x = torch.from_numpy(np.ascontiguousarray(glyphs, dtype=np.float32))[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0].clamp(0, 1).numpy()


def _layout(pool, rng, max_digits: int) -> tuple[np.ndarray, list[int], list[int]]:
    """Which images (chosen), and where: left columns xs (random gaps), top rows ys."""
    n = int(rng.integers(1, max_digits + 1))
    chosen = rng.choice(pool, n)
    slack = WIDTH - n * GLYPH  # free columns shared among the n + 1 gaps
    cuts = np.sort(rng.integers(0, slack + 1, n))  # the gaps are the sorted cuts' steps
    xs = (cuts + GLYPH * np.arange(n)).tolist()  # glyph i: gaps 0..i plus i glyphs
    ys = [int(rng.integers(0, HEIGHT - GLYPH + 1)) for _ in range(n)]  # vertical jitter
    return chosen, xs, ys


def _paint(layout, glyphs, labels, rng, noise: float) -> Strip:
    chosen, xs, ys = layout
    canvas = np.zeros((HEIGHT, WIDTH), np.float32)
    for glyph, x, y in zip(glyphs, xs, ys, strict=True):
        canvas[y : y + GLYPH, x : x + GLYPH] = np.maximum(
            canvas[y : y + GLYPH, x : x + GLYPH], glyph
        )
    canvas = np.clip(canvas + rng.normal(0, noise, canvas.shape).astype(np.float32), 0, 1)
    return Strip(
        canvas,
        tuple(int(labels[k]) for k in chosen),
        tuple((x, x + GLYPH) for x in xs),
        tuple(int(k) for k in chosen),
    )


def make_strips(
    train: int = 20000,
    valid: int = 500,
    test: int = 1000,
    *,
    seed: int = 0,
    max_digits: int = 4,
    noise: float = 0.05,
    warp: bool = True,
) -> dict[str, list[Strip]]:
    """Strips per split, each split drawing its digits from its own images; `warp`: the
    training glyphs go through random affine warps (valid and test glyphs never do)."""
    if not 1 <= max_digits <= WIDTH // GLYPH:
        raise ValueError(f"max_digits={max_digits}: expected 1 to {WIDTH // GLYPH}")
    images, labels = load_digits()
    pools = _split_images(labels, seed)
    sizes = {"train": train, "valid": valid, "test": test}
    out = {}
    for index, (name, size) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, index])
        if warp and name == "train" and size:
            layouts = [_layout(pools[name], rng, max_digits) for _ in range(size)]
            ids = np.concatenate([chosen for chosen, _, _ in layouts])
            glyphs = warp_glyphs(images[ids], rng)  # all at once: one grid_sample call
            per_strip = np.split(glyphs, np.cumsum([len(c) for c, _, _ in layouts])[:-1])
            out[name] = [
                _paint(layout, mine, labels, rng, noise)
                for layout, mine in zip(layouts, per_strip, strict=True)
            ]
        else:  # layout then paint, strip by strip: the held-out strips never change
            layouts = (_layout(pools[name], rng, max_digits) for _ in range(size))
            out[name] = [
                _paint(layout, images[layout[0]], labels, rng, noise) for layout in layouts
            ]
    return out
