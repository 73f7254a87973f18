"""Image captioning data: strips of handwritten digits and their captions ("seven zero four").

The digits are the 1,797 8x8 images of the UCI "Optical Recognition of Handwritten Digits"
data set (E. Alpaydin and C. Kaynak, 1998; CC BY 4.0), as bundled with scikit-learn and
embedded here unchanged (digits.csv.gz: 64 pixel values 0..16 and the label per line).

A strip puts 1-4 digits left to right on a 12 x 48 canvas with random gaps, vertical
jitter and light noise. Splits are made by source image: the test strips use digit images
(handwriting) that no training strip contains. Each example knows which pixel columns each
caption word came from (its gold alignment).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib.resources import files

import numpy as np

__all__ = ["DIGIT_WORDS", "HEIGHT", "WIDTH", "Strip", "load_digits", "make_strips"]

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


def _compose(images, labels, pool, rng, max_digits: int, noise: float) -> Strip:
    n = int(rng.integers(1, max_digits + 1))
    chosen = rng.choice(pool, n)
    slack = WIDTH - n * GLYPH  # free columns shared among the n + 1 gaps
    cuts = np.sort(rng.integers(0, slack + 1, n))  # gap sizes from sorted cut points
    gaps = np.diff(np.concatenate([[0], cuts]))
    canvas = np.zeros((HEIGHT, WIDTH), np.float32)
    spans, x = [], 0
    for k, gap in zip(chosen, gaps, strict=True):
        x += int(gap)
        y = int(rng.integers(0, HEIGHT - GLYPH + 1))  # vertical jitter
        canvas[y : y + GLYPH, x : x + GLYPH] = np.maximum(canvas[y : y + GLYPH, x : x + GLYPH],
                                                          images[k])  # fmt: skip
        spans.append((x, x + GLYPH))
        x += GLYPH
    canvas = np.clip(canvas + rng.normal(0, noise, canvas.shape).astype(np.float32), 0, 1)
    return Strip(canvas, tuple(int(labels[k]) for k in chosen), tuple(spans),
                 tuple(int(k) for k in chosen))  # fmt: skip


def make_strips(
    train: int = 20000, valid: int = 500, test: int = 1000, *, seed: int = 0,
    max_digits: int = 4, noise: float = 0.05,
) -> dict[str, list[Strip]]:  # fmt: skip
    """Strips per split, each split drawing its digits from its own images."""
    if not 1 <= max_digits <= WIDTH // GLYPH:
        raise ValueError(f"max_digits={max_digits}: expected 1 to {WIDTH // GLYPH}")
    images, labels = load_digits()
    pools = _split_images(labels, seed)
    sizes = {"train": train, "valid": valid, "test": test}
    out = {}
    for index, (name, size) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, index])
        out[name] = [_compose(images, labels, pools[name], rng, max_digits, noise)
                     for _ in range(size)]  # fmt: skip
    return out
