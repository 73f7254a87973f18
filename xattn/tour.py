"""`xattn tour`: the attention core in half a minute (a module, every backend equal to the
reference, rows with nothing to attend to, exact attention without the T x S matrix), and a
tiny encoder-decoder learning to reverse digit strings with its cross-attention learning the
mirror alignment (`train_reverser`, also the model tests' overfit check)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

import xattn

__all__ = ["reverse_batch", "run_tour", "train_reverser"]

PAD, START, END = 0, 1, 2  # digits 0-9 are tokens 3-12
VOCAB = 16


def _shade(weights, row_labels, col_labels) -> str:
    """A (T, S) weight matrix as text, darker characters for larger weights."""
    ramp = " .:-=+*#%@"
    width = max(len(s) for s in row_labels)
    lines = [" " * (width + 1) + " ".join(f"{c:>3}" for c in col_labels)]
    for label, row in zip(row_labels, weights.tolist(), strict=True):
        cells = " ".join(f"{ramp[min(9, int(w * 10))] * 3}" for w in row)
        lines.append(f"{label:>{width}} {cells}")
    return "\n".join(lines)


def _module(out) -> tuple:
    """1. A cross-attention module: decoder width 64 reads an encoder of width 48."""
    B, T, S, dim, context_dim, heads = 2, 5, 9, 64, 48, 4
    attn = xattn.CrossAttention(dim, heads, context_dim=context_dim).eval()
    x = torch.randn(B, T, dim)  # (B, T, dim): the target
    context = torch.randn(B, S, context_dim)  # (B, S, context_dim): the source
    context_mask = torch.ones(B, S, dtype=torch.bool)
    context_mask[1, 6:] = False  # the second source is 6 tokens long, then padding
    with torch.no_grad():
        y, weights = attn(x, context, context_mask=context_mask, return_weights="mean")
    out(f"1. CrossAttention({dim}, {heads}, context_dim={context_dim})")
    out(f"   x {tuple(x.shape)} + context {tuple(context.shape)} -> y {tuple(y.shape)}")
    out(f"   head-mean weights {tuple(weights.shape)}; the padded source positions 6..8:")
    out(_shade(weights[1], [f"t{i}" for i in range(T)], [f"s{j}" for j in range(S)]))
    out(f"   rows sum to {[round(x, 4) for x in weights[1].sum(-1).tolist()]}\n")
    return attn, x, context


def _backends(out) -> None:
    """2. Every backend computes the same numbers."""
    B = 2
    q = torch.randn(B, 8, 48, 32)  # (B, H, T, Dh)
    k = torch.randn(B, 2, 80, 32)  # (B, Hkv, S, Dh): grouped-query attention, 4 heads each
    v = torch.randn(B, 2, 80, 32)
    mask = torch.rand(B, 1, 1, 80) > 0.2
    reference = xattn.attention(q, k, v, mask=mask, causal=True, backend="math")
    out("2. Every backend equals the reference (B=2, H=8, Hkv=2, T=48, S=80, causal):")
    for name in ("sdpa", "chunked"):
        got = xattn.attention(q, k, v, mask=mask, causal=True, backend=name)
        out(f"   {name:8s} max |difference| = {(got - reference).abs().max().item():.2e}")
    out("   " + str(xattn.explain_backend(q, k, v, mask=mask, causal=True)).replace("\n", "\n   "))
    out()


def _empty_rows(attn, x, context, out) -> None:
    """3. Rows with nothing to attend to: zeros, never NaN."""
    S, dim, heads = context.shape[1], x.shape[-1], attn.num_heads
    out("3. A query with every source position masked:")
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)
    all_padding = torch.zeros(1, S, dtype=torch.bool)  # nothing real to attend to
    with torch.no_grad():
        y_mha, _ = mha(
            x[:1],
            x[:1].new_zeros(1, S, dim),
            x[:1].new_zeros(1, S, dim),
            key_padding_mask=~all_padding,
        )
        y_ours = attn(x[:1], context[:1], context_mask=all_padding)
    out(f"   nn.MultiheadAttention: NaN in output = {bool(torch.isnan(y_mha).any())}")
    out(
        f"   xattn.CrossAttention:  NaN in output = {bool(torch.isnan(y_ours).any())} "
        f"(attention part is exact zeros; y is the output projection's bias)\n"
    )


def _memory_lean(n: int, out) -> None:
    """4. Exact attention without the T x S matrix."""
    q, k, v = (torch.randn(1, 8, n, 64) for _ in range(3))
    naive_gb = 8 * n * n * 4 / 1e9
    out(
        f"4. Exact attention at T = S = {n}, H = 8, Dh = 64 "
        f"(the naive formula holds {naive_gb:.2f} GB of scores):"
    )
    for name in ("auto", "chunked"):
        start = time.perf_counter()
        with torch.no_grad():
            result = xattn.attention(q, k, v, backend=name)
        took = time.perf_counter() - start
        out(f"   {name:8s} {took:6.2f} s, output {tuple(result.shape)}")
    out()


def reverse_batch(gen: torch.Generator, batch_size: int = 64, length: int = 6):
    """(digits (B, S) as token ids, targets (B, S + 2): <s>, the digits reversed, </s>)."""
    digits = torch.randint(3, 13, (batch_size, length), generator=gen)
    starts, ends = torch.full((batch_size, 1), START), torch.full((batch_size, 1), END)
    return digits, torch.cat([starts, digits.flip(1), ends], 1)


def train_reverser(steps: int = 300, *, seed: int = 0, report=None) -> tuple:
    """A 2 + 2-layer model (width 64) trained to reverse 6-digit strings with AdamW;
    report(step, loss) is called at every step. Returns (model in eval mode, last loss)."""
    torch.manual_seed(seed)
    config = xattn.ModelConfig.preset("tiny", vocab_size=VOCAB, d_model=64, ffn_dim=128)
    model = xattn.EncoderDecoder(config.replace(dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    loss = torch.tensor(float("nan"))
    for step in range(1, steps + 1):
        src, tgt = reverse_batch(gen)
        logits = model(src, tgt[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tgt[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if report is not None:
            report(step, loss.item())
    return model.eval(), loss.item()


def _reverser(steps: int, out) -> None:
    """5. The tiny model learns to reverse digit strings; its cross-attention the mirror."""
    out(f"5. A 2+2-layer EncoderDecoder learns to reverse digit strings ({steps} steps):")
    start = time.perf_counter()

    def report(step: int, loss: float) -> None:
        if step % max(1, steps // 4) == 0:
            out(f"   step {step:4d}  loss {loss:.4f}  ({time.perf_counter() - start:.1f} s)")

    model, _ = train_reverser(steps, report=report)
    src, tgt = reverse_batch(torch.Generator().manual_seed(99), batch_size=200)
    res = model.generate(src, max_new_tokens=8, num_beams=2, return_weights="mean")
    width = tgt.shape[1]  # an output that ended early is padded to the target's length
    seqs = F.pad(res.sequences, (0, max(0, width - res.sequences.shape[1])), value=PAD)
    exact = (seqs[:, :width] == tgt).all(1).float().mean().item()
    out(f"   held-out exact match (beam search, 2 beams): {exact:.1%}")
    digits = [str(int(t) - 3) for t in src[0]]
    outs = [str(int(t) - 3) for t in res.sequences[0, 1:7]]
    out(f"   {''.join(digits)} -> {''.join(outs)}; cross-attention, head and layer mean:")
    maps = torch.stack(res.cross_attention).mean(0)[0, :6]  # (6 outputs, 6 sources)
    out(_shade(maps, outs, digits))


def run_tour(*, length: int = 4096, steps: int = 300, seed: int = 0, out=print) -> None:
    """Print the tour; `length` is T = S of the memory-lean step, `steps` the reverser's."""
    torch.manual_seed(seed)
    out("xattn tour: cross-attention, T target positions attend to S source positions\n")
    attn, x, context = _module(out)
    _backends(out)
    _empty_rows(attn, x, context, out)
    _memory_lean(length, out)
    _reverser(steps, out)
    out("\nNext: `xattn demo` trains an English-to-Spanish translator.")
