"""Cross-attention drawn over the input itself: an image, a spectrogram, a passage.

- `plot_image_attention`: the image, then for each caption word its attention as a heat
  overlay on the image.
- `plot_spectrogram_attention`: the log-mel spectrogram with each word's attention over
  time under it (and the true word spans when known).
- `plot_passage_attention`: the passage, each sentence shaded by the answer word that reads
  it most, a weight column per answer word, the question and the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .figures import pyplot, save_figure

__all__ = ["plot_image_attention", "plot_passage_attention", "plot_spectrogram_attention"]


def _array(x) -> np.ndarray:
    return torch.as_tensor(x).detach().float().cpu().numpy()


def plot_image_attention(
    image, heat, words: Sequence[str], path: str | Path, *, title: str = ""
) -> Path:
    """image (H, W) in [0, 1]; heat (T, H, W): word t's attention spread over the pixels."""
    image, heat = _array(image), _array(heat)
    if image.ndim != 2 or heat.shape != (len(words), *image.shape):
        raise ValueError(
            f"image {image.shape} and heat {heat.shape} do not fit: expected "
            f"image (H, W) and heat (T={len(words)}, H, W)"
        )
    plt = pyplot()
    H, W = image.shape
    fig, axes = plt.subplots(
        len(words) + 1,
        1,
        figsize=(0.12 * W + 1.5, 0.16 * H * (len(words) + 1) + 0.6),
        squeeze=False,
    )
    axes[0][0].imshow(image, cmap="gray_r", vmin=0, vmax=1)
    axes[0][0].set_ylabel("input", rotation=0, ha="right", va="center", fontsize=9)
    for ax, word, h in zip(axes[1:, 0], words, heat, strict=True):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
        ax.imshow(h, cmap="inferno", alpha=0.6, vmin=0, vmax=max(1e-6, float(h.max())))
        ax.set_ylabel(word, rotation=0, ha="right", va="center", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_spectrogram_attention(
    mel,
    weights,
    words: Sequence[str],
    path: str | Path,
    *,
    frames_per_position: int = 4,
    frame_seconds: float = 0.01,
    spans: Sequence[tuple[int, int]] | None = None,
    title: str = "",
) -> Path:
    """mel (frames, F) log-mel features; weights (T, S'): word t's attention over the
    encoder positions, each covering frames_per_position frames; spans: the true frames
    [start, end) of each word, drawn as brackets."""
    mel, weights = _array(mel), _array(weights)
    if mel.ndim != 2 or weights.ndim != 2 or weights.shape[0] != len(words):
        raise ValueError(
            f"mel {mel.shape} and weights {weights.shape} do not fit: expected "
            f"mel (frames, F) and weights (T={len(words)}, S)"
        )
    plt = pyplot()
    frames = mel.shape[0]
    seconds = frames * frame_seconds
    size = (max(6.0, 2.2 * seconds + 2), 2.2 + 0.3 * len(words))
    ratios = [2, max(1, len(words)) * 0.5]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=size, sharex=True, gridspec_kw={"height_ratios": ratios}
    )
    top.imshow(
        mel.T, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, mel.shape[1])
    )
    top.set_ylabel("mel bin")
    span_s = frames_per_position * frame_seconds
    shown = weights / np.maximum(weights.max(1, keepdims=True), 1e-6)
    bottom.imshow(
        shown,
        aspect="auto",
        cmap="Blues",
        vmin=0,
        vmax=1,
        extent=(0, weights.shape[1] * span_s, len(words) - 0.5, -0.5),
    )
    bottom.set_yticks(range(len(words)), words, fontsize=9)
    if spans is not None:
        for t, (a, b) in enumerate(spans[: len(words)]):
            bottom.plot(
                [a * frame_seconds, b * frame_seconds],
                [t + 0.4, t + 0.4],
                color="crimson",
                linewidth=2,
            )
            top.axvspan(a * frame_seconds, b * frame_seconds, color="white", alpha=0.08)
    bottom.set_xlim(0, seconds)
    bottom.set_xlabel("time (s)" + ("; red: where the word was spoken" if spans else ""))
    if title:
        top.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_passage_attention(
    sentences: Sequence[str],
    weights,
    question: str,
    answer: str | Sequence[str],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """weights (A, N): each answer word's attention over the passage's N sentences (or (N,)
    for a one-word answer). Each sentence is shaded in the colour of the word that reads it
    most, with one percentage column per answer word."""
    words = answer.split() if isinstance(answer, str) else list(answer)
    weights = _array(weights)
    if weights.ndim == 1:
        weights = weights[None]
    if weights.shape != (len(words), len(sentences)):
        raise ValueError(
            f"weights have shape {weights.shape}; expected (A={len(words)}, "
            f"N={len(sentences)}): one row per answer word, one column per "
            f"sentence"
        )
    plt = pyplot()
    colours = [tuple(c[:3]) for c in plt.get_cmap("tab10").colors]
    lines = len(sentences) + 4
    fig = plt.figure(figsize=(7.5 + 0.8 * max(0, len(words) - 1), 0.32 * lines + 0.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    tops = np.maximum(weights.max(1), 1e-6)  # (A,)
    step = 1.0 / (lines + 1)
    y = 1 - step
    if title:
        ax.text(0.02, y, title, fontsize=9, color="#444", va="center")
        y -= step
    columns = [0.98 - 0.1 * (len(words) - j) for j in range(len(words))]
    for j, (x, word) in enumerate(zip(columns, words, strict=True)):
        ax.text(x, y, word, fontsize=8, va="center", color=colours[j % len(colours)], weight="bold")
    y -= step
    for n, sentence in enumerate(sentences):
        share = weights[:, n] / tops  # (A,) this sentence's weight for each word, scaled
        j = int(share.argmax())
        a = float(share[j])
        box = {"facecolor": (*colours[j % len(colours)], a), "edgecolor": "none", "pad": 2}
        ax.text(
            0.04,
            y,
            sentence,
            fontsize=10,
            va="center",
            color="white" if a > 0.55 else "black",
            bbox=box,
        )
        for x, w in zip(columns, weights[:, n], strict=True):
            ax.text(x, y, f"{100 * float(w):5.1f}%", fontsize=8, va="center", color="#555")
        y -= step
    ax.text(
        0.04, y, f"Q: {question}   A: {' '.join(words)}", fontsize=10, va="center", weight="bold"
    )
    return save_figure(fig, path)
