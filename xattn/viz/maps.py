"""Pictures of what cross-attention looks at (the only module that imports matplotlib).

- `plot_attention`: one heatmap, source tokens on x, target tokens on y.
- `plot_attention_grid`: layers x heads, plus the head mean of each layer.
- `plot_loss_curve`: training and validation loss from a metrics.jsonl file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .figures import pyplot, save_figure

__all__ = ["plot_attention", "plot_attention_grid", "plot_loss_curve"]


def _check(weights: Tensor, source: Sequence[str], target: Sequence[str]) -> Tensor:
    weights = torch.as_tensor(weights).detach().float().cpu()
    if weights.dim() != 2 or weights.shape != (len(target), len(source)):
        raise ValueError(
            f"weights have shape {tuple(weights.shape)}; expected (T, S) = "
            f"({len(target)}, {len(source)}) for the given target and source tokens"
        )
    return weights


def _heatmap(ax, weights: Tensor, source, target, *, labels: bool = True, hard: bool = False):
    ax.imshow(
        weights.numpy(), cmap="Blues", vmin=0.0, vmax=max(1e-6, float(weights.max())), aspect="auto"
    )
    if hard:  # mark the peak of each row: the hard alignment
        peaks = weights.argmax(-1).tolist()
        ax.scatter(
            peaks,
            range(len(peaks)),
            marker="s",
            s=30,
            facecolors="none",
            edgecolors="crimson",
            linewidths=1.2,
        )
    if labels:
        ax.set_xticks(range(len(source)), source, rotation=60, ha="right", fontsize=9)
        ax.set_yticks(range(len(target)), target, fontsize=9)
    else:
        ax.set_xticks([])
        ax.set_yticks([])


def plot_attention(
    weights: Tensor,
    source: Sequence[str],
    target: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    hard: bool = True,
) -> Path:
    """weights (T, S): row t is where target token t looked. Writes a PNG."""
    weights = _check(weights, source, target)
    plt = pyplot()
    fig, ax = plt.subplots(
        figsize=(min(24.0, 1.5 + 0.45 * len(source)), min(24.0, 1.5 + 0.4 * len(target)))
    )
    _heatmap(ax, weights, source, target, hard=hard)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_attention_grid(
    maps: Sequence[Tensor],
    source: Sequence[str],
    target: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """maps: per layer (H, T, S). A grid of layers x (heads + head mean), the source named
    under the first and the head-mean columns of the last row. Writes a PNG."""
    maps = [torch.as_tensor(m).detach().float().cpu() for m in maps]
    L, H = len(maps), maps[0].shape[0]
    for m in maps:
        if m.shape != (H, len(target), len(source)):
            raise ValueError(
                f"a layer map has shape {tuple(m.shape)}; expected (H, T, S) = "
                f"({H}, {len(target)}, {len(source)})"
            )
    plt = pyplot()
    cell = min(6.0, 0.25 * max(len(source), len(target)) + 0.8)  # inches per map
    fig, axes = plt.subplots(L, H + 1, figsize=(cell * (H + 1), cell * L), squeeze=False)
    for layer, m in enumerate(maps):
        for head in range(H + 1):
            ax = axes[layer][head]
            w = m[head] if head < H else m.mean(0)
            last_row = layer == L - 1
            _heatmap(ax, w, source, target, labels=False, hard=head == H)
            if last_row and head in (0, H):  # the other columns share these labels
                ax.set_xticks(range(len(source)), source, rotation=90, fontsize=7)
            if head == 0:
                ax.set_yticks(range(len(target)), target, fontsize=7)
                ax.set_ylabel(f"layer {layer + 1}", fontsize=9)
            if layer == 0:
                ax.set_title("head mean" if head == H else f"head {head + 1}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_loss_curve(metrics: str | Path, path: str | Path) -> Path:
    """Training loss (and validation loss at evaluations) from a metrics.jsonl file."""
    records = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line]
    train = [(r["step"], r["loss"]) for r in records if r.get("split") == "train"]
    valid = [(r["step"], r["loss"]) for r in records if r.get("split") == "valid"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    if valid:
        ax.plot(*zip(*valid, strict=True), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
