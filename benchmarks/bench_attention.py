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
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tables import print_table

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


def _probe(section: str, name: str, shape: tuple[int, ...]) -> None:
    """In a fresh process: build the inputs, run one call, print the peak RSS growth (MB)."""
    torch.set_num_threads(2)
    fn = CANDIDATES[section](*shape)[name]
    with torch.no_grad():
        before = _status_kb("VmRSS")
        fn()
        peak = _status_kb("VmHWM")
    print("n/a" if before is None or peak is None else f"{max(0, peak - before) / 1024:.1f}")


def peak_extra_mb(section: str, name: str, shape: tuple[int, ...]) -> float | None:
    """Growth of peak RSS (MB) during one call, measured in a fresh process so that
    nothing earlier (allocator caches, other shapes) hides it; None where /proc is absent."""
    cmd = [sys.executable, __file__, "--probe", section, name, *map(str, shape)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    text = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "n/a"
    return None if result.returncode != 0 or text == "n/a" else float(text)


def time_interleaved(fns: dict[str, Callable[[], object]], budget_s: float, max_rounds: int):
    """Median ms per call of each fn, measured in interleaved rounds (a, b, c, a, b, c, ...)
    so that a slow phase of a shared machine hits every candidate alike."""
    inner = {}
    for name, fn in fns.items():  # warm up, and batch tiny calls to >= 5 ms per timing
        t = time.perf_counter()
        fn()
        once = time.perf_counter() - t
        inner[name] = max(1, int(0.005 / max(once, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for r in range(max_rounds):
        if r >= 3 and time.perf_counter() - start > budget_s * len(fns):
            break
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            times[name].append((time.perf_counter() - t) * 1e3 / inner[name])
    return {name: statistics.median(ts) for name, ts in times.items()}


def naive_attention(q, k, v):
    """The formula as most code writes it: materialize scores, softmax, multiply."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, H, T, S)
    return torch.softmax(scores, dim=-1) @ v


def fmt_mem(mb):
    return "n/a" if mb is None else f"{mb:,.0f}"


def functional_candidates(B, H, T, S):
    q = torch.randn(B, H, T, HEAD_DIM)
    k = torch.randn(B, H, S, HEAD_DIM)
    v = torch.randn(B, H, S, HEAD_DIM)
    return {
        "torch SDPA": lambda: F.scaled_dot_product_attention(q, k, v),
        "xattn auto": lambda: xattn.attention(q, k, v),
        "xattn sdpa": lambda: xattn.attention(q, k, v, backend="sdpa"),
        "xattn chunked": lambda: xattn.attention(q, k, v, backend="chunked"),
        "xattn math": lambda: xattn.attention(q, k, v, backend="math"),
        "naive formula": lambda: naive_attention(q, k, v),
    }


def module_candidates(B, H, T, S):
    E = H * HEAD_DIM
    ours = xattn.CrossAttention(E, H).eval()
    mha = nn.MultiheadAttention(E, H, batch_first=True).eval()
    x, context = torch.randn(B, T, E), torch.randn(B, S, E)
    return {
        "nn.MultiheadAttention": lambda: mha(x, context, context, need_weights=False),
        "xattn.CrossAttention": lambda: ours(x, context),
    }


def weights_candidates(B, H, T, S):
    E = H * HEAD_DIM
    ours = xattn.CrossAttention(E, H).eval()
    mha = nn.MultiheadAttention(E, H, batch_first=True).eval()
    x, context = torch.randn(B, T, E), torch.randn(B, S, E)
    return {
        "nn.MultiheadAttention(need_weights=True)": lambda: mha(
            x, context, context, need_weights=True, average_attn_weights=True
        ),
        'CrossAttention(return_weights="mean")': lambda: ours(x, context, return_weights="mean"),
        'CrossAttention(.., backend="math")': lambda: ours(
            x, context, return_weights="mean", backend="math"
        ),
    }


CANDIDATES = {
    "functional": functional_candidates,
    "modules": module_candidates,
    "weights": weights_candidates,
}


def bench_section(section, shapes, budget_s, big, speedup, memory=True):
    """Time every candidate of a section on every shape; ratios against the first one."""
    rows = []
    for shape in shapes:
        B, H, T, S = shape
        large = B * H * T * S > NAIVE_LIMIT
        label = f"B{B} H{H} T{T} S{S}"
        candidates = CANDIDATES[section](*shape)
        skipped = set()
        if large and not big:
            skipped = {"xattn math", "naive formula"} & set(candidates)
        with torch.no_grad():
            ms = time_interleaved(
                {n: f for n, f in candidates.items() if n not in skipped},
                budget_s,
                3 if large else 200,  # seconds per call at the largest shapes
            )
        base = next(iter(ms.values()))
        for name in candidates:
            if name in skipped:
                gb = 2 * B * H * T * S * 4 / 1e9
                rows.append([label, name, "skipped", "", f"needs ~{gb:,.1f} GB"])
                continue
            mem = peak_extra_mb(section, name, shape) if memory else None
            ratio = base / ms[name] if speedup else ms[name] / base
            rows.append([label, name, f"{ms[name]:,.2f}", f"{ratio:.2f}x", fmt_mem(mem)])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest shapes only")
    parser.add_argument("--big", action="store_true", help="run the naive formula at 16384")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--probe", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        section, name, *shape = args.probe
        _probe(section, name, tuple(int(x) for x in shape))
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = SHAPES[:1] if args.quick else SHAPES
    weights_shape = (2, 4, 32, 256) if args.quick else (4, 8, 256, 2048)
    budget = 0.2 if args.quick else args.budget
    print(
        f"xattn {xattn.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs seen, "
        f"{torch.get_num_threads()} threads"
    )
    print(xattn.explain_backend(*(torch.randn(1, 8, 4, 64) for _ in range(3))))
    print_table(
        f"1. attention(): float32, Dh = {HEAD_DIM}; time and extra peak memory of one call",
        ["shape", "implementation", "ms", "time vs SDPA", "extra peak MB"],
        bench_section("functional", shapes, budget, args.big, False, not args.no_memory),
    )
    print_table(
        "2. Modules without weights (E = H * 64): CrossAttention vs nn.MultiheadAttention",
        ["shape", "module", "ms", "speed-up vs MHA", "extra peak MB"],
        bench_section("modules", shapes, budget, args.big, True, not args.no_memory),
    )
    B, H, T, S = weights_shape
    print_table(
        f"3. Head-mean attention weights at B{B} T{T} S{S} E{H * HEAD_DIM} H{H}",
        ["shape", "call", "ms", "speed-up vs MHA", "extra peak MB"],
        bench_section("weights", [weights_shape], budget, args.big, True, not args.no_memory),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
