"""Properties of attention that hold for any shapes, masks and backends (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xattn import CrossAttention, SelfAttention, attention

BACKENDS = ["math", "sdpa", "chunked"]
WEIGHT_BACKENDS = ["math", "chunked"]
ATOL = 1e-5


@st.composite
def problems(draw):
    """Random cross-attention inputs: shapes, a (B, 1|H, T, S) mask, maybe causal."""
    B = draw(st.integers(1, 3))
    Hkv = draw(st.integers(1, 3))
    H = Hkv * draw(st.integers(1, 3))
    T = draw(st.integers(1, 7))
    S = draw(st.integers(1, 9))
    Dh = draw(st.sampled_from([2, 4, 8]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, Dh, generator=gen)
    k = torch.randn(B, Hkv, S, Dh, generator=gen)
    v = torch.randn(B, Hkv, S, Dh, generator=gen)
    heads = draw(st.sampled_from([1, H]))
    mask = torch.rand(B, heads, T, S, generator=gen) < draw(st.floats(0.2, 1.0))
    causal = draw(st.booleans())
    return q, k, v, mask, causal


SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(problems(), st.sampled_from(WEIGHT_BACKENDS))
def test_weight_rows_sum_to_one_or_zero(problem, backend):
    q, k, v, mask, causal = problem
    _, w = attention(q, k, v, mask=mask, causal=causal, return_weights=True, backend=backend)
    T, S = q.shape[2], k.shape[2]
    allowed = mask & (torch.arange(S) <= torch.arange(T)[:, None] + S - T) if causal else mask
    has_key = allowed.expand_as(w).any(-1)  # (B, H, T)
    sums = w.sum(-1)
    torch.testing.assert_close(sums, has_key.to(sums.dtype), atol=ATOL, rtol=0)
    assert (w >= 0).all()


@SETTINGS
@given(problems(), st.sampled_from(WEIGHT_BACKENDS))
def test_masked_keys_get_zero_weight(problem, backend):
    q, k, v, mask, causal = problem
    _, w = attention(q, k, v, mask=mask, causal=causal, return_weights=True, backend=backend)
    assert (w[~mask.expand_as(w)] == 0).all()


@SETTINGS
@given(problems(), st.sampled_from(BACKENDS), st.integers(1, 4))
def test_appending_masked_context_changes_nothing(problem, backend, extra):
    q, k, v, mask, _ = problem
    B, Hkv, _, Dh = k.shape
    k2 = torch.cat([k, 100 * torch.randn(B, Hkv, extra, Dh)], dim=2)
    v2 = torch.cat([v, 100 * torch.randn(B, Hkv, extra, Dh)], dim=2)
    hidden = torch.zeros(*mask.shape[:-1], extra, dtype=torch.bool)
    mask2 = torch.cat([mask, hidden], dim=-1)
    out = attention(q, k, v, mask=mask, backend=backend)
    out2 = attention(q, k2, v2, mask=mask2, backend=backend)
    torch.testing.assert_close(out2, out, atol=ATOL, rtol=ATOL)


@SETTINGS
@given(problems(), st.sampled_from(BACKENDS), st.integers(0, 2**31 - 1))
def test_permuting_context_with_its_mask_changes_nothing(problem, backend, seed):
    q, k, v, mask, _ = problem
    perm = torch.randperm(k.shape[2], generator=torch.Generator().manual_seed(seed))
    out = attention(q, k, v, mask=mask, backend=backend)
    out2 = attention(q, k[:, :, perm], v[:, :, perm], mask=mask[..., perm], backend=backend)
    torch.testing.assert_close(out2, out, atol=ATOL, rtol=ATOL)
    if backend in WEIGHT_BACKENDS:
        _, w = attention(q, k, v, mask=mask, return_weights="mean", backend=backend)
        _, w2 = attention(
            q,
            k[:, :, perm],
            v[:, :, perm],
            mask=mask[..., perm],
            return_weights="mean",
            backend=backend,
        )
        torch.testing.assert_close(w2, w[..., perm], atol=ATOL, rtol=ATOL)


@SETTINGS
@given(problems(), st.sampled_from(BACKENDS), st.data())
def test_causal_later_positions_never_change_earlier_outputs(problem, backend, data):
    """Query i sees keys j <= i + S - T: changing anything after that leaves row i alone."""
    q, k, v, mask, _ = problem
    T, S = q.shape[2], k.shape[2]
    i = data.draw(st.integers(0, T - 1))
    out = attention(q, k, v, mask=mask, causal=True, backend=backend)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, :, i + 1 :] = torch.randn_like(q2[:, :, i + 1 :])  # later queries
    first_hidden = max(0, i + S - T + 1)  # keys row i cannot see
    k2[:, :, first_hidden:] = torch.randn_like(k2[:, :, first_hidden:])
    v2[:, :, first_hidden:] = torch.randn_like(v2[:, :, first_hidden:])
    out2 = attention(q2, k2, v2, mask=mask, causal=True, backend=backend)
    torch.testing.assert_close(out2[:, :, : i + 1], out[:, :, : i + 1], atol=ATOL, rtol=ATOL)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(2, 8), st.data())
def test_causal_self_attention_module_is_causal(B, T, data):
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    attn = SelfAttention(16, 4, causal=True, num_kv_heads=2).eval()
    x = torch.randn(B, T, 16)
    i = data.draw(st.integers(0, T - 1))
    x2 = x.clone()
    x2[:, i + 1 :] = torch.randn_like(x2[:, i + 1 :])
    with torch.no_grad():
        y, y2 = attn(x), attn(x2)
    torch.testing.assert_close(y2[:, : i + 1], y[:, : i + 1], atol=ATOL, rtol=ATOL)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 8), st.data())
def test_cross_attention_padding_content_is_ignored(B, T, S, data):
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    attn = CrossAttention(16, 2, context_dim=12).eval()
    x, context = torch.randn(B, T, 16), torch.randn(B, S, 12)
    lengths = torch.tensor([data.draw(st.integers(1, S)) for _ in range(B)])
    context_mask = torch.arange(S) < lengths[:, None]  # (B, S)
    garbage = context.masked_fill(~context_mask[..., None], 1e4)
    with torch.no_grad():
        y = attn(x, context, context_mask=context_mask)
        y2 = attn(x, garbage, context_mask=context_mask)
    torch.testing.assert_close(y2, y, atol=ATOL, rtol=ATOL)
