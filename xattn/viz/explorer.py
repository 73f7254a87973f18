"""The attention explorer: one self-contained HTML page (inline JS and CSS, nothing fetched
from anywhere) to study what cross-attention looks at, for every demo, `xattn attention`
and notebooks (`Explorer._repr_html_`; explorers on one page never touch each other).

What it shows, for each example:
- the target tokens: hover, click or use the arrow keys to pick one; the source lights up
  by how much that token's cross-attention looked at each source position;
- a choice of map: any layer and head, the mean of every head, the mean of the alignment
  heads; and a model view, the layers x heads as thumbnails to click;
- the source drawn as what it is: text tokens (or a passage's sentences), the image with
  the weights as heat over its patches, or the spectrogram with the word's attention over
  time under it, the gold word spans, word timestamps and the playable audio;
- the hard alignment (each target token's peak, and Pharaoh i-j links for text), and the
  tokens the model produced with their probabilities beside the reference.

Weights are stored once, quantized to 8 bits per row (each row scaled by its maximum,
which is stored too), so a page of a dozen examples stays small.
"""

from __future__ import annotations

import base64
import html
import io
import json
import uuid
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Explorer",
    "ExplorerExample",
    "audio_source",
    "explorer",
    "image_source",
    "quantize_rows",
    "text_source",
]


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def quantize_rows(weights: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(..., T, S) weights -> (uint8 levels, float32 row maxima (..., T)): each row scaled
    to its maximum, so level 255 is the row's peak and w ~ level / 255 * maximum."""
    w = torch.as_tensor(weights).detach().float().cpu().clamp_min(0)
    peak = w.amax(-1)  # (..., T)
    levels = torch.round(255 * w / peak.clamp_min(1e-12)[..., None]).to(torch.uint8)
    return levels.numpy(), peak.numpy().astype(np.float32)


def text_source(labels: Sequence[str], *, sentences: bool = False) -> dict:
    """Source positions shown as text: tokens, or (sentences=True) a passage's sentences,
    one position each, shown one a line."""
    return {"kind": "text", "labels": list(labels), "sentences": sentences}


def image_source(image, rows: int, cols: int) -> dict:
    """An image (H, W) in [0, 1] whose memory positions are a rows x cols grid of patches
    in column-major order (position k: column k // rows, row k % rows)."""
    pixels = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    if pixels.ndim != 2:
        raise ValueError(f"image has shape {pixels.shape}; expected (H, W)")
    H, W = pixels.shape
    return {"kind": "image", "height": H, "width": W, "rows": rows, "cols": cols,
            "pixels": _b64((pixels * 255).round().astype(np.uint8))}  # fmt: skip


def _wav_uri(samples: np.ndarray, rate: int) -> str:
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(rate))
        out.writeframes(pcm.tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def audio_source(
    mel, seconds_per_position: float, frame_seconds: float, *, samples=None,
    sample_rate: int | None = None, spans: Sequence[tuple[float, float]] | None = None,
    words: Sequence[tuple[str, float, float]] | None = None,
) -> dict:  # fmt: skip
    """Speech: the log-mel spectrogram (frames, bins), what each memory position covers,
    the audio itself (played from the page), the gold spans of the target words and word
    timestamps (seconds), when known."""
    mel = np.asarray(mel, dtype=np.float32)
    low, high = float(mel.min()), float(mel.max())
    levels = np.round(255 * (mel - low) / max(1e-9, high - low)).astype(np.uint8)
    source = {"kind": "audio", "frames": mel.shape[0], "bins": mel.shape[1],
              "mel": _b64(levels), "seconds_per_position": seconds_per_position,
              "frame_seconds": frame_seconds}  # fmt: skip
    if samples is not None:
        source["wav"] = _wav_uri(samples, sample_rate)
    if spans is not None:
        source["spans"] = [[float(a), float(b)] for a, b in spans]
    if words is not None:
        source["words"] = [[w, float(a), float(b)] for w, a, b in words]
    return source


@dataclass
class ExplorerExample:
    """One example: its source (text_source, image_source or audio_source), the target
    tokens, every layer's and head's weights maps (L, H, T, S); optionally the tokens the
    model produced with their probabilities, and the reference tokens."""

    source: dict
    target: list[str]
    maps: Tensor
    name: str = ""
    generated: list[tuple[str, float]] | None = None
    reference: list[str] | None = None
    note: str = ""
    labels: list[str] = field(default_factory=list)


def _example_data(example: ExplorerExample, heads) -> dict:
    maps = torch.as_tensor(example.maps).detach().float().cpu()
    if maps.dim() != 4 or maps.shape[2] != len(example.target):
        raise ValueError(
            f"maps have shape {tuple(maps.shape)}; expected (L, H, T, S) with "
            f"T = {len(example.target)} target tokens"
        )
    L, H, T, S = maps.shape
    labels = example.source.get("labels") or example.labels or [str(s) for s in range(S)]
    if len(labels) != S:
        raise ValueError(f"{len(labels)} source labels for {S} memory positions")
    views = [maps[layer, head] for layer in range(L) for head in range(H)]
    views.append(maps.mean((0, 1)))
    if heads is not None:
        views.append(torch.stack([maps[layer, head] for layer, head in heads]).mean(0))
    levels, peaks = quantize_rows(torch.stack(views))  # (maps, T, S), (maps, T)
    data = {"name": example.name, "source": {**example.source, "labels": list(labels)},
            "target": list(example.target), "shape": [L, H, T, S],
            "levels": _b64(levels), "peaks": _b64(peaks), "note": example.note}  # fmt: skip
    if example.generated is not None:
        data["generated"] = [[token, float(p)] for token, p in example.generated]
    if example.reference is not None:
        data["reference"] = list(example.reference)
    return data


@dataclass(frozen=True)
class Explorer:
    """A built explorer: `html` is the self-contained snippet; save() writes a page."""

    html: str
    title: str

    def _repr_html_(self) -> str:  # Jupyter shows it inline
        return self.html

    def page(self) -> str:
        return (
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title></head><body>\n{self.html}\n</body></html>\n"
        )

    def save(self, path: str | Path) -> Path:
        """Write the page whole (a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(self.page(), encoding="utf-8")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


def _asset(name: str) -> str:
    return (files("xattn.viz") / "explorer" / name).read_text(encoding="utf-8")


def explorer(
    examples: Sequence[ExplorerExample],
    *,
    title: str = "Cross-attention",
    alignment_heads: Sequence[Sequence[int]] | None = None,
    description: str = "",
) -> Explorer:
    """The explorer of these examples; alignment_heads ((layer, head) from 0) adds their
    mean as a map to choose (and makes it the one shown first)."""
    if not examples:
        raise ValueError("the explorer needs at least one example")
    heads = None if alignment_heads is None else [[int(a), int(b)] for a, b in alignment_heads]
    payload = {"title": title, "description": description, "alignment_heads": heads,
               "examples": [_example_data(e, heads) for e in examples]}  # fmt: skip
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    root = f"xae-{uuid.uuid4().hex[:12]}"
    css = _asset("explorer.css").replace("#ROOT", f"#{root}")
    script = _asset("explorer.js")
    snippet = (
        f'<div class="xae" id="{root}"><style>{css}</style>'
        f'<script type="application/json" class="xae-data">{data}</script>'
        f'<div class="xae-app"></div>'
        f"<script>(function () {{\n{script}\n"
        f"xattnExplorer(document.getElementById({json.dumps(root)}));\n}})();</script>"
        f"</div>"
    )
    return Explorer(snippet, title)
