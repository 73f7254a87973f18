"""Input front ends: what turns a non-text source into the encoder's input sequence.

Every front end takes the batch as the model receives it, `src` (B, S, ...) with the mask
(B, S) (True = real), and returns the encoder input (B, S', D) with its own mask (B, S').
Padded inputs are zeroed before every convolution, so a padded example gives the same
output as the example alone (in eval mode; in training, the image front end's batch norm
pools statistics over the real pixels of the whole batch). `adds_positions` says whether
the front end already encodes where each output token is (then the encoder adds no 1-D
positions of its own).

- ImageFrontEnd: an image strip given as a sequence of pixel columns (B, W, H), a small
  convolutional stem (3x3 convolutions of stride 1, 2, 2, 1 with batch norm) to a grid of
  (H/4) x (W/4) patch tokens, in column-major order, with fixed 2-D sin/cos positions (row
  in one half of the width, column in the other).
- AudioFrontEnd: log-mel frames (B, frames, mels), two stride-2 1-D convolutions: 4x fewer
  positions; the encoder adds its usual positions.
- WhisperFrontEnd: Whisper's stem, log-mel frames through two 1-D convolutions with GELU
  (the second of stride 2: one position per 20 ms) plus fixed sinusoidal positions.
- SentenceFrontEnd: a passage as sentences of word ids (B, N, L), one memory slot per
  sentence: the sum of its word embeddings, each scaled by a learned gain for its place in
  the sentence (memory networks' position encoding; a gain of 1 + p_j, p initialized to zero,
  so training starts from a bag of words), plus a learned embedding of how many sentences
  before the end of the passage it is. (Position vectors added to the words would sum to a
  constant per sentence length and lose the word order.)

Shape letters: B batch, S source length, D = d_model, W image width, H image height,
N sentences, L words per sentence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils import format_shape
from .config import FRONT_END_NAMES as FRONT_ENDS

__all__ = [
    "FRONT_ENDS",
    "AudioFrontEnd",
    "FrontEnd",
    "ImageFrontEnd",
    "SentenceFrontEnd",
    "WhisperFrontEnd",
    "build_front_end",
    "sinusoids_2d",
    "whisper_sinusoids",
]


class FrontEnd(nn.Module):
    """Base class: forward(src (B, S, ...), mask (B, S) or None) -> (x (B, S', D), mask)."""

    adds_positions = False
    reads_ids = False  # True: src holds token ids (long); False: float features

    def check(self, src: Tensor) -> None:
        """Raise ValueError when src does not have the shape this front end reads."""

    @staticmethod
    def _zero_padding(x: Tensor, mask: Tensor | None) -> Tensor:
        # x (B, S, ...) with mask (B, S): padded positions become exact zeros
        if mask is None:
            return x
        return x * mask.view(*mask.shape, *[1] * (x.dim() - 2)).to(x.dtype)


def _halve(mask: Tensor | None) -> Tensor | None:
    """The mask after a stride-2, kernel-3, padding-1 convolution: ceil(length / 2)."""
    if mask is None:
        return None
    lengths = mask.sum(1)
    S = (mask.shape[1] + 1) // 2
    return torch.arange(S, device=mask.device)[None, :] < ((lengths + 1) // 2)[:, None]


class AudioFrontEnd(FrontEnd):
    """Log-mel frames (B, frames, F) -> (B, ceil(ceil(frames/2)/2), D)."""

    def __init__(self, num_features: int, dim: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.conv1 = nn.Conv1d(num_features, dim, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim)  # unit-scale features next to the encoder's positions

    def check(self, src: Tensor) -> None:
        if src.shape[-1] != self.num_features:
            raise ValueError(
                f"src has shape {format_shape(src.shape)}; expected log-mel frames "
                f"(B, frames, {self.num_features})"
            )

    def forward(self, src: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x = self._zero_padding(src, mask).transpose(1, 2)  # (B, F, frames)
        x = F.gelu(self.conv1(x))  # (B, D, frames/2)
        mask = _halve(mask)
        x = self._zero_padding(x.transpose(1, 2), mask).transpose(1, 2)
        x = F.gelu(self.conv2(x))  # (B, D, frames/4)
        mask = _halve(mask)
        return self._zero_padding(self.norm(x.transpose(1, 2)), mask), mask  # (B, S', D)


def whisper_sinusoids(length: int, dim: int) -> Tensor:
    """(length, dim) Whisper's encoder positions: sines then cosines of position p over
    dim / 2 timescales spaced geometrically from 1 to 10,000."""
    step = math.log(10000.0) / (dim // 2 - 1)
    inverse = torch.exp(-step * torch.arange(dim // 2, dtype=torch.float64))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inverse[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


class WhisperFrontEnd(FrontEnd):
    """Log-mel frames (B, frames, F) -> (B, ceil(frames / 2), D): conv1 (kernel 3) and conv2
    (kernel 3, stride 2), each followed by GELU, plus the fixed positions (a buffer, so a
    checkpoint's table loads as it is)."""

    adds_positions = True

    def __init__(self, num_features: int, dim: int, max_positions: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.conv1 = nn.Conv1d(num_features, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("positions", whisper_sinusoids(max_positions, dim))

    def check(self, src: Tensor) -> None:
        limit = 2 * self.positions.shape[0]
        if src.shape[-1] != self.num_features or src.shape[1] > limit:
            raise ValueError(
                f"src has shape {format_shape(src.shape)}; expected log-mel frames (B, frames, "
                f"{self.num_features}) with at most {limit} frames (30 s)"
            )

    def forward(self, src: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x = self._zero_padding(src, mask).transpose(1, 2)  # (B, F, frames)
        x = F.gelu(self.conv1(x))  # (B, D, frames)
        x = self._zero_padding(x.transpose(1, 2), mask).transpose(1, 2)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, S', D)
        mask = _halve(mask)
        x = x + self.positions[: x.shape[1]]
        return self._zero_padding(x, mask), mask


def sinusoids_2d(rows: int, cols: int, dim: int) -> Tensor:
    """(rows * cols, dim) fixed positions in column-major order: token c * rows + r gets
    sin/cos of r in the first half of the width and of c in the second."""
    half = dim // 2
    freq = torch.pow(10000.0, -torch.arange(0, half, 2, dtype=torch.float64) / half)

    def table(n: int) -> Tensor:
        angles = torch.arange(n, dtype=torch.float64)[:, None] * freq  # (n, half/2)
        return torch.cat([angles.sin(), angles.cos()], 1)  # (n, half)

    r, c = table(rows), table(cols)
    grid = torch.cat(
        [r[None, :, :].expand(cols, rows, half), c[:, None, :].expand(cols, rows, half)], -1
    )
    return grid.reshape(cols * rows, 2 * half).float()


class ImageFrontEnd(FrontEnd):
    """An image as pixel columns (B, W, H) -> patch tokens (B, ceil(ceil(W/2)/2) * H', D),
    H' = ceil(ceil(H/2)/2), column-major, with 2-D positions; the mask marks real columns.

    Four 3x3 convolutions (stride 1, 2, 2, 1; widths 32, 64, D, D), each followed by batch
    norm and GELU: the first runs at full resolution (an 8-pixel glyph keeps its strokes),
    the last at token resolution, so token column c sees the 17 pixel columns 4c - 8 ..
    4c + 8: a whole glyph wherever it sits against the 4-pixel grid, and its neighbours.
    Batch norm keeps every layer's activations at unit scale while AdamW moves the weights
    (so the features do not outgrow the fixed positions); its batch statistics count real
    pixels only, so padding never changes what a real pixel becomes.
    """

    adds_positions = True

    def __init__(self, height: int, dim: int, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"ImageFrontEnd needs a width divisible by 4, got {dim}")
        self.height, self.dim = height, dim
        self.rows = math.ceil(math.ceil(height / 2) / 2)
        widths = (1, *channels, dim, dim)
        self.strides = (1, 2, 2, 1)
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
            for c_in, c_out, stride in zip(widths[:-1], widths[1:], self.strides, strict=True)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in widths[1:])
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        self.proj = nn.Linear(dim, dim, bias=False)

    def check(self, src: Tensor) -> None:
        if src.shape[-1] != self.height:
            raise ValueError(
                f"src has shape {format_shape(src.shape)}; expected image columns "
                f"(B, W, H={self.height})"
            )

    @staticmethod
    def _batch_norm(norm: nn.BatchNorm2d, x: Tensor, mask: Tensor | None) -> Tensor:
        """Batch norm of x (B, C, H, W) with statistics over the real columns (mask (B, W),
        None: all real); padded columns come out zero."""
        if mask is None:
            return norm(x)
        cols = x.permute(0, 3, 2, 1)  # (B, W, H, C)
        real = cols[mask]  # (n, H, C)
        momentum = 0.0 if norm.momentum is None else norm.momentum
        flat = F.batch_norm(
            real.reshape(-1, x.shape[1]),
            norm.running_mean,
            norm.running_var,
            norm.weight,
            norm.bias,
            norm.training,
            momentum,
            norm.eps,
        )
        out = cols.new_zeros(cols.shape)
        out[mask] = flat.view_as(real)
        return out.permute(0, 3, 2, 1)

    def forward(self, src: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        B = src.shape[0]
        x = self._zero_padding(src, mask).transpose(1, 2)[:, None]  # (B, 1, H, W)
        ragged = mask is not None and not bool(mask.all())  # one host sync, not one per layer
        for conv, norm, stride in zip(self.convs, self.norms, self.strides, strict=True):
            x = conv(x)  # (B, C, H, W), (B, C, H/2, W/2), then (B, D, H', W') twice
            if stride == 2:
                mask = _halve(mask)
            x = F.gelu(self._batch_norm(norm, x, mask if ragged else None))
        cols = x.shape[-1]
        tokens = x.permute(0, 3, 2, 1).reshape(B, cols * self.rows, self.dim)  # column-major
        tokens = self.proj(tokens) + sinusoids_2d(self.rows, cols, self.dim).to(tokens)
        if mask is not None:
            mask = mask.repeat_interleave(self.rows, dim=1)  # (B, W' * H')
        return self._zero_padding(tokens, mask), mask


class SentenceFrontEnd(FrontEnd):
    """Sentences of word ids (B, N, L), padding id 0 -> one slot per sentence (B, N, D)."""

    adds_positions = True
    reads_ids = True

    def __init__(
        self, vocab_size: int, dim: int, max_words: int, max_sentences: int, pad_token_id: int = 0
    ) -> None:
        super().__init__()
        self.vocab_size, self.pad_token_id = vocab_size, pad_token_id
        self.words = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        # word j of a sentence is scaled by 1 + position_gains[j] (zeros: a bag of words)
        self.position_gains = nn.Parameter(torch.zeros(max_words, dim))
        self.recency = nn.Embedding(max_sentences, dim)  # sentences before the end

    def check(self, src: Tensor) -> None:
        if src.dim() != 3:
            raise ValueError(
                f"src has shape {format_shape(src.shape)}; expected sentences of word ids (B, N, L)"
            )
        N, L = src.shape[1:]
        if L > len(self.position_gains) or N > self.recency.num_embeddings:
            raise ValueError(
                f"src has shape {format_shape(src.shape)}: at most {self.recency.num_embeddings} "
                f"sentences of {len(self.position_gains)} words fit this model"
            )
        if src.numel() and (int(src.min()) < 0 or int(src.max()) >= self.vocab_size):
            raise ValueError(f"src holds word ids outside [0, {self.vocab_size})")

    def forward(self, src: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        N, L = src.shape[1:]
        words = src != self.pad_token_id  # (B, N, L)
        if mask is None:
            mask = words.any(-1)  # (B, N)
        x = self.words(src) * (1 + self.position_gains[:L])  # (B, N, L, D)
        x = (x * words[..., None].to(x.dtype)).sum(2)  # (B, N, D)
        count = mask.sum(1, keepdim=True)  # (B, 1) real sentences
        before_end = (count - 1 - torch.arange(N, device=src.device)[None, :]).clamp(min=0)
        x = x + self.recency(before_end)
        return self._zero_padding(x, mask), mask


def build_front_end(config) -> FrontEnd | None:
    """The front end a ModelConfig names (None for token ids and plain linear features)."""
    D = config.d_model
    if config.front_end == "image":
        return ImageFrontEnd(config.source_features, D)
    if config.front_end == "audio":
        return AudioFrontEnd(config.source_features, D)
    if config.front_end == "whisper":
        return WhisperFrontEnd(config.source_features, D, config.source_positions)
    if config.front_end == "sentences":
        return SentenceFrontEnd(
            config.vocab_size, D, config.source_features, config.max_positions, config.pad_token_id
        )
    return None
