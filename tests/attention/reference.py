"""An independent float64 implementation of the formula, for parity tests.

Written differently from the library's math backend on purpose: einsum over explicit
head groups, the mask built as a dense (B, H, T, S) tensor, softmax by hand.
"""

import torch


def reference_attention(q, k, v, *, mask=None, bias=None, causal=False, scale=None):
    """float64 (out (B, H, T, Dv), weights (B, H, T, S)); empty rows give zeros."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, T, Dh = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = H // Hkv
    scale = Dh**-0.5 if scale is None else scale
    head_of = torch.arange(H) // G  # query head h reads key/value head h // G
    scores = torch.einsum("bhtd,bhsd->bhts", q, k[:, head_of]) * scale
    if bias is not None:
        scores = scores + bias.double()
    allowed = torch.ones(B, H, T, S, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    if causal:
        for i in range(T):
            for j in range(S):
                if j > i + S - T:
                    allowed[:, :, i, j] = False
    allowed = allowed & torch.isfinite(scores)
    shifted = scores - torch.where(allowed, scores, -1e300).amax(-1, keepdim=True)
    e = torch.where(allowed, shifted.exp(), torch.zeros(()).double())
    total = e.sum(-1, keepdim=True)
    weights = torch.where(total > 0, e / total.clamp_min(1e-300), torch.zeros(()).double())
    out = torch.einsum("bhts,bhsd->bhtd", weights, v[:, head_of])
    return out, weights
