import pytest
import torch
import torch.nn.functional as F

from xattn.training.losses import token_cross_entropy


def _logits_and_targets(N=37, V=53, ignore=-100, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, V, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, V, (N,), generator=g)
    target[::5] = ignore
    return logits, target


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("upstream", [1.0, 0.37])
def test_the_value_and_gradient_are_those_of_f_cross_entropy(smoothing, upstream):
    logits, target = _logits_and_targets()
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = token_cross_entropy(ours, target, label_smoothing=smoothing)
    ref = F.cross_entropy(theirs, target, label_smoothing=smoothing, reduction="sum")
    (loss * upstream).backward()
    (ref * upstream).backward()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-12, atol=1e-12)
    assert ours.grad[::5].abs().max() == 0  # ignored rows get no gradient


def test_another_ignore_index_and_float32_logits_from_a_layer():
    logits, target = _logits_and_targets(ignore=0)
    layer = torch.nn.Linear(8, logits.shape[1])
    x = torch.randn(logits.shape[0], 8)
    loss = token_cross_entropy(layer(x), target, ignore_index=0, label_smoothing=0.1)
    loss.backward()
    ours = layer.weight.grad.clone()
    layer.weight.grad = None
    ref = F.cross_entropy(layer(x), target, ignore_index=0, label_smoothing=0.1, reduction="sum")
    ref.backward()
    torch.testing.assert_close(ours, layer.weight.grad, rtol=1e-5, atol=1e-5)


def test_only_ignored_rows_give_zero_loss_and_gradient():
    logits = torch.randn(4, 9, requires_grad=True)
    loss = token_cross_entropy(logits, torch.full((4,), -100), label_smoothing=0.1)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().max().item() == 0.0


def test_a_second_backward_through_the_same_graph_raises():
    logits, target = _logits_and_targets()
    loss = token_cross_entropy(logits.requires_grad_(), target)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_shapes_that_do_not_match_say_which():
    with pytest.raises(ValueError, match=r"logits \(2, 3, 5\) and target \(2, 3\)"):
        token_cross_entropy(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target \(3,\)"):
        token_cross_entropy(torch.zeros(2, 5), torch.zeros(3, dtype=torch.long))
