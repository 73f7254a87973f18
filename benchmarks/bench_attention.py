"""Side-by-side time and peak memory of xattn's attention against its peers.

    python benchmarks/bench_attention.py            # the table in the README (minutes)
    python benchmarks/bench_attention.py --quick    # smallest shape only (seconds)
    python benchmarks/bench_attention.py --big      # also run the naive formula at 16384

Three tables, all measured in one run so that ratios are trustworthy on a noisy machine:
1. attention(): xattn backends vs torch SDPA and the naive formula, cross-attention shapes.
2. The same at module level: CrossAttention vs nn.MultiheadAttention (need_weights=False).
3. Head-mean attention weights: CrossAttention(return_weights="mean") vs
   nn.MultiheadAttention(need_weights=True, average_attn_weights=True).

Peak memory is the growth of the process's peak resident set during one call (Linux:
/proc/self/clear_refs resets the peak), so it counts every temporary, whoever allocates it.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import xattn

# (B, H, T, S) from the issue: small cross-attention up to T = S = 16384.
SHAPES = [
    (8, 8, 32, 256),
    (4, 8, 256, 2048),
    (2, 8, 1024, 4096),
    (1, 8, 4096, 4096),
    (1, 8, 16384, 16384),
]
HEAD_DIM = 64
NAIVE_LIMIT = 1 << 30  # scores elements above which the naive formula runs only with --big


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_extra_mb(fn: Callable[[], object]) -> float | None:
    """Growth of peak RSS (MB) while fn runs, or None where /proc is not available."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        fn()
        return None
    before = _status_kb("VmRSS")
    result = fn()
    peak = _status_kb("VmHWM")
    del result
    if before is None or peak is None:
        return None
    return max(0.0, (peak - before) / 1024)


def time_ms(fn: Callable[[], object], budget_s: float, max_repeats: int) -> float:
    """Median wall time of fn over repeats that fit in budget_s (at least 3, one warm-up)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def naive_attention(q, k, v):
    """The formula as most code writes it: materialize scores, softmax, multiply."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, H, T, S)
    return torch.softmax(scores, dim=-1) @ v


def row(cells, widths):
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def print_table(title, header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}\n")
    print(row(header, widths))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(row(r, widths))


def fmt_mem(mb):
    return "n/a" if mb is None else f"{mb:,.0f}"


def bench_functional(shapes, budget_s, big):
    rows = []
    for B, H, T, S in shapes:
        q = torch.randn(B, H, T, HEAD_DIM)
        k = torch.randn(B, H, S, HEAD_DIM)
        v = torch.randn(B, H, S, HEAD_DIM)
        scores_mb = B * H * T * S * 4 / 2**20
        large = B * H * T * S > NAIVE_LIMIT
        candidates = {
            "torch SDPA": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v),
            "xattn auto": lambda q=q, k=k, v=v: xattn.attention(q, k, v),
            "xattn sdpa": lambda q=q, k=k, v=v: xattn.attention(q, k, v, backend="sdpa"),
            "xattn chunked": lambda q=q, k=k, v=v: xattn.attention(q, k, v, backend="chunked"),
            "xattn math": lambda q=q, k=k, v=v: xattn.attention(q, k, v, backend="math"),
            "naive formula": lambda q=q, k=k, v=v: naive_attention(q, k, v),
        }
        base = None
        for name, fn in candidates.items():
            shape = f"B{B} H{H} T{T} S{S}"
            if large and name in ("xattn math", "naive formula") and not big:
                rows.append([shape, name, "skipped", "", f"needs ~{2 * scores_mb:,.0f}"])
                continue
            with torch.no_grad():
                # Few repeats at the largest shapes: each call takes seconds there.
                ms = time_ms(fn, budget_s, 3 if large else 50)
                mem = peak_extra_mb(fn)
            base = ms if name == "torch SDPA" else base
            rows.append([shape, name, f"{ms:,.2f}", f"{ms / base:.2f}x", fmt_mem(mem)])
    print_table(
        "1. attention(): time and extra peak memory (float32, Dh = 64, CPU threads: "
        f"{torch.get_num_threads()})",
        ["shape", "implementation", "ms", "vs SDPA", "extra peak MB"],
        rows,
    )


def bench_modules(shapes, budget_s):
    rows = []
    for B, H, T, S in shapes:
        E = H * HEAD_DIM
        ours = xattn.CrossAttention(E, H).eval()
        mha = nn.MultiheadAttention(E, H, batch_first=True).eval()
        x, context = torch.randn(B, T, E), torch.randn(B, S, E)
        large = B * H * T * S > NAIVE_LIMIT
        candidates = {
            "nn.MultiheadAttention": lambda m=mha, x=x, c=context: m(x, c, c, need_weights=False),
            "xattn.CrossAttention": lambda m=ours, x=x, c=context: m(x, c),
        }
        base = None
        for name, fn in candidates.items():
            with torch.no_grad():
                ms = time_ms(fn, budget_s, 3 if large else 50)
                mem = peak_extra_mb(fn)
            base = ms if base is None else base
            rows.append(
                [f"B{B} T{T} S{S} E{E}", name, f"{ms:,.2f}", f"{base / ms:.2f}x", fmt_mem(mem)]
            )
    print_table(
        "2. Modules without weights: CrossAttention vs nn.MultiheadAttention",
        ["shape", "module", "ms", "speed-up vs MHA", "extra peak MB"],
        rows,
    )


def bench_mean_weights(budget_s, quick):
    B, T, S, E, H = (2, 32, 256, 128, 4) if quick else (4, 256, 2048, 512, 8)
    ours = xattn.CrossAttention(E, H).eval()
    mha = nn.MultiheadAttention(E, H, batch_first=True).eval()
    x, context = torch.randn(B, T, E), torch.randn(B, S, E)
    candidates = {
        "nn.MultiheadAttention(need_weights=True)": lambda: mha(
            x, context, context, need_weights=True, average_attn_weights=True
        ),
        'CrossAttention(return_weights="mean")': lambda: ours(x, context, return_weights="mean"),
        'CrossAttention(.., backend="math")': lambda: ours(
            x, context, return_weights="mean", backend="math"
        ),
    }
    rows, base = [], None
    for name, fn in candidates.items():
        with torch.no_grad():
            ms = time_ms(fn, budget_s, 50)
            mem = peak_extra_mb(fn)
        base = ms if base is None else base
        rows.append([name, f"{ms:,.2f}", f"{base / ms:.2f}x", fmt_mem(mem)])
    print_table(
        f"3. Head-mean attention weights at B{B} T{T} S{S} E{E} H{H}",
        ["call", "ms", "speed-up vs MHA", "extra peak MB"],
        rows,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest shape only")
    parser.add_argument("--big", action="store_true", help="run the naive formula at 16384")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = SHAPES[:1] if args.quick else SHAPES
    budget = 0.2 if args.quick else args.budget
    print(f"xattn {xattn.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs seen, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(xattn.explain_backend(*(torch.randn(1, 8, 4, 64) for _ in range(3))))
    bench_functional(shapes, budget, args.big)
    bench_modules(shapes, budget)
    bench_mean_weights(budget, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
