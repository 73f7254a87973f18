"""Attention modules: parameters (projections) around the pure functions of functional.py.

Shape letters: B batch, T target length, S source length, D = dim (model width),
Dc = context_dim, H query heads, Hkv key/value heads, Dh head width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils import format_shape
from .cache import CrossAttentionMemory, KVCache
from .functional import ReturnWeights, _math_attention, attention

__all__ = ["CrossAttention", "SelfAttention"]


def _head_sizes(dim, num_heads, head_dim, num_kv_heads) -> tuple[int, int, int]:
    """Validated (H, Hkv, Dh) for a module of width `dim`."""
    for name, value in (("dim", dim), ("num_heads", num_heads)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r}; expected a positive int")
    if head_dim is None:
        if dim % num_heads != 0:
            raise ValueError(
                f"dim={dim} is not divisible by num_heads={num_heads}; pass head_dim= "
                f"to choose the head width yourself"
            )
        head_dim = dim // num_heads
    elif not isinstance(head_dim, int) or head_dim <= 0:
        raise ValueError(f"head_dim={head_dim!r}; expected a positive int")
    num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if not isinstance(num_kv_heads, int) or num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise ValueError(
            f"num_kv_heads={num_kv_heads!r}; expected a positive divisor of num_heads={num_heads}"
        )
    return num_heads, num_kv_heads, head_dim


def _step_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, gqa: bool) -> Tensor:
    """Attention for one decoding step (every query row has a key to attend to): torch's
    fused SDPA kernel, the one transformers' models call; in a step that torch.compile
    traces for a CPU, the formula itself (the math backend), which inductor fuses into
    loops of its own and runs faster than the fused kernel at decoding's few queries
    (benchmarks/bench_generation.py)."""
    if torch.compiler.is_compiling() and q.device.type == "cpu":
        return _math_attention(q, k, v, mask, None, False, q.shape[-1] ** -0.5, 0.0, False)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def _check_dropout(dropout) -> float:
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, (int, float))
        or not (0.0 <= dropout < 1.0)
    ):
        raise ValueError(f"dropout={dropout!r}; expected 0 <= dropout < 1")
    return float(dropout)


def _check_input(name: str, x, width: int, width_name: str, symbol: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != width:
        raise ValueError(
            f"{name} has shape {format_shape(x.shape)}; expected {symbol} with {width_name}={width}"
        )


def _check_padding_mask(name: str, mask, B: int, S: int, letter: str = "S") -> None:
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name} must be a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(
            f"{name} has dtype {mask.dtype}; expected torch.bool with True = real token "
            f"(the opposite of nn.MultiheadAttention's key_padding_mask)"
        )
    if tuple(mask.shape) != (B, S):
        raise ValueError(
            f"{name} has shape {format_shape(mask.shape)}; expected (B, {letter}) = ({B}, {S})"
        )


class _MultiHeadProjections(nn.Module):
    """The four projections of multi-head attention: queries from x (width `dim`), keys and
    values from a sequence of width `kv_input_dim`, and the output projection."""

    def __init__(self, dim, num_heads, kv_input_dim, head_dim, num_kv_heads, bias, dropout):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = _head_sizes(
            dim, num_heads, head_dim, num_kv_heads
        )
        if not isinstance(kv_input_dim, int) or kv_input_dim <= 0:
            raise ValueError(f"context_dim={kv_input_dim!r}; expected a positive int")
        self.dim = dim
        self.dropout = _check_dropout(dropout)
        inner, kv_inner = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(dim, inner, bias=bias)
        self.k_proj = nn.Linear(kv_input_dim, kv_inner, bias=bias)
        self.v_proj = nn.Linear(kv_input_dim, kv_inner, bias=bias)
        self.out_proj = nn.Linear(inner, dim, bias=bias)

    def _heads(self, proj: nn.Linear, x: Tensor, num_heads: int) -> Tensor:
        """(B, L, width) -> (B, num_heads, L, Dh)."""
        B, L, _ = x.shape
        return proj(x).view(B, L, num_heads, self.head_dim).transpose(1, 2)

    def _fused(self, projections: tuple[nn.Linear, ...]) -> tuple[Tensor, Tensor | None]:
        """Several projections of one input as one (weight, bias)."""
        weight = torch.cat([p.weight for p in projections])
        bias = None if projections[0].bias is None else torch.cat([p.bias for p in projections])
        return weight, bias

    def _split_heads(
        self, projections: tuple[nn.Linear, ...], x: Tensor, heads: tuple[int, ...]
    ) -> tuple[Tensor, ...]:
        """Projections of x (B, L, width) -> one (B, heads[i], L, Dh) each. While training
        they run as one matrix product (its backward is one product for x's gradient, not
        one per projection plus their sum); an int8 copy (model.quantize) runs its int8
        layer of the same projections stacked (qkv_int8, kv_int8); in float inference,
        where concatenating the weights would cost more than it saves on short inputs, one
        product each."""
        int8 = getattr(self, self._stacked_int8, None)
        if not self.training and int8 is None:
            return tuple(self._heads(p, x, h) for p, h in zip(projections, heads, strict=True))
        B, L, _ = x.shape
        y = int8(x) if int8 is not None else F.linear(x, *self._fused(projections))
        parts = y.view(B, L, sum(heads), self.head_dim).split(heads, 2)
        # split before the transposes: the backward joins the gradients in y's layout
        return tuple(part.transpose(1, 2) for part in parts)

    def _attend(self, q, k, v, mask, causal, return_weights, backend):
        """attention() with the module's dropout; returns (out (B, H, T, Dh), weights|None)."""
        result = attention(
            q,
            k,
            v,
            mask=mask,
            causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            return_weights=return_weights,
            backend=backend,
        )
        return result if return_weights is not False else (result, None)

    def _merge(self, out: Tensor) -> Tensor:
        """(B, H, T, Dh) -> output projection -> (B, T, D)."""
        B, H, T, Dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, T, H * Dh))


class CrossAttention(_MultiHeadProjections):
    """Multi-head attention of a target sequence x over a context sequence of its own width.

    Args:
        dim: width D of x and of the output.
        num_heads: query heads H.
        context_dim: width Dc of the context (default: dim).
        head_dim: width Dh of each head (default: dim // num_heads).
        num_kv_heads: key/value heads Hkv (default: num_heads; 1 = multi-query).
        bias: whether the projections have biases.
        dropout: dropout on the attention weights while training.

    Inputs: x (B, T, D); context (B, S, Dc); context_mask (B, S) bool, True = real token.
    Outputs: y (B, T, D), or (y, weights) with weights (B, H, T, S) for return_weights=True
    or (B, T, S) for return_weights="mean".
    """

    _stacked_int8 = "kv_int8"  # an int8 copy's layer of k and v stacked (model.quantize)

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        context_dim: int | None = None,
        head_dim: int | None = None,
        num_kv_heads: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        context_dim = dim if context_dim is None else context_dim
        super().__init__(dim, num_heads, context_dim, head_dim, num_kv_heads, bias, dropout)
        self.context_dim = context_dim

    def project_memory(
        self, context: Tensor, context_mask: Tensor | None = None
    ) -> CrossAttentionMemory:
        """Project the context once: keys and values (B, Hkv, S, Dh) and the mask (B, S)."""
        _check_input("context", context, self.context_dim, "context_dim", "(B, S, context_dim)")
        B, S, _ = context.shape
        if context_mask is not None:
            _check_padding_mask("context_mask", context_mask, B, S)
            if context_mask.device != context.device:
                raise ValueError(
                    f"context_mask is on {context_mask.device} but context is on {context.device}"
                )
        if context_mask is not None and bool(context_mask.all()):
            context_mask = None  # nothing is padding: attend without a mask (faster kernels)
        Hkv = self.num_kv_heads
        key, value = self._split_heads((self.k_proj, self.v_proj), context, (Hkv, Hkv))
        return CrossAttentionMemory(key, value, context_mask)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        context_mask: Tensor | None = None,
        memory: CrossAttentionMemory | None = None,
        return_weights: ReturnWeights = False,
        backend: str = "auto",
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, T, D) attends to context (B, S, Dc), or to a projected `memory`.

        x's batch may be a multiple k of the memory's: rows b*k .. b*k + k - 1 of x then
        share source b (beams of one source), without copying its keys and values.
        """
        _check_input("x", x, self.dim, "dim", "(B, T, dim)")
        if memory is None:
            if context is None:
                raise ValueError("pass context= (B, S, context_dim) or memory= (a projection)")
            memory = self.project_memory(context, context_mask)
        elif context is not None or context_mask is not None:
            raise ValueError(
                "pass either context (and context_mask) or memory, not both: memory already "
                "holds the projected context and its mask"
            )
        elif not isinstance(memory, CrossAttentionMemory):
            raise ValueError(f"memory must come from project_memory(), got {type(memory).__name__}")
        B, T, _ = x.shape
        Bm, S = memory.batch_size, memory.source_length
        if Bm == 0 or B % Bm != 0:
            raise ValueError(
                f"x has batch B={B} but memory has batch {Bm}; x's batch must equal the "
                f"memory's or be a multiple of it (beams of each source)"
            )
        k, H, Dh = B // Bm, self.num_heads, self.head_dim  # k queries rows per source
        q = self._heads(self.q_proj, x, H)  # (B, H, T, Dh)
        if k > 1:  # fold the k rows of each source into its query length: no K/V copies
            q = q.view(Bm, k, H, T, Dh).transpose(1, 2).reshape(Bm, H, k * T, Dh)
        mask = None if memory.mask is None else memory.mask[:, None, None, :]  # (Bm,1,1,S)
        out, weights = self._attend(
            q, memory.key, memory.value, mask, False, return_weights, backend
        )  # (Bm, H, k*T, Dh)
        if k > 1:  # unfold: (Bm, H, k*T, Dh) -> (B, H, T, Dh)
            out = out.view(Bm, H, k, T, Dh).transpose(1, 2).reshape(B, H, T, Dh)
            if weights is not None and return_weights == "mean":
                weights = weights.reshape(B, T, S)  # (Bm, k*T, S) -> (B, T, S)
            elif weights is not None:
                weights = weights.view(Bm, H, k, T, S).transpose(1, 2).reshape(B, H, T, S)
        y = self._merge(out)  # (B, T, D)
        return y if weights is None else (y, weights)

    def attend_one(self, x: Tensor, memory: CrossAttentionMemory, q_proj, out_proj) -> Tensor:
        """forward's arithmetic for one decoding step, without its checks (generate checked
        the inputs once, and every source has a real position): x (N, D), one query per row,
        over the projected memory, the N // Bm rows of each source folded into its query
        length; q_proj and out_proj compute the module's projections (model.packing.
        StepLinears). Returns y (N, D)."""
        N, Bm, H, Dh = x.shape[0], memory.batch_size, self.num_heads, self.head_dim
        q = q_proj(x).view(Bm, N // Bm, H, Dh).transpose(1, 2)  # (Bm, H, N // Bm, Dh)
        mask = None if memory.mask is None else memory.mask[:, None, None, :]
        out = _step_attention(q, memory.key, memory.value, mask, H != self.num_kv_heads)
        return out_proj(out.transpose(1, 2).reshape(N, H * Dh))


class SelfAttention(_MultiHeadProjections):
    """Multi-head self-attention, optionally causal, with an optional preallocated KV cache.

    Args: as CrossAttention, plus causal (bottom-right aligned, so cached decoding works).

    forward(x, *, mask=None, cache=None, return_weights=False):
        x (B, T, D): the new positions.
        mask (B, S) bool, True = real token, over all keys: S = cache.length + T.
        cache: a KVCache (see new_cache) holding the earlier positions, or None.
    Returns y (B, T, D); (y, weights) with return_weights; and, when a cache is passed,
    the updated cache as the last element: (y, cache) or (y, weights, cache).
    """

    _stacked_int8 = "qkv_int8"  # an int8 copy's layer of q, k and v stacked

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        causal: bool = False,
        head_dim: int | None = None,
        num_kv_heads: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, dim, head_dim, num_kv_heads, bias, dropout)
        if not isinstance(causal, bool):
            raise ValueError(f"causal={causal!r}; expected True or False")
        self.causal = causal

    def fused_projection(self) -> tuple[Tensor, Tensor | None]:
        """The q, k and v projections as one (weight, bias) of width (H + 2 Hkv) * Dh, for
        decoding steps that project all three with one matrix product."""
        return self._fused((self.q_proj, self.k_proj, self.v_proj))

    def decode_one(
        self, x: Tensor, cache: KVCache, qkv, out, position: Tensor | None = None
    ) -> tuple[Tensor, KVCache]:
        """One decoding step without checks (generate checked its inputs once): x (N, D),
        one position per row, attends to itself and the cache's positions; its key and value
        are written into the cache in place. qkv and out compute the fused q/k/v projection
        and the output projection (model.packing.StepLinears). Returns (y (N, D), the
        longer cache). With position (1,) (compiled steps), the key and value go there and
        the whole cache is attended under the mask of its filled positions; the cache
        returned is the one given (its length is the caller's to advance)."""
        N, H, Hkv, Dh = x.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = qkv(x).view(N, H + 2 * Hkv, 1, Dh).split((H, Hkv, Hkv), 1)
        mask = None
        if position is None:
            cache, keys, values = cache.write(k, v)  # (N, Hkv, length + 1, Dh)
        else:
            keys, values = cache.write_at(k, v, position)  # (N, Hkv, max_length, Dh)
            mask = cache.filled(position)
        attended = _step_attention(q, keys, values, mask, H != Hkv)  # (N, H, 1, Dh)
        return out(attended.reshape(N, H * Dh)), cache

    def new_cache(
        self,
        batch_size: int,
        max_length: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """An empty KVCache for `batch_size` rows of up to `max_length` positions (dtype
        and device default to the module's; float32 on the CPU for an int8 copy)."""
        weight = next(self.parameters(), None)
        return KVCache.empty(
            batch_size,
            self.num_kv_heads,
            max_length,
            self.head_dim,
            dtype=dtype or (torch.float32 if weight is None else weight.dtype),
            device=device or ("cpu" if weight is None else weight.device),
        )

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        return_weights: ReturnWeights = False,
        backend: str = "auto",
    ):
        _check_input("x", x, self.dim, "dim", "(B, T, dim)")
        B = x.shape[0]
        H, Hkv = self.num_heads, self.num_kv_heads
        projections = (self.q_proj, self.k_proj, self.v_proj)
        q, k, v = self._split_heads(projections, x, (H, Hkv, Hkv))  # (B, H|Hkv, T, Dh)
        if cache is not None:
            if not isinstance(cache, KVCache):
                raise ValueError(f"cache must be a KVCache, got {type(cache).__name__}")
            if cache.key.shape[0] != B:
                raise ValueError(
                    f"x has batch B={B} but the cache was made for {cache.key.shape[0]} rows"
                )
            cache, k, v = cache.append(k, v)  # (B, Hkv, S, Dh) with S = length + T
        S = k.shape[2]
        attn_mask = None
        if mask is not None:
            _check_padding_mask("mask", mask, B, S)
            attn_mask = mask[:, None, None, :]  # (B, 1, 1, S)
        out, weights = self._attend(
            q, k, v, attn_mask, self.causal, return_weights, backend
        )  # (B, H, T, Dh)
        y = self._merge(out)  # (B, T, D)
        outputs = (y,) if weights is None else (y, weights)
        if cache is not None:
            outputs = (*outputs, cache)
        return outputs[0] if len(outputs) == 1 else outputs
