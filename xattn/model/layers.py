"""Building blocks of the encoder-decoder, in build order: norms, positions, front ends,
feed-forward, encoder layer, decoder layer.

Shape letters: B batch, S source length, T target length, D = d_model, F feature width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import CrossAttention, CrossAttentionMemory, KVCache, SelfAttention
from .config import ModelConfig
from .packing import StepLinears

__all__ = [
    "DecoderLayer",
    "EncoderLayer",
    "FeatureFrontEnd",
    "FeedForward",
    "LayerStep",
    "LearnedPositions",
    "SinusoidalPositions",
    "decode_one",
    "make_norm",
    "norm_function",
]


def make_norm(config: ModelConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.d_model, eps=config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos positions, sines in the first half of the width and cosines in the
    second (Marian's layout): row p, column i < D/2 is sin(p / 10000^(2i/D))."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        position = torch.arange(max_positions, dtype=torch.float64).unsqueeze(1)  # (P, 1)
        freq = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (D/2,)
        angles = position * freq  # (P, D/2)
        table = torch.cat([angles.sin(), angles.cos()], dim=1).float()  # (P, D)
        self.register_buffer("table", table, persistent=False)

    @property
    def max_positions(self) -> int:
        return self.table.shape[0]

    def forward(self, start: int, length: int) -> Tensor:
        return self.table[start : start + length]  # (length, D)

    def at(self, position: Tensor) -> Tensor:
        """The rows (1, D) of a position held in a tensor (1,) (compiled decoding steps)."""
        return self.table.index_select(0, position)


class LearnedPositions(nn.Module):
    """Learned positions; `offset` shifts the row used for position 0 (BART uses 2)."""

    def __init__(self, max_positions: int, dim: int, offset: int = 0) -> None:
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.randn(max_positions + offset, dim) * 0.02)

    @property
    def max_positions(self) -> int:
        return self.weight.shape[0] - self.offset

    def forward(self, start: int, length: int) -> Tensor:
        return self.weight[self.offset + start : self.offset + start + length]  # (length, D)

    def at(self, position: Tensor) -> Tensor:
        """The rows (1, D) of a position held in a tensor (1,) (compiled decoding steps)."""
        return self.weight.index_select(0, position + self.offset)


class FeatureFrontEnd(nn.Module):
    """A float feature sequence (B, S, F) to encoder inputs (B, S, D): one linear layer
    (the image, audio and sentence front ends are in model/frontends.py)."""

    def __init__(self, num_features: int, dim: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.proj = nn.Linear(num_features, dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.proj(features)


_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """F.dropout(x, p, training), faster on the CPU. PyTorch's CPU kernel draws one random
    number per element from its serial generator; here each 64 random bits decide four
    elements, 16 bits each: the drop rate is p rounded to a multiple of 2^-16 (0.1 becomes
    0.100006) and the kept values are scaled by the exact inverse of the rounded keep rate,
    so the expectation is x. The bits come from the same default generator, so
    torch.manual_seed and a restored RNG state give the same masks. Elsewhere (CUDA, p
    rounding to 0 or 1) it is F.dropout."""
    if not training or p == 0.0:
        return x
    drop = round(p * 65536)
    if x.device.type != "cpu" or not 0 < drop < 65536 or not x.is_floating_point():
        return F.dropout(x, p, training)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    lanes = bits.view(torch.int16)[:n].view(x.shape)
    # the comparison written as floats (1 kept, 0 dropped), then scaled: on the CPU about
    # half the time of writing bools and turning them into the scale or 0
    mask = torch.ge(lanes, drop - 32768, out=torch.empty(x.shape, dtype=x.dtype))
    return x * mask.mul_(65536 / (65536 - drop))  # the backward is one product with the mask


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.ffn_dim, bias=config.bias)
        self.fc2 = nn.Linear(config.ffn_dim, config.d_model, bias=config.bias)
        self.activation = _ACTIVATIONS[config.activation]
        self.activation_dropout = config.activation_dropout

    def forward(self, x: Tensor) -> Tensor:
        h = self.activation(self.fc1(x))  # (B, L, ffn_dim)
        h = dropout(h, self.activation_dropout, self.training)
        return self.fc2(h)  # (B, L, D)


class _Residual(nn.Module):
    """x + dropout(f(norm(x))) (pre-norm) or norm(x + dropout(f(x))) (post-norm)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm = make_norm(config)
        self.pre_norm = config.pre_norm
        self.dropout = config.dropout

    def branch_input(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.pre_norm else x

    def merge(self, x: Tensor, branch: Tensor) -> Tensor:
        y = x + dropout(branch, self.dropout, self.training)
        return y if self.pre_norm else self.norm(y)


class EncoderLayer(nn.Module):
    """Self-attention over the source, then the feed-forward block."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D, H = config.d_model, config.num_heads
        self.self_attn = SelfAttention(
            D,
            H,
            num_kv_heads=config.num_kv_heads,
            bias=config.bias,
            dropout=config.attention_dropout,
        )
        self.self_attn_block = _Residual(config)
        self.ffn = FeedForward(config)
        self.ffn_block = _Residual(config)

    def forward(self, x: Tensor, src_mask: Tensor | None) -> Tensor:
        h = self.self_attn_block.branch_input(x)  # (B, S, D)
        x = self.self_attn_block.merge(x, self.self_attn(h, mask=src_mask))
        h = self.ffn_block.branch_input(x)
        return self.ffn_block.merge(x, self.ffn(h))  # (B, S, D)


class DecoderLayer(nn.Module):
    """Causal self-attention over the target, cross-attention into the encoder memory,
    then the feed-forward block."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D, H = config.d_model, config.num_heads
        kwargs = {
            "num_kv_heads": config.num_kv_heads,
            "bias": config.bias,
            "dropout": config.attention_dropout,
        }
        self.self_attn = SelfAttention(D, H, causal=True, **kwargs)
        self.self_attn_block = _Residual(config)
        self.cross_attn = CrossAttention(D, H, context_dim=D, **kwargs)
        self.cross_attn_block = _Residual(config)
        self.ffn = FeedForward(config)
        self.ffn_block = _Residual(config)

    def forward(
        self,
        x: Tensor,
        memory: CrossAttentionMemory,
        *,
        cache: KVCache | None = None,
        return_weights: bool | str = False,
    ) -> tuple[Tensor, KVCache | None, Tensor | None]:
        """x (N, T, D) with N a multiple of the memory's batch (beams share a source).

        Returns (x (N, T, D), the updated self-attention cache or None, cross-attention
        weights or None: (N, T, S) for "mean", (N, H, T, S) for True).
        """
        h = self.self_attn_block.branch_input(x)
        if cache is None:
            y = self.self_attn(h)
        else:
            y, cache = self.self_attn(h, cache=cache)
        x = self.self_attn_block.merge(x, y)
        h = self.cross_attn_block.branch_input(x)
        weights = None
        if return_weights:
            y, weights = self.cross_attn(h, memory=memory, return_weights=return_weights)
        else:
            y = self.cross_attn(h, memory=memory)
        x = self.cross_attn_block.merge(x, y)
        h = self.ffn_block.branch_input(x)
        return self.ffn_block.merge(x, self.ffn(h)), cache, weights


def norm_function(norm: nn.Module) -> Callable[[Tensor], Tensor]:
    """A norm module's forward as a plain function of x (no module call), for decoding
    steps: F.layer_norm or F.rms_norm with the module's own weights."""
    if isinstance(norm, nn.LayerNorm):
        shape, weight, bias, eps = norm.normalized_shape, norm.weight, norm.bias, norm.eps
        return partial(F.layer_norm, normalized_shape=shape, weight=weight, bias=bias, eps=eps)
    if isinstance(norm, nn.RMSNorm):
        shape, weight, eps = norm.normalized_shape, norm.weight, norm.eps
        return partial(F.rms_norm, normalized_shape=shape, weight=weight, eps=eps)
    return norm


@dataclass(frozen=True)
class LayerStep:
    """A decoder layer read once for the decoding steps of generate (`rows` rows a step):
    its attention modules' one-step methods, its linear layers (model.packing.StepLinears),
    the three blocks' norms as functions, its activation and where its norms sit. The same
    parameters as the layer's; nothing is copied but the prepacked weights."""

    self_attend: Callable
    cross_attend: Callable
    linears: StepLinears
    norms: tuple[Callable[[Tensor], Tensor], ...]
    activation: Callable[[Tensor], Tensor]
    pre_norm: bool

    @classmethod
    def of(cls, layer: DecoderLayer, rows: int = 1, *, traced: bool = False) -> LayerStep:
        """traced: plain linear layers (StepLinears.plain), for a step torch.compile traces."""
        blocks = (layer.self_attn_block, layer.cross_attn_block, layer.ffn_block)
        return cls(
            layer.self_attn.decode_one,
            layer.cross_attn.attend_one,
            StepLinears.plain(layer) if traced else StepLinears.of(layer, rows),
            tuple(norm_function(block.norm) for block in blocks),
            layer.ffn.activation,
            layer.self_attn_block.pre_norm,
        )


def decode_one(
    step: LayerStep, x: Tensor, memory, cache: KVCache, position: Tensor | None = None
) -> tuple[Tensor, KVCache]:
    """DecoderLayer.forward for one decoding step, x (N, D) one position per row, in eval
    mode, without the checks generate made once: the same arithmetic with fewer calls (one
    matrix product for q, k and v, the cache written in place, no module calls, no
    dropout). Returns (x (N, D), the longer cache). position (1,): the step of a compiled
    graph (see SelfAttention.decode_one)."""
    linears, (norm1, norm2, norm3) = step.linears, step.norms
    qkv, out = linears.qkv, linears.self_out
    if step.pre_norm:
        y, cache = step.self_attend(norm1(x), cache, qkv, out, position)
        x = x + y
        x = x + step.cross_attend(norm2(x), memory, linears.cross_q, linears.cross_out)
        return x + linears.fc2(step.activation(linears.fc1(norm3(x)))), cache
    y, cache = step.self_attend(x, cache, qkv, out, position)
    x = norm1(x + y)
    x = norm2(x + step.cross_attend(x, memory, linears.cross_q, linears.cross_out))
    return norm3(x + linears.fc2(step.activation(linears.fc1(x)))), cache


def embed_scale(config: ModelConfig) -> float:
    return math.sqrt(config.d_model) if config.embed_scale else 1.0
