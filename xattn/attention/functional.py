"""The attention math and its backends.

    Attention(Q, K, V) = softmax(Q K^T * scale + bias, masked) V,   scale = 1 / sqrt(Dh)

`attention()` is the one public entry point; `_math_attention` is the formula written out
line by line, and every other backend must equal it.

Shape letters: B batch, H query heads, Hkv key/value heads (H % Hkv == 0, G = H // Hkv
query heads share one key/value head), T target (query) length, S source (key) length,
Dh head width, Dv value head width.

Conventions (the same in every module of xattn):
- `mask` is boolean, True = may attend, broadcastable to (B, H, T, S).
- `bias` is an additive float tensor broadcastable to (B, H, T, S); a -inf entry acts as
  a masked key.
- `causal=True` is aligned bottom-right: query i sees key j when j <= i + S - T.
- A query row with nothing to attend to gives exact zeros, zero weights and zero (finite)
  gradients on every backend.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils import format_shape

__all__ = ["BACKENDS", "BackendChoice", "attention", "explain_backend"]

BACKENDS = ("auto", "flash", "sdpa", "chunked", "math")
# Backends in the order "auto" prefers them: fastest first.
_PREFERENCE = ("flash", "sdpa", "chunked", "math")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_NEG_INF = float("-inf")

ReturnWeights = bool | Literal["mean"]


# --------------------------------------------------------------------------------------
# Validation: every public call goes through here once.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """The sizes and options of one validated call (what backend choice looks at)."""

    B: int
    H: int
    Hkv: int
    T: int
    S: int
    Dh: int
    Dv: int
    scale: float
    dtype: torch.dtype
    device: torch.device
    has_mask: bool
    has_bias: bool
    causal: bool
    dropout_p: float
    return_weights: ReturnWeights


def _check_tensor(name: str, x, expected: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {expected}, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} has shape {format_shape(x.shape)}; expected {expected}")


def _check_broadcast(name: str, x: Tensor, full: tuple[int, int, int, int]) -> None:
    ok = x.dim() <= 4 and all(
        s == 1 or s == f for s, f in zip(reversed(x.shape), reversed(full), strict=False)
    )
    if not ok:
        raise ValueError(
            f"{name} has shape {format_shape(x.shape)}; expected a shape broadcastable to "
            f"(B, H, T, S) = {format_shape(full)}"
        )


def _validate(
    query, key, value, mask, bias, causal, scale, dropout_p, return_weights, backend
) -> _Call:
    _check_tensor("query", query, "(B, H, T, Dh)")
    _check_tensor("key", key, "(B, Hkv, S, Dh)")
    _check_tensor("value", value, "(B, Hkv, S, Dv)")
    B, H, T, Dh = query.shape
    _, Hkv, S, _ = key.shape
    Dv = value.shape[-1]
    if key.shape[0] != B or key.shape[3] != Dh:
        raise ValueError(
            f"key has shape {format_shape(key.shape)}; expected (B, Hkv, S, Dh) with B={B}, "
            f"Dh={Dh} "
            f"(from query {format_shape(query.shape)})"
        )
    if value.shape[:3] != key.shape[:3]:
        raise ValueError(
            f"value has shape {format_shape(value.shape)}; expected (B, Hkv, S, Dv) with B={B}, "
            f"Hkv={Hkv}, S={S} (from key {format_shape(key.shape)})"
        )
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(
            f"query has H={H} heads and key has Hkv={Hkv}; H must be a positive multiple of "
            f"Hkv (grouped-query attention)"
        )
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f"{name} has dtype {x.dtype}; expected a floating dtype "
                f"(float16, bfloat16, float32 or float64)"
            )
        if x.dtype != query.dtype:
            raise ValueError(
                f"{name} has dtype {x.dtype} but query has {query.dtype}; query, key and "
                f"value must share one dtype"
            )
        if x.device != query.device:
            raise ValueError(
                f"{name} is on {x.device} but query is on {query.device}; all tensors must "
                f"be on one device"
            )
    full = (B, H, T, S)
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise ValueError(f"mask must be a bool torch.Tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise ValueError(
                f"mask has dtype {mask.dtype}; expected torch.bool (True = may attend). "
                f"Pass an additive float mask as bias="
            )
        _check_broadcast("mask", mask, full)
        if mask.device != query.device:
            raise ValueError(f"mask is on {mask.device} but query is on {query.device}")
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise ValueError(f"bias must be a float torch.Tensor, got {type(bias).__name__}")
        if not bias.is_floating_point():
            raise ValueError(
                f"bias has dtype {bias.dtype}; expected a floating dtype (an additive bias). "
                f"Pass a boolean mask as mask="
            )
        _check_broadcast("bias", bias, full)
        if bias.device != query.device:
            raise ValueError(f"bias is on {bias.device} but query is on {query.device}")
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be True or False, got {causal!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(Dh) if Dh > 0 else 1.0
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number or None, got {scale!r}")
    if (
        isinstance(dropout_p, bool)
        or not isinstance(dropout_p, (int, float))
        or not (0.0 <= dropout_p < 1.0)
    ):
        raise ValueError(f"dropout_p={dropout_p!r}; expected a number with 0 <= dropout_p < 1")
    if not (return_weights is False or return_weights is True or return_weights == "mean"):
        raise ValueError(f"return_weights={return_weights!r}; expected False, True or 'mean'")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; expected one of {', '.join(map(repr, BACKENDS))}")
    return _Call(
        B=B,
        H=H,
        Hkv=Hkv,
        T=T,
        S=S,
        Dh=Dh,
        Dv=Dv,
        scale=float(scale),
        dtype=query.dtype,
        device=query.device,
        has_mask=mask is not None,
        has_bias=bias is not None,
        causal=causal,
        dropout_p=float(dropout_p),
        return_weights=return_weights,
    )


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def causal_mask(T: int, S: int, *, device=None) -> Tensor:
    """Bottom-right causal mask (T, S): query i may see key j when j <= i + S - T."""
    return _causal_rows(0, T, 0, S, T, S, device)


def _causal_rows(t0: int, t1: int, s0: int, s1: int, T: int, S: int, device) -> Tensor:
    """Rows t0:t1 and columns s0:s1 of the bottom-right causal mask of a (T, S) matrix."""
    rows = torch.arange(t0, t1, device=device).unsqueeze(1)  # (tq, 1)
    cols = torch.arange(s0, s1, device=device).unsqueeze(0)  # (1, tk)
    return cols <= rows + (S - T)  # (tq, tk)


def _combined_mask(mask: Tensor | None, causal: bool, T: int, S: int, device) -> Tensor | None:
    """The one boolean "may attend" mask of a call, broadcastable to (B, H, T, S)."""
    if causal:
        tri = causal_mask(T, S, device=device)
        return tri if mask is None else mask & tri
    return mask


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Scores and softmax run in float32 for half-precision inputs."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _masked_softmax(scores: Tensor, may_have_empty_rows: bool) -> Tensor:
    """softmax over the last dim where a row of all -inf gives zeros (and zero gradient)."""
    if not may_have_empty_rows:
        return torch.softmax(scores, dim=-1)
    empty = scores.amax(dim=-1, keepdim=True) == _NEG_INF  # rows with nothing to attend to
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1)
    return weights.masked_fill(empty, 0.0)


def _may_have_empty_rows(mask, bias, causal: bool, T: int, S: int) -> bool:
    return mask is not None or bias is not None or (causal and T > S) or S == 0


# --------------------------------------------------------------------------------------
# Backend "math": the readable reference. Materializes the (B, H, T, S) matrix.
# --------------------------------------------------------------------------------------


def _math_attention(query, key, value, mask, bias, causal, scale, dropout_p, return_weights):
    _, H, T, _ = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    out_dtype = query.dtype
    cdt = _compute_dtype(out_dtype)
    q, k, v = query.to(cdt), key.to(cdt), value.to(cdt)
    if Hkv != H:  # grouped-query attention: each K/V head serves G = H // Hkv query heads
        k = k.repeat_interleave(H // Hkv, dim=1)  # (B, H, S, Dh)
        v = v.repeat_interleave(H // Hkv, dim=1)  # (B, H, S, Dv)

    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias.to(cdt)
    allowed = _combined_mask(mask, causal, T, S, query.device)  # broadcasts to (B, H, T, S)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, _NEG_INF)
    weights = _masked_softmax(scores, _may_have_empty_rows(mask, bias, causal, T, S))
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    out = (dropped @ v).to(out_dtype)  # (B, H, T, Dv)

    if return_weights is False:
        return out
    if return_weights == "mean":
        return out, weights.mean(dim=1).to(out_dtype)  # (B, T, S)
    return out, weights.to(out_dtype)  # (B, H, T, S)


# --------------------------------------------------------------------------------------
# Backend "sdpa": torch's fused kernels, with our mask/causal convention translated.
# --------------------------------------------------------------------------------------


def _sdpa_attention(query, key, value, mask, bias, causal, scale, dropout_p, return_weights):
    assert return_weights is False, "sdpa returns no weights; backend choice refuses it"
    B, H, T, _ = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    gqa = {"enable_gqa": True} if Hkv != H else {}

    if causal and mask is None and bias is None:
        if T == S:  # bottom-right equals torch's top-left when the matrix is square
            return F.scaled_dot_product_attention(
                query, key, value, dropout_p=dropout_p, is_causal=True, scale=scale, **gqa
            )
        if T > S:  # the first T - S queries see nothing: zeros, the rest is square
            tail = F.scaled_dot_product_attention(
                query[:, :, T - S :],
                key,
                value,
                dropout_p=dropout_p,
                is_causal=True,
                scale=scale,
                **gqa,
            )
            head = tail.new_zeros(B, H, T - S, tail.shape[-1])
            return torch.cat([head, tail], dim=2)  # (B, H, T, Dv)

    allowed = _combined_mask(mask, causal, T, S, query.device)
    empty = None
    if allowed is not None:
        has_any = allowed.any(dim=-1, keepdim=True)  # (.., T, 1)
        if not bool(has_any.all()):
            empty = ~has_any
            allowed = allowed | empty  # give empty rows something finite, zero them after
    if bias is not None:
        attn_mask = bias.to(query.dtype)
        if allowed is not None:
            attn_mask = attn_mask.masked_fill(~allowed, _NEG_INF)
    else:
        attn_mask = allowed
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale, **gqa
    )  # (B, H, T, Dv)
    if empty is not None:
        out = out.masked_fill(empty, 0.0)
    return out


# --------------------------------------------------------------------------------------
# Backend "flash": flash-attn on CUDA (half precision, causal, no mask or bias).
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _flash_attn_func() -> Callable | None:
    try:
        from flash_attn import flash_attn_func
    except Exception:  # not installed, or built for another torch/CUDA
        return None
    return flash_attn_func


def _flash_attention(query, key, value, mask, bias, causal, scale, dropout_p, return_weights):
    assert mask is None and bias is None and return_weights is False
    flash_attn_func = _flash_attn_func()
    # flash-attn works on (B, T, H, Dh), handles Hkv < H itself, and aligns causal masks
    # bottom-right (flash-attn >= 2.1), giving zeros for rows with no key.
    out = flash_attn_func(
        query.transpose(1, 2),
        key.transpose(1, 2),
        value.transpose(1, 2),
        dropout_p=dropout_p,
        softmax_scale=scale,
        causal=causal,
    )
    return out.transpose(1, 2)  # (B, H, T, Dv)


# --------------------------------------------------------------------------------------
# Backend "chunked": exact attention in plain PyTorch, never holding the (T, S) matrix.
# --------------------------------------------------------------------------------------

# Score elements per block: B * H * block_t * block_s stays near this (8 MB of float32).
_BLOCK_ELEMENTS = 1 << 21
# Keys per block at most (tests shrink both to exercise many blocks).
_BLOCK_S_MAX = 1024


def _block_sizes(B: int, H: int, T: int, S: int) -> tuple[int, int]:
    rows = max(1, B * H)
    block_s = max(1, min(S, _BLOCK_S_MAX))
    block_t = max(1, min(T, _BLOCK_ELEMENTS // (rows * block_s)))
    if block_t == T and T * block_s * rows < _BLOCK_ELEMENTS:
        block_s = max(1, min(S, _BLOCK_ELEMENTS // (rows * max(T, 1))))
    return block_t, block_s


def _as5d(x: Tensor | None, Hkv: int, G: int) -> Tensor | None:
    """A tensor broadcastable to (B, H, T, S) viewed as (b, Hkv|1, G|1, t, s)."""
    if x is None:
        return None
    while x.dim() < 4:
        x = x.unsqueeze(0)
    if x.shape[1] == 1:
        return x.unsqueeze(2)  # (b, 1, 1, t, s)
    return x.unflatten(1, (Hkv, G))  # (b, Hkv, G, t, s)


def _block(x5: Tensor | None, t0: int, t1: int, s0: int, s1: int) -> Tensor | None:
    """Rows t0:t1 and columns s0:s1 of a 5-D mask or bias, leaving broadcast dims alone."""
    if x5 is None:
        return None
    rows = slice(t0, t1) if x5.shape[-2] > 1 else slice(None)
    cols = slice(s0, s1) if x5.shape[-1] > 1 else slice(None)
    return x5[..., rows, cols]


def _causal_block(t0: int, t1: int, s0: int, s1: int, T: int, S: int, device):
    """(kind, mask) for a block under bottom-right causal: kind is 'all', 'none' or 'some'."""
    shift = S - T
    if s1 - 1 <= t0 + shift:
        return "all", None  # every query of the block sees every key of the block
    if s0 > t1 - 1 + shift:
        return "none", None  # no query of the block sees any key of the block
    return "some", _causal_rows(t0, t1, s0, s1, T, S, device)  # (tq, tk)


class _Blocks:
    """What both passes of the chunked backend need to rebuild one (t, s) block of scores.

    Query blocks are viewed as (B, Hkv, G * tq, Dh) so that one matmul serves the G query
    heads of each key/value head without copying K or V.
    """

    def __init__(self, q, k, v, mask, bias, causal, scale, dropout_p, seed):
        self.B, self.H, self.T, self.Dh = q.shape
        self.Hkv, self.S, self.Dv = k.shape[1], k.shape[2], v.shape[3]
        self.G = self.H // self.Hkv
        self.cdt = _compute_dtype(q.dtype)
        self.q5 = q.unflatten(1, (self.Hkv, self.G))  # (B, Hkv, G, T, Dh)
        self.k, self.v = k, v  # (B, Hkv, S, Dh), (B, Hkv, S, Dv)
        self.mask5 = _as5d(mask, self.Hkv, self.G)
        self.bias5 = _as5d(bias, self.Hkv, self.G)
        self.causal, self.scale = causal, scale
        self.dropout_p, self.seed = dropout_p, seed
        self.block_t, self.block_s = _block_sizes(self.B, self.H, self.T, self.S)

    def t_ranges(self):
        return [(t0, min(t0 + self.block_t, self.T)) for t0 in range(0, self.T, self.block_t)]

    def s_ranges(self):
        return [(s0, min(s0 + self.block_s, self.S)) for s0 in range(0, self.S, self.block_s)]

    def query(self, t0, t1) -> Tensor:
        q = self.q5[:, :, :, t0:t1].to(self.cdt)  # (B, Hkv, G, tq, Dh)
        return q.reshape(self.B, self.Hkv, self.G * (t1 - t0), self.Dh)  # (B, Hkv, G*tq, Dh)

    def scores(self, q_blk, t0, t1, s0, s1) -> Tensor | None:
        """Scaled, biased, masked scores (B, Hkv, G, tq, tk), or None if all masked."""
        kind, tri = ("all", None)
        if self.causal:
            kind, tri = _causal_block(t0, t1, s0, s1, self.T, self.S, q_blk.device)
            if kind == "none":
                return None
        k_blk = self.k[:, :, s0:s1].to(self.cdt)  # (B, Hkv, tk, Dh)
        s = (q_blk @ k_blk.transpose(-2, -1)).mul_(self.scale)  # (B, Hkv, G*tq, tk)
        s = s.view(self.B, self.Hkv, self.G, t1 - t0, s1 - s0)  # (B, Hkv, G, tq, tk)
        bias = _block(self.bias5, t0, t1, s0, s1)
        if bias is not None:
            s = s.add_(bias.to(self.cdt))
        allowed = _block(self.mask5, t0, t1, s0, s1)
        if tri is not None:
            allowed = tri if allowed is None else allowed & tri
        if allowed is not None:
            s = s.masked_fill_(~allowed, _NEG_INF)
        return s

    def keep(self, t_index, s_index, shape, device) -> Tensor:
        """The dropout keep-mask of one block, reproducible in the backward pass."""
        gen = torch.Generator(device=device)
        gen.manual_seed((self.seed + 1_000_003 * t_index + s_index) % (1 << 63))
        return torch.rand(shape, generator=gen, device=device) >= self.dropout_p


class _ChunkedAttention(torch.autograd.Function):
    """Online-softmax attention over key blocks with a recomputing backward pass.

    Extra memory is O(B * H * (T + S)) plus one block of scores, forward and backward.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, mask, causal, scale, dropout_p, seed):
        blocks = _Blocks(q, k, v, mask, bias, causal, scale, dropout_p, seed)
        B, Hkv, G, T, Dv, cdt = blocks.B, blocks.Hkv, blocks.G, blocks.T, blocks.Dv, blocks.cdt
        out = q.new_empty(B, Hkv, G, T, Dv)
        lse = torch.empty(B, Hkv, G, T, 1, dtype=cdt, device=q.device)  # log-sum-exp per row
        for ti, (t0, t1) in enumerate(blocks.t_ranges()):
            tq = t1 - t0
            q_blk = blocks.query(t0, t1)
            row_max = torch.full((B, Hkv, G, tq, 1), _NEG_INF, dtype=cdt, device=q.device)
            row_sum = torch.zeros(B, Hkv, G, tq, 1, dtype=cdt, device=q.device)
            acc = torch.zeros(B, Hkv, G, tq, Dv, dtype=cdt, device=q.device)
            for si, (s0, s1) in enumerate(blocks.s_ranges()):
                s = blocks.scores(q_blk, t0, t1, s0, s1)
                if s is None:
                    continue
                new_max = torch.maximum(row_max, s.amax(dim=-1, keepdim=True))
                safe_max = new_max.masked_fill(new_max == _NEG_INF, 0.0)
                p = s.sub_(safe_max).exp_()  # (B, Hkv, G, tq, tk); masked entries are 0
                correction = (row_max - safe_max).exp_()
                row_sum = row_sum * correction + p.sum(dim=-1, keepdim=True)
                if dropout_p > 0:
                    p = p * blocks.keep(ti, si, p.shape, q.device) / (1.0 - dropout_p)
                v_blk = v[:, :, s0:s1].to(cdt)  # (B, Hkv, tk, Dv)
                pv = p.view(B, Hkv, G * tq, s1 - s0) @ v_blk  # (B, Hkv, G*tq, Dv)
                acc = acc * correction + pv.view(B, Hkv, G, tq, Dv)
                row_max = new_max
            empty = row_sum == 0  # rows with nothing to attend to
            out[:, :, :, t0:t1] = (acc / row_sum.masked_fill(empty, 1.0)).to(out.dtype)
            safe_max = row_max.masked_fill(row_max == _NEG_INF, 0.0)
            # +inf for empty rows makes exp(s - lse) exactly 0 in the backward pass.
            lse[:, :, :, t0:t1] = torch.where(empty, math.inf, safe_max + row_sum.log())
        out = out.flatten(1, 2)  # (B, H, T, Dv)
        ctx.save_for_backward(q, k, v, bias, mask, out, lse)
        ctx.options = (causal, scale, dropout_p, seed)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, mask, out, lse = ctx.saved_tensors
        causal, scale, dropout_p, seed = ctx.options
        blocks = _Blocks(q, k, v, mask, bias, causal, scale, dropout_p, seed)
        B, Hkv, G, Dh, Dv, cdt = blocks.B, blocks.Hkv, blocks.G, blocks.Dh, blocks.Dv, blocks.cdt
        need_q, need_k, need_v, need_bias = ctx.needs_input_grad[:4]
        d_out5 = grad_out.unflatten(1, (Hkv, G)).to(cdt)  # (B, Hkv, G, T, Dv)
        # D_i = sum_j P_ij dP_ij = dO_i . O_i (holds with dropout too)
        delta = (d_out5 * out.unflatten(1, (Hkv, G)).to(cdt)).sum(dim=-1, keepdim=True)
        dq = torch.zeros(B, Hkv, G, blocks.T, Dh, dtype=cdt, device=q.device)
        dk = torch.zeros(B, Hkv, blocks.S, Dh, dtype=cdt, device=q.device)
        dv = torch.zeros(B, Hkv, blocks.S, Dv, dtype=cdt, device=q.device)
        dbias5 = None
        if need_bias:
            dbias5 = torch.zeros(blocks.bias5.shape, dtype=cdt, device=q.device)
        for ti, (t0, t1) in enumerate(blocks.t_ranges()):
            tq = t1 - t0
            q_blk = blocks.query(t0, t1)  # (B, Hkv, G*tq, Dh)
            do_blk = d_out5[:, :, :, t0:t1].reshape(B, Hkv, G * tq, Dv)
            lse_blk = lse[:, :, :, t0:t1]  # (B, Hkv, G, tq, 1)
            delta_blk = delta[:, :, :, t0:t1]
            dq_blk = torch.zeros(B, Hkv, G * tq, Dh, dtype=cdt, device=q.device)
            for si, (s0, s1) in enumerate(blocks.s_ranges()):
                s = blocks.scores(q_blk, t0, t1, s0, s1)
                if s is None:
                    continue
                tk = s1 - s0
                p = s.sub_(lse_blk).exp_()  # (B, Hkv, G, tq, tk): the softmax weights
                v_blk = v[:, :, s0:s1].to(cdt)
                dp = (do_blk @ v_blk.transpose(-2, -1)).view(B, Hkv, G, tq, tk)
                if dropout_p > 0:
                    keep = blocks.keep(ti, si, p.shape, q.device) / (1.0 - dropout_p)
                    p_used, dp = p * keep, dp * keep
                else:
                    p_used = p
                if need_v:  # dV = P^T dO, summed over the G query heads of each K/V head
                    dv[:, :, s0:s1] += p_used.view(B, Hkv, G * tq, tk).transpose(-2, -1) @ do_blk
                ds = p * (dp - delta_blk)  # (B, Hkv, G, tq, tk): gradient of the scores
                ds_flat = ds.view(B, Hkv, G * tq, tk)
                if need_q:
                    dq_blk += ds_flat @ blocks.k[:, :, s0:s1].to(cdt)
                if need_k:
                    dk[:, :, s0:s1] += ds_flat.transpose(-2, -1) @ q_blk
                if need_bias:
                    _accumulate_block(dbias5, ds, t0, t1, s0, s1)
            dq[:, :, :, t0:t1] = dq_blk.view(B, Hkv, G, tq, Dh)
        dq = (dq * scale).flatten(1, 2).to(q.dtype) if need_q else None
        dk = (dk * scale).to(k.dtype) if need_k else None
        dv = dv.to(v.dtype) if need_v else None
        dbias = dbias5.reshape(bias.shape).to(bias.dtype) if need_bias else None
        return dq, dk, dv, dbias, None, None, None, None, None


def _accumulate_block(target5: Tensor, grad: Tensor, t0: int, t1: int, s0: int, s1: int):
    """Add a (B, Hkv, G, tq, tk) gradient block into a broadcast 5-D bias gradient."""
    dims = [i for i in range(5) if target5.shape[i] == 1 and grad.shape[i] != 1]
    if dims:
        grad = grad.sum(dim=dims, keepdim=True)
    _block(target5, t0, t1, s0, s1).add_(grad)


def _head_block(x: Tensor | None, h: int, t0: int, t1: int) -> Tensor | None:
    """Query head h, rows t0:t1 of a mask or bias broadcastable to (B, H, T, S)."""
    if x is None:
        return None
    while x.dim() < 4:
        x = x.unsqueeze(0)
    x = x[:, h] if x.shape[1] > 1 else x[:, 0]  # (b, t, s)
    return x[:, t0:t1] if x.shape[1] > 1 else x


def _chunked_weights(query, key, value, mask, bias, causal, scale, dropout_p, return_weights):
    """Exact attention with its weights, one (head, block of query rows) at a time.

    Each step holds a (B, block_t, S) slice of scores, small enough to stay in cache; for
    return_weights="mean" the slices are summed over heads as they go, so (B, H, T, S)
    never exists. Differentiable with plain autograd (the weights too, e.g. for
    guided-alignment losses).
    """
    B, H, T, _ = query.shape
    Hkv, S, Dv = key.shape[1], key.shape[2], value.shape[3]
    G = H // Hkv
    cdt = _compute_dtype(query.dtype)
    may_be_empty = _may_have_empty_rows(mask, bias, causal, T, S)
    block_t = max(1, min(T, (_BLOCK_ELEMENTS // 2) // max(1, B * S)))
    t_ranges = [(t0, min(t0 + block_t, T)) for t0 in range(0, T, block_t)]
    mean = return_weights == "mean"
    differentiable = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (query, key, value, bias)
    )
    if differentiable:  # collect the pieces, join them with autograd-friendly cat
        out_rows: list[list[Tensor]] = [[] for _ in range(H)]
        w_rows: list[list[Tensor]] = [[] for _ in range(H)]
    else:  # write into preallocated results
        out = torch.empty(B, H, T, Dv, dtype=cdt, device=query.device)
        w_all = torch.zeros((B, T, S) if mean else (B, H, T, S), dtype=cdt, device=query.device)
    for h in range(H):
        k_t = key[:, h // G].to(cdt).transpose(-2, -1)  # (B, Dh, S): head h reads h // G
        v = value[:, h // G].to(cdt)  # (B, S, Dv)
        for t0, t1 in t_ranges:
            q_blk = query[:, h, t0:t1].to(cdt) * scale  # (B, tq, Dh)
            s = q_blk @ k_t  # (B, tq, S)
            b = _head_block(bias, h, t0, t1)
            if b is not None:
                s = s + b.to(cdt)
            allowed = _head_block(mask, h, t0, t1)
            if causal:
                tri = _causal_rows(t0, t1, 0, S, T, S, query.device)  # (tq, S)
                allowed = tri if allowed is None else allowed & tri
            if allowed is not None:
                s = s.masked_fill(~allowed, _NEG_INF)
            w = _masked_softmax(s, may_be_empty)  # (B, tq, S)
            o = (F.dropout(w, p=dropout_p) if dropout_p > 0 else w) @ v  # (B, tq, Dv)
            if differentiable:
                out_rows[h].append(o)
                w_rows[h].append(w)
            else:
                out[:, h, t0:t1] = o
                if mean:
                    w_all[:, t0:t1] += w
                else:
                    w_all[:, h, t0:t1] = w
    if differentiable:
        out = torch.stack([torch.cat(rows, dim=1) for rows in out_rows], dim=1)
        per_head = [torch.cat(rows, dim=1) for rows in w_rows]  # H x (B, T, S)
        w_all = sum(per_head[1:], per_head[0]) if mean else torch.stack(per_head, dim=1)
    if mean:
        w_all = w_all / H  # (B, T, S)
    return out.to(query.dtype), w_all.to(query.dtype)


def _chunked_attention(query, key, value, mask, bias, causal, scale, dropout_p, return_weights):
    if return_weights is not False:
        return _chunked_weights(
            query, key, value, mask, bias, causal, scale, dropout_p, return_weights
        )
    seed = int(torch.randint(0, 1 << 62, (1,)).item()) if dropout_p > 0 else 0
    return _ChunkedAttention.apply(query, key, value, bias, mask, causal, scale, dropout_p, seed)


_BACKEND_FUNCS = {
    "math": _math_attention,
    "sdpa": _sdpa_attention,
    "chunked": _chunked_attention,
    "flash": _flash_attention,
}


# --------------------------------------------------------------------------------------
# Backend choice, in words.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendChoice:
    """Which backend a call runs on, and why each other backend was or was not taken.

    `refused` maps a backend name to the reason it cannot run this call; backends that could
    run it but were not picked are absent from it.
    """

    requested: str
    backend: str
    refused: dict[str, str] = field(default_factory=dict)
    why: str = ""  # why the picked backend comes first, in words

    def __str__(self) -> str:
        head = (
            f"auto picks {self.backend!r}"
            if self.requested == "auto"
            else f"backend {self.requested!r} was requested"
        )
        lines = [head + (f" ({self.why})." if self.why else ".")]
        for name in _PREFERENCE:
            if name == self.backend:
                continue
            if name in self.refused:
                lines.append(f"  {name}: refused: {self.refused[name]}")
            else:
                lines.append(f"  {name}: could run this call, but {self.backend!r} comes first")
        return "\n".join(lines)


def _refusal(name: str, call: _Call) -> str | None:
    """Why backend `name` cannot run `call`, or None if it can."""
    if name == "flash":  # the import last: a CPU call (or a compiled one) never tries it
        if call.device.type != "cuda":
            return f"tensors are on {call.device.type}; flash-attn needs CUDA"
        if _flash_attn_func() is None:
            return "flash-attn is not installed"
        if call.dtype not in (torch.float16, torch.bfloat16):
            return f"dtype is {call.dtype}; flash-attn needs float16 or bfloat16"
        if call.has_mask:
            return "flash-attn takes no boolean mask (only causal)"
        if call.has_bias:
            return "flash-attn takes no additive bias"
        if call.return_weights is not False:
            return "flash-attn does not return attention weights"
        if call.Dh != call.Dv or call.Dh > 256 or call.Dh % 8 != 0:
            return (
                f"head widths Dh={call.Dh}, Dv={call.Dv}; flash-attn needs Dh == Dv, a "
                "multiple of 8 and at most 256"
            )
        return None
    if name == "sdpa":
        if call.return_weights is not False:
            return "torch SDPA does not return attention weights"
        if call.S == 0 or call.T == 0:
            return "torch SDPA does not take an empty sequence"
        return None
    return None  # "chunked" and "math" run every call


def _auto_order(call: _Call) -> tuple[tuple[str, ...], str]:
    """The backends auto tries, in order, and why that order."""
    if call.return_weights is False:
        return _PREFERENCE, "the fastest backend that runs this call"
    if call.B * call.H * call.T * call.S <= _BLOCK_ELEMENTS:
        # One block anyway: the plain reference has the fewest steps.
        why = "weights requested and the (B, H, T, S) matrix fits in one block"
        return ("math", "chunked"), why
    # Blockwise weights beat the reference on speed and memory.
    return ("chunked", "math"), "weights requested; blockwise weights are faster and lighter"


def _pick(call: _Call, backend: str) -> str:
    """The backend that runs `call` (what _choose says, without building the explanation)."""
    if backend != "auto":
        reason = _refusal(backend, call)
        if reason is not None:
            raise ValueError(f"backend {backend!r} cannot run this call: {reason}")
        return backend
    order, _ = _auto_order(call)
    return next(name for name in order if _refusal(name, call) is None)


def _choose(call: _Call, backend: str) -> BackendChoice:
    refused = {name: r for name in _PREFERENCE if (r := _refusal(name, call)) is not None}
    if backend == "auto":
        order, why = _auto_order(call)
        picked = next(name for name in order if name not in refused)
        return BackendChoice("auto", picked, refused, why)
    if backend in refused:
        raise ValueError(f"backend {backend!r} cannot run this call: {refused[backend]}")
    return BackendChoice(backend, backend, refused)


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: ReturnWeights = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Scaled dot-product attention of target queries over source keys and values.

    Args:
        query: (B, H, T, Dh) queries.
        key: (B, Hkv, S, Dh) keys, H % Hkv == 0 (grouped or multi-query heads).
        value: (B, Hkv, S, Dv) values.
        mask: bool, broadcastable to (B, H, T, S); True = may attend.
        bias: float, broadcastable to (B, H, T, S), added to the scores (-inf masks).
        causal: bottom-right causal mask: query i sees key j when j <= i + S - T.
        scale: multiplies Q K^T; default 1 / sqrt(Dh).
        dropout_p: dropout on the attention weights (pass 0 at evaluation).
        return_weights: False; True for (B, H, T, S) weights; "mean" for head-averaged
            (B, T, S) weights computed without holding (B, H, T, S) at once. Weights are
            the softmax probabilities (before dropout).
        backend: "auto" | "math" | "sdpa" | "chunked" | "flash" (see explain_backend).

    Returns:
        out (B, H, T, Dv), or (out, weights) when return_weights is not False.
        Query rows with no key to attend to are exact zeros with zero weights.
    """
    call = _validate(
        query, key, value, mask, bias, causal, scale, dropout_p, return_weights, backend
    )
    name = _pick(call, backend)
    if call.S == 0 or call.T == 0:
        return _empty_result(call, query)
    if causal and call.T == 1:
        causal = False  # bottom-right: a single query (a decoding step) sees every key
    return _BACKEND_FUNCS[name](
        query, key, value, mask, bias, causal, call.scale, call.dropout_p, return_weights
    )


def _empty_result(call: _Call, query: Tensor):
    """T == 0 or S == 0: nothing to attend to, so zeros of the right shapes."""
    out = query.new_zeros(call.B, call.H, call.T, call.Dv)
    if call.return_weights is False:
        return out
    if call.return_weights == "mean":
        return out, query.new_zeros(call.B, call.T, call.S)
    return out, query.new_zeros(call.B, call.H, call.T, call.S)


def explain_backend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: ReturnWeights = False,
    backend: str = "auto",
) -> BackendChoice:
    """Which backend `attention` would run with these arguments, and why not the others.

    `str()` of the result says it in words, e.g.::

        auto picks 'sdpa'.
          flash: refused: tensors are on cpu; flash-attn needs CUDA
          chunked: could run this call, but 'sdpa' comes first
          math: could run this call, but 'sdpa' comes first

    Raises the same ValueError as `attention` for bad arguments, and for a requested
    backend that cannot run the call.
    """
    call = _validate(
        query, key, value, mask, bias, causal, scale, dropout_p, return_weights, backend
    )
    return _choose(call, backend)
