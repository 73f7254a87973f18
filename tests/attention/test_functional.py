"""Every backend against a float64 implementation of the formula."""

import math

import pytest
import torch

from xattn import attention, explain_backend
from xattn.attention import functional

from .reference import reference_attention

CUDA_FLASH = torch.cuda.is_available() and functional._flash_attn_func() is not None

# "chunked-blocks" is the chunked backend with tiny blocks, so that every code path that
# stitches blocks together (online softmax, causal block skipping, bias slicing) runs.
BACKENDS = ["math", "sdpa", "chunked", "chunked-blocks"]
WEIGHT_BACKENDS = ["math", "chunked", "chunked-blocks"]


@pytest.fixture
def run(monkeypatch):
    def _run(backend, *args, **kwargs):
        if backend == "chunked-blocks":
            monkeypatch.setattr(functional, "_BLOCK_ELEMENTS", 24)
            monkeypatch.setattr(functional, "_BLOCK_S_MAX", 3)
            backend = "chunked"
        return attention(*args, backend=backend, **kwargs)

    return _run


# (B, H, Hkv, T, S, Dh, Dv): cross shapes with T != S, GQA, MQA, T > S and T < S.
SHAPES = [
    (2, 4, 4, 5, 7, 8, 8),
    (2, 4, 2, 7, 5, 8, 6),
    (1, 6, 1, 3, 11, 4, 5),
    (3, 2, 2, 1, 9, 16, 16),
]


def make_inputs(shape, dtype=torch.float32, requires_grad=False):
    B, H, Hkv, T, S, Dh, Dv = shape
    q = torch.randn(B, H, T, Dh, dtype=dtype, requires_grad=requires_grad)
    k = torch.randn(B, Hkv, S, Dh, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(B, Hkv, S, Dv, dtype=dtype, requires_grad=requires_grad)
    return q, k, v


def make_mask(kind, shape):
    B, H, _, T, S, _, _ = shape
    if kind is None:
        return None
    if kind == "padding":  # (B, 1, 1, S), the last key of the first row is padding
        mask = torch.ones(B, 1, 1, S, dtype=torch.bool)
        mask[0, ..., -2:] = False
        return mask
    if kind == "full":  # (B, H, T, S), random, with one row fully masked
        mask = torch.rand(B, H, T, S) > 0.3
        mask[0, 0, 0] = False
        return mask
    if kind == "2d":  # (T, S) broadcast over batch and heads
        return torch.rand(T, S) > 0.4
    raise AssertionError(kind)


def make_bias(kind, shape):
    B, H, _, T, S, _, _ = shape
    if kind is None:
        return None
    if kind == "heads":
        return torch.randn(1, H, T, S)
    if kind == "keys":
        return torch.randn(B, 1, 1, S)
    raise AssertionError(kind)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mask_kind", [None, "padding", "full", "2d"])
@pytest.mark.parametrize("bias_kind", [None, "heads", "keys"])
@pytest.mark.parametrize("causal", [False, True])
def test_output_matches_float64_formula(run, backend, shape, mask_kind, bias_kind, causal):
    q, k, v = make_inputs(shape)
    mask, bias = make_mask(mask_kind, shape), make_bias(bias_kind, shape)
    expected, _ = reference_attention(q, k, v, mask=mask, bias=bias, causal=causal)
    out = run(backend, q, k, v, mask=mask, bias=bias, causal=causal)
    assert out.shape == expected.shape
    assert out.dtype == q.dtype
    torch.testing.assert_close(out.double(), expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", WEIGHT_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_weights_match_float64_formula(run, backend, shape, causal):
    q, k, v = make_inputs(shape)
    mask, bias = make_mask("full", shape), make_bias("heads", shape)
    expected_out, expected_w = reference_attention(q, k, v, mask=mask, bias=bias, causal=causal)
    out, w = run(backend, q, k, v, mask=mask, bias=bias, causal=causal, return_weights=True)
    torch.testing.assert_close(out.double(), expected_out, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(w.double(), expected_w, atol=2e-6, rtol=1e-5)
    out, w_mean = run(backend, q, k, v, mask=mask, bias=bias, causal=causal, return_weights="mean")
    assert w_mean.shape == (shape[0], shape[3], shape[4])  # (B, T, S)
    torch.testing.assert_close(w_mean.double(), expected_w.mean(1), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_scale(run, backend):
    shape = SHAPES[1]
    q, k, v = make_inputs(shape)
    expected, _ = reference_attention(q, k, v, causal=True, scale=0.37)
    out = run(backend, q, k, v, causal=True, scale=0.37)
    torch.testing.assert_close(out.double(), expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_float64(run, backend, dtype):
    shape = (2, 4, 2, 6, 10, 16, 16)
    q, k, v = make_inputs(shape, dtype=dtype)
    mask = make_mask("padding", shape)
    expected, _ = reference_attention(q, k, v, mask=mask, causal=True)
    out = run(backend, q, k, v, mask=mask, causal=True)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("backend", ["math", "chunked", "chunked-blocks"])
def test_gradcheck_float64(run, backend):
    shape = (1, 4, 2, 5, 6, 4, 3)
    q, k, v = make_inputs(shape, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(1, 1, 5, 6) > 0.3
    mask[..., 1, :] = False  # an empty row

    def f(q, k, v, bias):
        return run(backend, q, k, v, mask=mask, bias=bias, causal=True)

    assert torch.autograd.gradcheck(f, (q, k, v, bias))


@pytest.mark.parametrize("backend", ["math", "chunked", "chunked-blocks"])
def test_gradcheck_float64_broadcast_bias_and_weights(run, backend):
    q, k, v = make_inputs((2, 2, 1, 4, 5, 3, 3), dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, 1, 1, 5, dtype=torch.float64, requires_grad=True)  # per key

    def f(q, k, v, bias):
        out, w = run(backend, q, k, v, bias=bias, return_weights="mean")
        return out, w

    assert torch.autograd.gradcheck(f, (q, k, v, bias))


@pytest.mark.parametrize("backend", ["math", "chunked", "chunked-blocks"])
def test_gradcheck_float64_with_dropout(run, backend):
    q, k, v = make_inputs((1, 2, 2, 4, 6, 3, 3), dtype=torch.float64, requires_grad=True)

    def f(q, k, v):
        torch.manual_seed(1234)  # the same dropout mask on every evaluation
        return run(backend, q, k, v, dropout_p=0.3, causal=True)

    assert torch.autograd.gradcheck(f, (q, k, v))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_math(run, backend):
    shape = (2, 4, 2, 6, 9, 8, 8)
    q, k, v = make_inputs(shape, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, 4, 6, 9, dtype=torch.float64, requires_grad=True)
    mask = make_mask("padding", shape)
    grads = []
    for name in ("math", backend):
        out = run(name, q, k, v, mask=mask, bias=bias, causal=True)
        grads.append(torch.autograd.grad((out * out).sum(), (q, k, v, bias)))
    for expected, got in zip(*grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)


# ---- empty rows: exact zeros, zero weights, zero and finite gradients ------------------


def empty_row_cases():
    """(name, kwargs, shape, empty query rows (b, h, t)) for three ways a row empties."""
    shape = (2, 4, 2, 6, 3, 8, 8)  # T > S: under causal, queries 0..2 see no key
    mask = torch.ones(2, 4, 6, 3, dtype=torch.bool)
    mask[1, :, 4] = False
    bias = torch.zeros(2, 4, 6, 3)
    bias[0, 2, 5] = -math.inf
    return [
        (
            "causal T>S",
            {"causal": True},
            shape,
            [(b, h, t) for b in range(2) for h in range(4) for t in range(3)],
        ),
        ("mask row", {"mask": mask}, shape, [(1, h, 4) for h in range(4)]),
        ("-inf bias row", {"bias": bias}, shape, [(0, 2, 5)]),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", empty_row_cases(), ids=lambda c: c[0])
def test_empty_rows_forward_and_backward(run, backend, case):
    _, kwargs, shape, empty = case
    q, k, v = make_inputs(shape, requires_grad=True)
    out = run(backend, q, k, v, **kwargs)
    assert torch.isfinite(out).all()
    for b, h, t in empty:
        assert torch.equal(out[b, h, t], torch.zeros_like(out[b, h, t]))
    expected, _ = reference_attention(q.detach(), k.detach(), v.detach(), **kwargs)
    torch.testing.assert_close(out.double(), expected, atol=2e-6, rtol=1e-5)
    out.pow(2).sum().backward()
    for grad in (q.grad, k.grad, v.grad):
        assert torch.isfinite(grad).all()
    for b, h, t in empty:
        assert torch.equal(q.grad[b, h, t], torch.zeros_like(q.grad[b, h, t]))
    if backend in WEIGHT_BACKENDS:
        _, w = run(backend, q, k, v, return_weights=True, **kwargs)
        for b, h, t in empty:
            assert torch.equal(w[b, h, t], torch.zeros_like(w[b, h, t]))


def test_nn_multihead_attention_gives_nan_where_we_give_zeros():
    """The reason for the contract: MHA with need_weights=True returns NaN on empty rows."""
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 3, 8, requires_grad=True)
    padding = torch.ones(1, 3, dtype=torch.bool)  # MHA: True = ignore: every key ignored
    y, _ = mha(x, x, x, key_padding_mask=padding, need_weights=True)
    assert torch.isnan(y).any()
    q = torch.randn(1, 2, 3, 4, requires_grad=True)
    out = attention(q, q, q, mask=~padding[:, None, None, :])
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.isfinite(q.grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_length_sequences(run, backend):
    q, k, v = make_inputs((2, 2, 2, 3, 0, 4, 5))
    out = run(backend if backend != "sdpa" else "chunked", q, k, v)
    assert out.shape == (2, 2, 3, 5) and torch.equal(out, torch.zeros_like(out))
    q, k, v = make_inputs((2, 2, 2, 0, 4, 4, 5))
    assert run("math", q, k, v).shape == (2, 2, 0, 5)
    _, w = run("chunked", q, k, v, return_weights="mean")
    assert w.shape == (2, 0, 4)


# ---- dropout ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_unbiased_and_random(run, backend):
    shape = (1, 2, 2, 3, 5, 4, 4)
    q, k, v = make_inputs(shape)
    clean = run(backend, q, k, v)
    samples = torch.stack([run(backend, q, k, v, dropout_p=0.5) for _ in range(600)])
    assert not torch.equal(samples[0], samples[1])  # dropout happened
    assert not torch.equal(samples[0], clean)
    torch.testing.assert_close(samples.mean(0), clean, atol=0.15, rtol=0)


@pytest.mark.parametrize("backend", ["math", "chunked", "chunked-blocks"])
def test_dropout_follows_the_global_seed(run, backend):
    q, k, v = make_inputs((1, 2, 2, 4, 6, 4, 4))
    torch.manual_seed(7)
    a = run(backend, q, k, v, dropout_p=0.4)
    torch.manual_seed(7)
    b = run(backend, q, k, v, dropout_p=0.4)
    assert torch.equal(a, b)


# ---- backend choice --------------------------------------------------------------------


def test_auto_picks_sdpa_on_cpu_float32_and_says_why_not_flash():
    q, k, v = make_inputs(SHAPES[0])  # CPU float32: flash-attn cannot run it anywhere
    choice = explain_backend(q, k, v)
    assert choice.backend == "sdpa"
    text = str(choice)
    assert text.startswith("auto picks 'sdpa'")
    assert choice.refused["flash"] in (
        "flash-attn is not installed",
        "tensors are on cpu; flash-attn needs CUDA",
    )
    assert "chunked: could run this call" in text


def test_auto_with_weights_refuses_sdpa_and_goes_blockwise_when_large():
    q, k, v = make_inputs(SHAPES[0])
    for weights in (True, "mean"):
        choice = explain_backend(q, k, v, return_weights=weights)
        assert choice.backend == "math"  # one block anyway
        assert choice.refused["sdpa"] == "torch SDPA does not return attention weights"
        assert "flash" in choice.refused
        assert "fits in one block" in str(choice)
    q, k, v = make_inputs((1, 8, 8, 512, 1024, 8, 8))  # 4M weights: more than one block
    choice = explain_backend(q, k, v, return_weights="mean")
    assert choice.backend == "chunked"
    assert "math: could run this call, but 'chunked' comes first" in str(choice)


def test_flash_refusals_name_the_reason(monkeypatch):
    monkeypatch.setattr(functional, "_flash_attn_func", lambda: lambda *a, **k: None)
    q, k, v = make_inputs(SHAPES[0])
    assert "needs CUDA" in explain_backend(q, k, v).refused["flash"]
    call = functional._validate(q, k, v, None, None, False, None, 0.0, False, "auto")
    cuda_call = functional._Call(**{**call.__dict__, "device": torch.device("cuda")})
    assert "float16 or bfloat16" in functional._refusal("flash", cuda_call)
    half = functional._Call(**{**cuda_call.__dict__, "dtype": torch.bfloat16})
    assert functional._refusal("flash", half) is None
    masked = functional._Call(**{**half.__dict__, "has_mask": True})
    assert "no boolean mask" in functional._refusal("flash", masked)
    biased = functional._Call(**{**half.__dict__, "has_bias": True})
    assert "no additive bias" in functional._refusal("flash", biased)
    wide = functional._Call(**{**half.__dict__, "Dh": 512, "Dv": 512})
    assert "at most 256" in functional._refusal("flash", wide)


@pytest.mark.skipif(not CUDA_FLASH, reason="flash backend needs CUDA and flash-attn")
@pytest.mark.parametrize("causal", [False, True])
def test_flash_matches_float64_formula(causal):  # pragma: no cover - GPU only
    q, k, v = (x.cuda().bfloat16() for x in make_inputs((2, 8, 2, 37, 53, 64, 64)))
    expected, _ = reference_attention(q.cpu(), k.cpu(), v.cpu(), causal=causal)
    out = attention(q, k, v, causal=causal, backend="flash")
    torch.testing.assert_close(out.cpu().double(), expected, atol=2e-2, rtol=2e-2)


def test_block_sizes_bound_the_score_block():
    for B, H, T, S in [(1, 8, 16384, 16384), (8, 8, 32, 256), (4, 8, 256, 2048), (1, 1, 1, 1)]:
        bt, bs = functional._block_sizes(B, H, T, S)
        assert 1 <= bt <= T and 1 <= bs <= S
        assert B * H * bt * bs <= max(functional._BLOCK_ELEMENTS, B * H * 1024)
