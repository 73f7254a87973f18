"""Every bad input gets a ValueError naming the tensor, the expected shape and the actual one."""

import pytest
import torch

from xattn import (
    CrossAttention,
    CrossAttentionMemory,
    KVCache,
    SelfAttention,
    attention,
    explain_backend,
)

Q = torch.randn(2, 4, 5, 8)  # (B, H, T, Dh)
K = torch.randn(2, 2, 7, 8)  # (B, Hkv, S, Dh)
V = torch.randn(2, 2, 7, 6)  # (B, Hkv, S, Dv)


def raised(fn, *args, **kwargs) -> str:
    """The message of the ValueError that fn(*args, **kwargs) raises (fails if none)."""
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    return str(info.value)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"query": Q[0]}, "query has shape (4, 5, 8); expected (B, H, T, Dh)"),
        ({"query": Q.tolist()}, "query must be a torch.Tensor (B, H, T, Dh), got list"),
        ({"key": K[0]}, "key has shape (2, 7, 8); expected (B, Hkv, S, Dh)"),
        ({"value": V[..., 0]}, "value has shape (2, 2, 7); expected (B, Hkv, S, Dv)"),
        (
            {"key": K[:1]},
            "key has shape (1, 2, 7, 8); expected (B, Hkv, S, Dh) with B=2, Dh=8 "
            "(from query (2, 4, 5, 8))",
        ),
        (
            {"key": K[..., :4]},
            "key has shape (2, 2, 7, 4); expected (B, Hkv, S, Dh) with B=2, Dh=8",
        ),
        (
            {"value": V[:, :, :3]},
            "value has shape (2, 2, 3, 6); expected (B, Hkv, S, Dv) with "
            "B=2, Hkv=2, S=7 (from key (2, 2, 7, 8))",
        ),
        (
            {"key": torch.randn(2, 3, 7, 8), "value": torch.randn(2, 3, 7, 6)},
            "query has H=4 heads and key has Hkv=3; H must be a positive multiple of Hkv",
        ),
        ({"query": Q.long()}, "query has dtype torch.int64; expected a floating dtype"),
        ({"key": K.double()}, "key has dtype torch.float64 but query has torch.float32"),
        ({"value": V.to("meta")}, "value is on meta but query is on cpu"),
        (
            {"mask": torch.ones(2, 7)},
            "mask has dtype torch.float32; expected torch.bool "
            "(True = may attend). Pass an additive float mask as bias=",
        ),
        (
            {"mask": torch.ones(2, 7, dtype=torch.bool)},
            "mask has shape (2, 7); expected a shape broadcastable to (B, H, T, S) = (2, 4, 5, 7)",
        ),
        (
            {"mask": torch.ones(1, 1, 2, 4, 5, 7, dtype=torch.bool)},
            "mask has shape (1, 1, 2, 4, 5, 7); expected a shape",
        ),
        ({"mask": [[True]]}, "mask must be a bool torch.Tensor, got list"),
        ({"mask": torch.ones(7, dtype=torch.bool, device="meta")}, "mask is on meta"),
        (
            {"bias": torch.ones(7, dtype=torch.bool)},
            "bias has dtype torch.bool; expected a floating dtype (an additive bias)",
        ),
        (
            {"bias": torch.zeros(3, 1, 1, 7)},
            "bias has shape (3, 1, 1, 7); expected a shape "
            "broadcastable to (B, H, T, S) = (2, 4, 5, 7)",
        ),
        ({"bias": 0.5}, "bias must be a float torch.Tensor, got float"),
        ({"bias": torch.zeros(7, device="meta")}, "bias is on meta"),
        ({"causal": 1}, "causal must be True or False, got 1"),
        ({"scale": float("inf")}, "scale must be a finite number or None, got inf"),
        ({"scale": "big"}, "scale must be a finite number or None, got 'big'"),
        ({"dropout_p": 1.0}, "dropout_p=1.0; expected a number with 0 <= dropout_p < 1"),
        ({"dropout_p": -0.1}, "dropout_p=-0.1; expected"),
        ({"return_weights": "all"}, "return_weights='all'; expected False, True or 'mean'"),
        ({"return_weights": 1.0}, "return_weights=1.0; expected False, True or 'mean'"),
        (
            {"backend": "fast"},
            "backend='fast'; expected one of 'auto', 'flash', 'sdpa', 'chunked', 'math'",
        ),
        (
            {"backend": "sdpa", "return_weights": True},
            "backend 'sdpa' cannot run this call: torch SDPA does not return attention weights",
        ),
    ],
)
def test_attention_errors(kwargs, message):
    args = {"query": Q, "key": K, "value": V, **kwargs}
    q, k, v = args.pop("query"), args.pop("key"), args.pop("value")
    assert message in raised(attention, q, k, v, **args)
    assert message in raised(explain_backend, q, k, v, **args)


def test_flash_requested_on_the_cpu():
    with pytest.raises(
        ValueError, match="backend 'flash' cannot run this call: tensors are on cpu; flash-attn"
    ):
        attention(Q, K, V, backend="flash")


def test_cross_attention_errors():
    attn = CrossAttention(64, 4, context_dim=64)
    x = torch.randn(2, 3, 64)
    context = torch.randn(2, 7, 64)
    memory = attn.project_memory(context)
    cases = [
        (
            (x, torch.randn(2, 7, 48)),
            {},
            "context has shape (2, 7, 48); expected (B, S, context_dim) with context_dim=64",
        ),
        (
            (torch.randn(2, 3, 32), context),
            {},
            "x has shape (2, 3, 32); expected (B, T, dim) with dim=64",
        ),
        (([1.0], context), {}, "x must be a torch.Tensor, got list"),
        ((x,), {}, "pass context= (B, S, context_dim) or memory= (a projection)"),
        (
            (x, context),
            {"context_mask": torch.ones(2, 7, dtype=torch.long)},
            "context_mask has dtype torch.int64; expected torch.bool with True = real token",
        ),
        (
            (x, context),
            {"context_mask": torch.ones(2, 6, dtype=torch.bool)},
            "context_mask has shape (2, 6); expected (B, S) = (2, 7)",
        ),
        (
            (x, context),
            {"context_mask": torch.ones(2, 7, dtype=torch.bool, device="meta")},
            "context_mask is on meta but context is on cpu",
        ),
        (
            (x, context),
            {"memory": memory},
            "pass either context (and context_mask) or memory, not both",
        ),
        (
            (torch.randn(3, 1, 64),),
            {"memory": memory},
            "x has batch B=3 but memory has batch 2; x's batch must equal the memory's or be a "
            "multiple of it",
        ),
    ]
    for args, kwargs, message in cases:
        assert message in raised(attn, *args, **kwargs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"dim": 30, "num_heads": 4}, "dim=30 is not divisible by num_heads=4; pass head_dim="),
        ({"dim": 0, "num_heads": 4}, "dim=0; expected a positive int"),
        (
            {"dim": 32, "num_heads": 4, "num_kv_heads": 3},
            "num_kv_heads=3; expected a positive divisor of num_heads=4",
        ),
        ({"dim": 32, "num_heads": 4, "head_dim": -1}, "head_dim=-1; expected a positive int"),
        ({"dim": 32, "num_heads": 4, "dropout": 1.5}, "dropout=1.5; expected 0 <= dropout < 1"),
        ({"dim": 32, "num_heads": 4, "context_dim": 0}, "context_dim=0; expected a positive int"),
    ],
)
def test_module_constructor_errors(kwargs, message):
    assert message in raised(CrossAttention, **kwargs)


def test_self_attention_errors():
    assert "causal='yes'; expected True or False" in raised(SelfAttention, 8, 2, causal="yes")
    attn = SelfAttention(8, 2, causal=True)
    x = torch.randn(2, 3, 8)
    assert "mask has shape (2, 4); expected (B, S) = (2, 3)" in raised(
        attn, x, mask=torch.ones(2, 4, dtype=torch.bool)
    )
    assert "cache must be a KVCache, got dict" in raised(attn, x, cache={})
    assert "x has batch B=2 but the cache was made for 3 rows" in raised(
        attn, x, cache=attn.new_cache(3, 8)
    )
    cache = attn.new_cache(2, 8)
    assert isinstance(cache, KVCache)
    message = raised(cache.append, torch.zeros(2, 2, 1, 3), torch.zeros(2, 2, 1, 3))
    assert "new key has shape (2, 2, 1, 3); expected (B, Hkv, t, Dh) with B=2, Hkv=2, Dh=4" in (
        message
    )
    message = raised(cache.append, torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 3))
    assert "new value has shape (2, 2, 1, 3); expected (B, Hkv, t, Dv) = (2, 2, 1, 4)" in message


def test_memory_errors():
    kv, short = torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 5, 4)
    message = raised(CrossAttentionMemory, kv, short)
    assert "memory key (1, 2, 3, 4) and value (1, 2, 5, 4); expected (B, Hkv, S, Dh)" in message
    message = raised(CrossAttentionMemory, kv, kv, torch.ones(1, 4, dtype=torch.bool))
    assert "memory mask has shape (1, 4) and dtype torch.bool; expected (B, S) = (1, 3)" in (
        message
    )
