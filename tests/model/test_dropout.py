"""xattn's CPU dropout (model.layers.dropout): F.dropout's contract from fewer random bits."""

import pytest
import torch
import torch.nn.functional as F

from xattn.model.layers import dropout


def test_off_in_eval_and_at_zero():
    x = torch.randn(8, 16)
    assert dropout(x, 0.1, False) is x
    assert dropout(x, 0.0, True) is x


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_scale_and_mean(p):
    torch.manual_seed(0)
    x = torch.full((1024, 1024), 2.0)
    y = dropout(x, p, True)
    rate = round(p * 65536) / 65536  # p rounded to a multiple of 2^-16
    dropped = y == 0
    # 1M elements: the rate's standard deviation is about 5e-4
    assert dropped.float().mean().item() == pytest.approx(rate, abs=3e-3)
    torch.testing.assert_close(y[~dropped], torch.full_like(y[~dropped], 2.0 / (1 - rate)))
    assert y.mean().item() == pytest.approx(2.0, rel=1e-2)
    # each of the four 16-bit lanes of a 64-bit draw decides its element alike
    lanes = dropped.flatten().view(-1, 4).float().mean(0)
    torch.testing.assert_close(lanes, torch.full_like(lanes, rate), atol=6e-3, rtol=0)


def test_mask_is_random_per_element_and_reproducible():
    torch.manual_seed(1)
    a = dropout(torch.ones(64, 257), 0.5, True)
    torch.manual_seed(1)
    b = dropout(torch.ones(64, 257), 0.5, True)
    c = dropout(torch.ones(64, 257), 0.5, True)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    # neighbours are independent: the same kept/dropped state about half the time
    same = (a[:, 1:] == 0) == (a[:, :-1] == 0)
    assert same.float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_gradient_is_the_forward_mask():
    torch.manual_seed(2)
    x = torch.randn(32, 48, requires_grad=True)
    y = dropout(x, 0.2, True)
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(x.grad, g * (y / x.detach()))


def test_dtype_shape_and_the_cases_left_to_torch():
    x = torch.randn(3, 5, 7, dtype=torch.bfloat16)
    y = dropout(x, 0.25, True)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    assert torch.equal(dropout(torch.ones(10), 1.0, True), torch.zeros(10))
    torch.manual_seed(3)
    expected = F.dropout(torch.ones(100), 1e-6, True)  # rounds to no drops: F.dropout's
    torch.manual_seed(3)
    torch.testing.assert_close(dropout(torch.ones(100), 1e-6, True), expected)
