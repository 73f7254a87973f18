"""CrossAttention and SelfAttention against nn.MultiheadAttention, caches, memory reuse."""

import dataclasses

import pytest
import torch
from torch import nn

from xattn import CrossAttention, CrossAttentionMemory, KVCache, SelfAttention

BACKENDS = ["auto", "math", "sdpa", "chunked"]


def copy_into_mha_cross(ours: CrossAttention, mha: nn.MultiheadAttention) -> None:
    """Copy our weights into an MHA built with kdim = vdim = context_dim (separate q/k/v)."""
    with torch.no_grad():
        mha.q_proj_weight.copy_(ours.q_proj.weight)
        mha.k_proj_weight.copy_(ours.k_proj.weight)
        mha.v_proj_weight.copy_(ours.v_proj.weight)
        mha.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        mha.out_proj.weight.copy_(ours.out_proj.weight)
        mha.out_proj.bias.copy_(ours.out_proj.bias)


def copy_into_mha_self(ours: SelfAttention, mha: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        mha.in_proj_weight.copy_(
            torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        )
        mha.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        mha.out_proj.weight.copy_(ours.out_proj.weight)
        mha.out_proj.bias.copy_(ours.out_proj.bias)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "B,T,S,dim,context_dim,heads", [(2, 5, 9, 32, 24, 4), (3, 1, 4, 16, 40, 2)]
)
def test_cross_attention_matches_multihead_attention(backend, B, T, S, dim, context_dim, heads):
    ours = CrossAttention(dim, heads, context_dim=context_dim).eval()
    mha = nn.MultiheadAttention(dim, heads, kdim=context_dim, vdim=context_dim, batch_first=True)
    copy_into_mha_cross(ours, mha.eval())
    x, context = torch.randn(B, T, dim), torch.randn(B, S, context_dim)
    context_mask = torch.ones(B, S, dtype=torch.bool)
    context_mask[0, S // 2 :] = False  # True = real token (MHA's key_padding_mask: inverted)
    with torch.no_grad():
        expected, expected_w = mha(
            x, context, context, key_padding_mask=~context_mask, average_attn_weights=True
        )
        y = ours(x, context, context_mask=context_mask, backend=backend)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    if backend in ("auto", "math", "chunked"):
        with torch.no_grad():
            y2, w = ours(
                x, context, context_mask=context_mask, return_weights="mean", backend=backend
            )
            _, w_full = ours(x, context, context_mask=context_mask, return_weights=True)
        torch.testing.assert_close(y2, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(w, expected_w, atol=1e-6, rtol=1e-5)
        assert w_full.shape == (B, heads, T, S)
        torch.testing.assert_close(w_full.mean(1), expected_w, atol=1e-6, rtol=1e-5)


def test_cross_attention_gradients_match_multihead_attention():
    ours = CrossAttention(16, 4, context_dim=8)
    mha = nn.MultiheadAttention(16, 4, kdim=8, vdim=8, batch_first=True)
    copy_into_mha_cross(ours, mha)
    x, context = torch.randn(2, 3, 16), torch.randn(2, 5, 8)
    ours(x, context).pow(2).sum().backward()
    mha(x, context, context, need_weights=False)[0].pow(2).sum().backward()
    torch.testing.assert_close(ours.k_proj.weight.grad, mha.k_proj_weight.grad)
    torch.testing.assert_close(ours.q_proj.weight.grad, mha.q_proj_weight.grad)
    torch.testing.assert_close(ours.out_proj.weight.grad, mha.out_proj.weight.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_self_attention_matches_multihead_attention(backend):
    ours = SelfAttention(32, 4, causal=True).eval()
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    copy_into_mha_self(ours, mha)
    x = torch.randn(2, 7, 32)
    blocked = torch.ones(7, 7, dtype=torch.bool).triu(1)  # MHA: True = may NOT attend
    with torch.no_grad():
        expected, _ = mha(x, x, x, attn_mask=blocked)
        y = ours(x, backend=backend)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)


def test_grouped_kv_heads_equal_repeated_full_heads():
    """num_kv_heads=2 with 8 heads equals 8 K/V heads whose weights repeat per group."""
    gqa = CrossAttention(32, 8, context_dim=12, num_kv_heads=2).eval()
    full = CrossAttention(32, 8, context_dim=12).eval()
    Dh = 4
    with torch.no_grad():
        full.q_proj.load_state_dict(gqa.q_proj.state_dict())
        full.out_proj.load_state_dict(gqa.out_proj.state_dict())
        for src, dst in ((gqa.k_proj, full.k_proj), (gqa.v_proj, full.v_proj)):
            w = src.weight.view(2, Dh, 12).repeat_interleave(4, dim=0).reshape(32, 12)
            b = src.bias.view(2, Dh).repeat_interleave(4, dim=0).reshape(32)
            dst.weight.copy_(w)
            dst.bias.copy_(b)
    assert gqa.k_proj.weight.shape == (8, 12)  # Hkv * Dh rows: 4x fewer K/V parameters
    x, context = torch.randn(2, 3, 32), torch.randn(2, 6, 12)
    with torch.no_grad():
        torch.testing.assert_close(gqa(x, context), full(x, context), atol=1e-5, rtol=1e-5)


def test_project_memory_reuse_equals_projecting_again():
    attn = CrossAttention(16, 2, context_dim=10).eval()
    x, context = torch.randn(2, 4, 16), torch.randn(2, 7, 10)
    context_mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    memory = attn.project_memory(context, context_mask)
    assert memory.key.shape == (2, 2, 7, 8) and memory.batch_size == 2
    assert memory.source_length == 7
    calls = []
    attn.k_proj.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        for t in range(1, 5):  # a decoder step by step: the context is projected never again
            y = attn(x[:, :t], memory=memory)
            expected = CrossAttention.forward(attn, x[:, :t], context, context_mask=context_mask)
            torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-6)
    assert len(calls) == 4  # only the reference calls projected
    with pytest.raises(dataclasses.FrozenInstanceError):
        memory.key = torch.zeros(1)


@pytest.mark.parametrize("return_weights", [False, True, "mean"])
def test_beams_share_one_memory_without_copies(return_weights):
    """x with k rows per source equals replicating K/V per row (what transformers does)."""
    attn = CrossAttention(16, 4, context_dim=8).eval()
    B, k, T, S = 2, 3, 2, 5
    context = torch.randn(B, S, 8)
    context_mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    memory = attn.project_memory(context, context_mask)
    replicated = memory.index_select(torch.arange(B).repeat_interleave(k))
    x = torch.randn(B * k, T, 16)
    with torch.no_grad():
        shared = attn(x, memory=memory, return_weights=return_weights)
        copied = attn(x, memory=replicated, return_weights=return_weights)
    for a, b in zip(
        shared if return_weights else [shared], copied if return_weights else [copied], strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("step", [1, 2, 3])
@pytest.mark.parametrize("num_kv_heads", [4, 1])
def test_cached_incremental_decoding_equals_full_forward(step, num_kv_heads):
    attn = SelfAttention(16, 4, causal=True, num_kv_heads=num_kv_heads).eval()
    B, T = 2, 7
    x = torch.randn(B, T, 16)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 0] = False  # a left-padded row
    with torch.no_grad():
        full = attn(x, mask=mask)
        cache = attn.new_cache(B, max_length=T)
        pieces = []
        for t0 in range(0, T, step):
            t1 = min(T, t0 + step)
            y, cache = attn(x[:, t0:t1], mask=mask[:, :t1], cache=cache)
            pieces.append(y)
    assert cache.length == T
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_returns_weights_and_reorders():
    attn = SelfAttention(8, 2, causal=True).eval()
    x = torch.randn(3, 4, 8)
    with torch.no_grad():
        cache = attn.new_cache(3, 6)
        _, w, cache = attn(x, cache=cache, return_weights=True)
        assert w.shape == (3, 2, 4, 4)
        expected = cache.key[[2, 2, 0], :, :4].clone()
        picked = cache.reorder(torch.tensor([2, 2, 0]))  # in place: cache is not used after
        assert torch.equal(picked.key[:, :, :4], expected) and picked.length == 4


def test_cache_overflow_is_a_clear_error():
    cache = KVCache.empty(1, 2, 3, 4)
    cache, _, _ = cache.append(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))
    with pytest.raises(ValueError, match="holds 3 positions; appending 2 to 2 would need 4"):
        cache.append(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))


def test_weights_are_returned_never_stored():
    attn = CrossAttention(8, 2)
    before = set(vars(attn))
    attn(torch.randn(1, 2, 8), torch.randn(1, 3, 8), return_weights=True)
    assert set(vars(attn)) == before
    assert all(not isinstance(v, torch.Tensor) for v in vars(attn).values())


def test_dropout_only_while_training():
    attn = CrossAttention(16, 2, dropout=0.5)
    x, context = torch.randn(2, 3, 16), torch.randn(2, 6, 16)
    attn.eval()
    assert torch.equal(attn(x, context), attn(x, context))
    attn.train()
    assert not torch.equal(attn(x, context), attn(x, context))


def test_memory_of_another_type_is_refused():
    attn = CrossAttention(8, 2)
    with pytest.raises(ValueError, match="memory must come from project_memory"):
        attn(torch.randn(1, 2, 8), memory=(torch.zeros(1), torch.zeros(1)))
    memory = CrossAttentionMemory(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    assert attn(torch.randn(1, 2, 8), memory=memory).shape == (1, 2, 8)
