"""Generation and training speed of xattn's EncoderDecoder against its peers, side by side.

    python benchmarks/bench_generation.py           # the table in the README (a few minutes)
    python benchmarks/bench_generation.py --quick   # B = 1 greedy only, few tokens

A Marian-sized model (d_model 256, 3 + 3 layers, 4 heads, ffn 1024, vocab 8000) is built
with transformers (random weights), saved, and loaded into xattn with from_hf, so both run
the same weights and produce the same tokens (checked). Every row generates exactly the
same number of new tokens (min_new_tokens = max_new_tokens). Peers:
- transformers' generate (cache on);
- an nn.Transformer model of the same size that re-runs the decoder over the whole prefix
  at every step (what a model without a cache does).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tables import print_table

import xattn

D, LAYERS, HEADS, FFN, VOCAB, SRC = 256, 3, 4, 1024, 8000, 32


def build_models():
    import transformers

    config = transformers.MarianConfig(
        vocab_size=VOCAB,
        d_model=D,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN,
        max_position_embeddings=512,
        pad_token_id=VOCAB - 1,
        eos_token_id=0,
        decoder_start_token_id=VOCAB - 1,
        activation_function="swish",
        scale_embedding=True,
    )
    torch.manual_seed(0)
    hf = transformers.MarianMTModel(config).eval()
    folder = tempfile.mkdtemp()
    hf.save_pretrained(folder)
    ours = xattn.EncoderDecoder.from_hf(folder)
    return hf, ours


class RerunTransformer(nn.Module):
    """nn.Transformer with embeddings and an output layer: no cache, re-runs every step."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.positions = nn.Embedding(512, D)
        self.transformer = nn.Transformer(
            D,
            HEADS,
            LAYERS,
            LAYERS,
            FFN,
            dropout=0.1,
            batch_first=True,
            activation=nn.functional.silu,
        )
        self.out = nn.Linear(D, VOCAB)

    def embed_at(self, ids):
        return self.embed(ids) + self.positions(torch.arange(ids.shape[1]))

    def forward(self, src, tgt):
        mask = self.transformer.generate_square_subsequent_mask(tgt.shape[1])
        h = self.transformer(
            self.embed_at(src), self.embed_at(tgt), tgt_mask=mask, tgt_is_causal=True
        )
        return self.out(h)

    @torch.no_grad()
    def generate(self, src, new_tokens, start):
        memory = self.transformer.encoder(self.embed_at(src))
        ids = torch.full((src.shape[0], 1), start)
        for _ in range(new_tokens):
            mask = self.transformer.generate_square_subsequent_mask(ids.shape[1])
            h = self.transformer.decoder(
                self.embed_at(ids), memory, tgt_mask=mask, tgt_is_causal=True
            )
            ids = torch.cat([ids, self.out(h[:, -1]).argmax(-1, keepdim=True)], 1)
        return ids


def matmul_floor(model, rows, new_tokens):
    """Only the linear layers one decoding step must run (self-attention q/k/v/out,
    cross-attention q/out, feed-forward, output layer), new_tokens times: no attention, no
    norms, no search. Every implementation of this model pays at least this per token."""
    x = torch.randn(rows, 1, D)
    with torch.no_grad():
        for _ in range(new_tokens):
            h = x
            for layer in model.decoder_layers:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    h = getattr(layer.self_attn, proj)(h)
                h = layer.cross_attn.out_proj(layer.cross_attn.q_proj(h))
                h = layer.ffn.fc2(layer.ffn.fc1(h))
            model.lm_head(h)


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_generation(hf, ours, rerun, cases, new_tokens, repeats):
    rows = []
    start = ours.config.decoder_start_token_id
    for B, beams in cases:
        src = torch.randint(1, VOCAB - 1, (B, SRC), generator=torch.Generator().manual_seed(B))
        mask = torch.ones(B, SRC, dtype=torch.bool)
        kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams)
        with torch.no_grad():
            expected = hf.generate(src, attention_mask=mask.long(), do_sample=False, **kw)
        got = ours.generate(src, src_mask=mask, **kw)
        same = torch.equal(got, expected)
        candidates = {
            "transformers generate (cache)": lambda src=src, mask=mask, kw=kw: hf.generate(
                src, attention_mask=mask.long(), do_sample=False, **kw
            ),
            "xattn generate": lambda src=src, mask=mask, kw=kw: ours.generate(
                src, src_mask=mask, **kw
            ),
        }
        if beams == 1:
            candidates["nn.Transformer re-run loop"] = lambda src=src: rerun.generate(
                src, new_tokens, start
            )
        candidates["floor: the step's matmuls alone"] = lambda rows=B * beams: matmul_floor(
            ours, rows, new_tokens
        )
        times = {}
        with torch.no_grad():
            for _ in range(repeats):  # interleaved rounds
                for name, fn in candidates.items():
                    times.setdefault(name, []).append(median_time(fn, 1))
        base = statistics.median(times["transformers generate (cache)"])
        for name in candidates:
            t = statistics.median(times[name])
            tokens = B * new_tokens  # new tokens of the returned sequences
            label = f"B{B} {'greedy' if beams == 1 else f'beam {beams}'}"
            check = ("yes" if same else "NO") if name == "xattn generate" else ""
            rows.append([label, name, f"{tokens / t:,.0f}", f"{base / t:.2f}x", check])
    print_table(
        f"Generation: {SRC} source tokens, {new_tokens} new tokens, d_model {D}, "
        f"{LAYERS}+{LAYERS} layers, vocab {VOCAB}, {torch.get_num_threads()} threads",
        [
            "case",
            "implementation",
            "new tokens/s",
            "speed-up vs transformers",
            "same tokens as transformers",
        ],
        rows,
    )


def cross_kv_memory(hf, ours, B=8, beams=4):
    """Bytes of cross-attention keys and values held per source during beam search."""
    src = torch.randint(1, VOCAB - 1, (B, SRC))
    with torch.no_grad():
        memory = ours.encode(src)
        state = ours.start_decoding(memory, rows_per_source=beams, max_length=8)
        ours_bytes = sum(m.key.nbytes + m.value.nbytes for m in state.memories) / B
        # transformers repeats the encoder output per beam, then caches its projections
        enc = hf.get_encoder()(input_ids=src.repeat_interleave(beams, 0))
        start = torch.full((B * beams, 1), hf.config.decoder_start_token_id)
        out = hf(encoder_outputs=enc, decoder_input_ids=start, use_cache=True)
        cache = getattr(out, "past_key_values", None) or getattr(out, "cache", None)
        cross = cache.cross_attention_cache
        theirs_bytes = 0
        for layer in cross.layers:
            theirs_bytes += layer.keys.nbytes + layer.values.nbytes
        theirs_bytes /= B
    print_table(
        f"Cross-attention K/V held per source, beam search with {beams} beams, S = {SRC}",
        ["implementation", "bytes per source", "ratio"],
        [
            ["transformers", f"{theirs_bytes:,.0f}", "1.00"],
            ["xattn", f"{ours_bytes:,.0f}", f"{ours_bytes / theirs_bytes:.2f}"],
        ],
    )


def bench_training(ours_config, repeats, B=32, T=32):
    """Tokens/s of one training step (forward, backward, AdamW) at the same size."""
    torch.manual_seed(0)
    ours = xattn.EncoderDecoder(ours_config).train()
    rerun = RerunTransformer().train()
    src = torch.randint(1, VOCAB - 1, (B, SRC))
    tgt = torch.randint(1, VOCAB - 1, (B, T + 1))
    loss_fn = nn.CrossEntropyLoss()
    steps = {}
    for name, model in (("nn.Transformer", rerun), ("xattn EncoderDecoder", ours)):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            logits = model(src, tgt[:, :-1])
            loss = loss_fn(logits.reshape(-1, VOCAB), tgt[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[name] = step
    times = {}
    for _ in range(repeats):
        for name, step in steps.items():
            times.setdefault(name, []).append(median_time(step, 1))
    base = statistics.median(times["nn.Transformer"])
    rows = []
    for name in steps:
        t = statistics.median(times[name])
        rows.append([name, f"{B * T / t:,.0f}", f"{base / t:.2f}x"])
    print_table(
        f"Training step (forward, backward, AdamW), B {B}, source {SRC}, target {T}",
        ["model", "target tokens/s", "speed-up vs nn.Transformer"],
        rows,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="B = 1 greedy, 8 tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    hf, ours = build_models()
    rerun = RerunTransformer().eval()
    if args.quick:
        bench_generation(hf, ours, rerun, [(1, 1)], 8, 1)
        return 0
    bench_generation(hf, ours, rerun, [(1, 1), (8, 1), (1, 4), (8, 4)], 48, args.repeats)
    cross_kv_memory(hf, ours)
    bench_training(ours.config.replace(dropout=0.1), args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
