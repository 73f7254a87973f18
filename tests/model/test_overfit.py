"""An overfit test: a tiny model learns to reverse digit strings (the tour's reverser), and
its cross-attention learns the anti-diagonal alignment that the task implies."""

import torch

from xattn.tour import reverse_batch, train_reverser


def test_tiny_model_learns_to_reverse_and_attends_to_the_mirror_position():
    losses = []
    model, loss = train_reverser(300, report=lambda step, value: losses.append(value))
    assert len(losses) == 300 and losses[-1] == loss
    assert loss < 0.05 and losses[0] > 1.0
    src, tgt = reverse_batch(torch.Generator().manual_seed(99), batch_size=32)
    out = model.generate(src, max_new_tokens=8, num_beams=2, return_weights="mean")
    exact = (out.sequences[:, : tgt.shape[1]] == tgt).all(1).float().mean()
    assert exact >= 0.9  # held-out strings reversed exactly
    # the layer-averaged attention peak for output position i sits at (or next to) the
    # mirror source position S-1-i; encoder self-attention blurs exact positions a little
    maps = torch.stack(out.cross_attention).mean(0)[:, :6]  # (B, 6 outputs, 6 sources)
    peaks = maps.argmax(-1)
    mirror = torch.arange(5, -1, -1).expand_as(peaks)
    assert ((peaks - mirror).abs() <= 1).float().mean() > 0.95
    assert (peaks == mirror).float().mean() > 0.6
