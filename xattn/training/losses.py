"""The training loop's losses: the token cross-entropy, one autograd function whose
backward turns the log-probabilities it kept into the gradient in place, and the
alignment loss of a supervised cross-attention head."""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils import format_shape

__all__ = ["alignment_nll", "token_cross_entropy"]


class _TokenCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of logits (N, V) against target (N,), rows at ignore_index left
    out, label smoothing eps: the forward keeps the log-probabilities (N, V), the backward
    makes them the gradient (softmax - (1 - eps) one-hot - eps / V) * dloss in place, three
    passes over (N, V) in all where autograd's log_softmax and nll_loss make five (a zeroed
    gradient, a scatter into it, log_softmax's backward reading two tensors to write a
    third). A second backward through the same graph finds its log-probabilities changed
    and raises (autograd's check of saved tensors)."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, ignore_index: int, eps: float) -> Tensor:
        log_probs = torch.log_softmax(logits, dim=-1)
        kept = target != ignore_index
        picked = torch.where(kept, target, 0)[:, None]
        losses = -log_probs.gather(1, picked).squeeze(1)
        if eps:
            losses = (1 - eps) * losses - eps / logits.shape[1] * log_probs.sum(1)
        ctx.save_for_backward(log_probs, picked, kept)
        ctx.eps = eps
        return (losses * kept).sum()

    @staticmethod
    def backward(ctx, grad: Tensor):
        log_probs, picked, kept = ctx.saved_tensors
        scale = (grad * kept).to(log_probs.dtype)[:, None]  # (N, 1): 0 on ignored rows
        out = log_probs.exp_()
        if ctx.eps:
            out.sub_(ctx.eps / out.shape[1])
        out.mul_(scale)
        out.scatter_add_(1, picked, scale * -(1 - ctx.eps))
        return out, None, None, None


def token_cross_entropy(
    logits: Tensor, target: Tensor, *, ignore_index: int = -100, label_smoothing: float = 0.0
) -> Tensor:
    """The summed cross-entropy of logits (N, V) against target (N,), as F.cross_entropy(
    logits, target, ignore_index=ignore_index, label_smoothing=label_smoothing,
    reduction="sum") gives it (the same value and gradient to float rounding), in fewer
    passes over the logits (a training step of the benchmark's Marian-sized model spends
    a tenth of its time there). Its graph is for one backward."""
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"logits {format_shape(logits.shape)} and target {format_shape(target.shape)}: "
            f"expected (N, V) and (N,)"
        )
    return _TokenCrossEntropy.apply(logits, target, ignore_index, float(label_smoothing))


def alignment_nll(weights: Tensor, alignment: tuple[Tensor, Tensor]) -> Tensor:
    """Summed cross-entropy of attention rows (B, T, S') against the gold distributions:
    -sum over links of weight * log attention at the gold position."""
    links, share = (x.to(weights.device) for x in alignment)
    picked = weights[links[:, 0], links[:, 1], links[:, 2]]
    return -(share * picked.clamp_min(1e-9).log()).sum()
