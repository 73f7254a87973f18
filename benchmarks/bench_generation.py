"""Generation and training speed of xattn's EncoderDecoder against its peers, side by side.

    python benchmarks/bench_generation.py           # the table in the README (a few minutes)
    python benchmarks/bench_generation.py --quick   # B1 greedy, 8 tokens, 1+1 layers, a check
    python benchmarks/bench_generation.py --device cuda --dtype bfloat16   # on a GPU

A Marian-sized model (d_model 256, 3 + 3 layers, 4 heads, ffn 1024, vocab 8000) is built
with transformers (random weights), saved with a tokenizer of 8,000 stand-in tokens, and
loaded into xattn with from_hf and into CTranslate2 with its converter, so all run the same
weights; xattn's tokens (eager and generate(compile=True), whose first call per case
compiles and is timed apart) are checked against transformers', and the int8 copy's (eager
and compiled) agreement with them is reported. Every row generates exactly the same number
of new tokens (min_new_tokens = max_new_tokens). Peers:
- transformers' generate (cache on);
- CTranslate2 float32 and int8 (`pip install 'xattn[bench]'`; rows left out without it),
  each Translator timed in a process that holds nothing else (ct2_worker.py), at one thread
  and at --threads; the ratios are to the faster of the two;
- an nn.Transformer model of the same size that re-runs the decoder over the whole prefix
  at every step (what a model without a cache does).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import resource
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
from xattn.training.losses import token_cross_entropy

D, LAYERS, HEADS, FFN, VOCAB, SRC = 256, 3, 4, 1024, 8000, 32


def write_tokenizer(folder: Path) -> dict[str, int]:
    """A Marian tokenizer of VOCAB stand-in tokens (CTranslate2's converter reads the
    vocabulary from it); tiny SentencePiece models, as the tokenizer files need them."""
    import io

    import sentencepiece as spm
    import transformers

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a b c d e f g h i j k l m n o p"] * 50),
        model_writer=model,
        vocab_size=20,
        minloglevel=2,
        character_coverage=1.0,
    )
    for name in ("source.spm", "target.spm"):
        (folder / name).write_bytes(model.getvalue())
    specials = {0: "</s>", 1: "<unk>", VOCAB - 1: "<pad>"}
    vocab = {specials.get(i, f"t{i}"): i for i in range(VOCAB)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    transformers.MarianTokenizer(
        source_spm=str(folder / "source.spm"),
        target_spm=str(folder / "target.spm"),
        vocab=str(folder / "vocab.json"),
    ).save_pretrained(folder)
    return vocab


class EngineProcess:
    """CTranslate2 on the same weights, float32 and int8, at one thread and at `threads`,
    each Translator timed in a process of its own that imports nothing else
    (ct2_worker.py): `seconds(kind, threads, src, new_tokens, beams)` times one call there,
    after a warm-up call, and returns its seconds. Both thread counts are timed because
    CTranslate2's second thread can cost more than it gives (docs/benchmarks.md)."""

    def __init__(self, folder: Path, vocab: dict[str, int], threads: int):
        import subprocess

        import ctranslate2

        self.tokens = {i: t for t, i in vocab.items()}
        self.thread_counts = sorted({1, threads})
        self.workers = {}
        for kind in ("float32", "int8"):
            out = tempfile.mkdtemp()
            converter = ctranslate2.converters.TransformersConverter(str(folder))
            converter.convert(out, quantization=None if kind == "float32" else kind, force=True)
            for count in self.thread_counts:
                worker = subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).with_name("ct2_worker.py")),
                        out,
                        kind,
                        str(count),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                if worker.stdout.readline().strip() != "ready":
                    raise RuntimeError(
                        f"the CTranslate2 {kind} worker ({count} threads) did not start"
                    )
                self.workers[kind, count] = worker

    def seconds(self, kind: str, threads: int, src, new_tokens: int, beams: int) -> float:
        batch = [[self.tokens[int(i)] for i in row] for row in src]
        worker = self.workers[kind, threads]
        request = {"batch": batch, "new_tokens": new_tokens, "beams": beams}
        worker.stdin.write(json.dumps(request) + "\n")
        worker.stdin.flush()
        return float(worker.stdout.readline())

    def close(self) -> None:
        for worker in self.workers.values():
            worker.stdin.close()
            worker.wait()


def ct2_name(kind: str, threads: int) -> str:
    return f"CTranslate2 {kind}, {threads} thread{'s' if threads > 1 else ''}"


def ctranslate2_engines(folder: Path, vocab: dict[str, int]) -> EngineProcess | None:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        print("(CTranslate2 rows left out: pip install 'xattn[bench]')")
        return None
    return EngineProcess(folder, vocab, torch.get_num_threads())


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
    folder = Path(tempfile.mkdtemp())
    hf.save_pretrained(folder)
    vocab = write_tokenizer(folder)
    ours = xattn.EncoderDecoder.from_hf(folder)
    return hf, ours, folder, vocab


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


class LinearLayersAlone(nn.Module):
    """The training floor: the linear layers of the model (same shapes, the embedding tied
    to the output layer as in xattn's), a residual add around each block, and nothing else:
    no attention, norms, activations or dropout. A model that runs these layers unchanged
    cannot train faster."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        nn.init.normal_(self.embed.weight, std=D**-0.5)  # as xattn's: logits of unit size

        def encoder_layer():
            return [nn.Linear(D, 3 * D), nn.Linear(D, D), nn.Linear(D, FFN), nn.Linear(FFN, D)]

        def decoder_layer():
            return [
                *(nn.Linear(D, 3 * D), nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, 2 * D)),
                *(nn.Linear(D, D), nn.Linear(D, FFN), nn.Linear(FFN, D)),
            ]

        self.encoder = nn.ModuleList(nn.ModuleList(encoder_layer()) for _ in range(LAYERS))
        self.decoder = nn.ModuleList(nn.ModuleList(decoder_layer()) for _ in range(LAYERS))

    def forward(self, src, tgt):
        memory = self.embed(src)
        for qkv, out, fc1, fc2 in self.encoder:
            memory = out(qkv(memory)[..., :D]) + memory
            memory = fc2(fc1(memory)) + memory
        x = self.embed(tgt)
        for qkv, out, cross_q, cross_kv, cross_out, fc1, fc2 in self.decoder:
            x = out(qkv(x)[..., :D]) + x
            x = cross_out(cross_q(x) + cross_kv(memory)[..., :D]) + x
            x = fc2(fc1(x)) + x
        return nn.functional.linear(x, self.embed.weight)


def matmul_floor(model, rows, new_tokens):
    """Only the linear layers one decoding step must run (self-attention q/k/v/out,
    cross-attention q/out, feed-forward, output layer), new_tokens times: no attention, no
    norms, no search, through plain nn.Linear (row-major weights). An implementation with
    packed or int8 weights can beat it; one that runs these layers unchanged cannot."""
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


class MinimalStep:
    """The fewest eager PyTorch calls a greedy decoding step of this model size can make,
    written by hand: q/k/v in one addmm, residual adds folded into addmm, the cache written
    in place, SDPA, the output layer from oneDNN's packed layout when present; no checks,
    no search beyond argmax. Its own random weights of the same shapes (pre-norm, ReLU), so
    its tokens mean nothing: it is the floor of eager PyTorch's per-call cost, not a model."""

    def __init__(self, rows: int, new_tokens: int):
        torch.manual_seed(0)
        self.rows, self.new_tokens, hd = rows, new_tokens, D // HEADS

        def w(i, o):
            return torch.randn(i, o) / i**0.5

        ones, zeros = torch.ones(D), torch.zeros(D)
        self.layers = [
            dict(
                qkv=w(D, 3 * D), out=w(D, D), q=w(D, D), cout=w(D, D), fc1=w(D, FFN),
                fc2=w(FFN, D), b3=torch.zeros(3 * D), b1=torch.zeros(FFN), ln=(ones, zeros),
                ck=torch.randn(rows, HEADS, SRC, hd), cv=torch.randn(rows, HEADS, SRC, hd),
                sk=torch.zeros(rows, HEADS, new_tokens, hd),
                sv=torch.zeros(rows, HEADS, new_tokens, hd),
            )
            for _ in range(LAYERS)
        ]  # fmt: skip
        self.embed, self.pos = torch.randn(VOCAB, D), torch.randn(new_tokens, D)
        head = torch.randn(VOCAB, D) / D**0.5
        if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            packed = torch.ops.mkldnn._reorder_linear_weight(head, None)
            self.head = lambda x: torch.ops.mkldnn._linear_pointwise(
                x, packed, None, "none", [], ""
            )
        else:
            self.head = lambda x: x @ head.T

    def step(self, tokens, t):
        rows, hd, ln = self.rows, D // HEADS, nn.functional.layer_norm
        sdpa = nn.functional.scaled_dot_product_attention
        x = self.embed[tokens] + self.pos[t]
        for p in self.layers:
            qkv = torch.addmm(p["b3"], ln(x, (D,), *p["ln"]), p["qkv"]).view(rows, 3, HEADS, 1, hd)
            p["sk"][:, :, t] = qkv[:, 1, :, 0]
            p["sv"][:, :, t] = qkv[:, 2, :, 0]
            a = sdpa(qkv[:, 0], p["sk"][:, :, : t + 1], p["sv"][:, :, : t + 1])
            x = torch.addmm(x, a.view(rows, D), p["out"])
            q = torch.mm(ln(x, (D,), *p["ln"]), p["q"]).view(rows, HEADS, 1, hd)
            x = torch.addmm(x, sdpa(q, p["ck"], p["cv"]).view(rows, D), p["cout"])
            h = torch.addmm(p["b1"], ln(x, (D,), *p["ln"]), p["fc1"]).relu_()
            x = torch.addmm(x, h, p["fc2"])
        return self.head(ln(x, (D,), *self.layers[-1]["ln"])).argmax(-1)

    def __call__(self):
        tokens = torch.zeros(self.rows, dtype=torch.long)
        for t in range(self.new_tokens):
            tokens = self.step(tokens, t)


class CompiledFloor:
    """The floor of generate(compile=True): the stepper generate searches with (the
    encoder, the cross-attention memories, the caches: EncoderDecoder.stepper), then its
    compiled graph alone for the new tokens, with nothing between the calls but the
    position: greedy search's graph of several steps (its tokens chosen inside, under
    the search's own bans and forced tokens), beam search's one-step graph; no search, no
    bookkeeping. generate(compile=True) cannot be faster than this unless its graph is."""

    def __init__(self, model, src, mask, beams: int, new_tokens: int):
        from xattn.generation.processors import ban_table, build_processors
        from xattn.model.compiled import compiled_greedy, compiled_step
        from xattn.model.transformer import generation_settings

        self.model, self.src, self.mask, self.beams = model, src, mask, beams
        self.config = generation_settings(
            model.generation_config, new_tokens, beams, {"min_new_tokens": new_tokens}
        )
        self.new_tokens = new_tokens
        rows = src.shape[0] * beams
        self.position = torch.zeros(1, dtype=torch.long)
        if beams == 1:
            self.graph = compiled_greedy(model)
            procs = build_processors(self.config, 1 + new_tokens)
            self.ids = torch.zeros(rows, new_tokens + self.graph.steps, dtype=torch.long)
            self.unfinished = torch.ones(rows, dtype=torch.bool)
            eos = torch.zeros(VOCAB, dtype=torch.bool)
            eos[self.config.eos_token_id] = True
            self.extra = (
                ban_table(procs, VOCAB, torch.device("cpu")),
                eos,
                torch.tensor(self.config.pad_token_id),
            )
            self.stride = self.graph.steps
        else:
            self.graph, self.stride = compiled_step(model), 1

    def __call__(self):
        stepper, start, _ = self.model.stepper(self.src, self.mask, self.config, compile=True)
        state = stepper.state
        self.position.fill_(state.length)
        if self.beams == 1:  # the graph moves the position and writes its tokens into ids
            self.ids[:, : start.shape[1]] = start
            self.unfinished.fill_(True)
            for _ in range(0, self.new_tokens, self.stride):
                args = (self.unfinished, *self.extra)
                self.graph(self.ids, self.position, state.memories, state.caches, *args)
            return
        tokens = start[:, -1].clone()
        for t in range(self.new_tokens):
            self.position.fill_(state.length + t)
            self.graph(tokens, self.position, state.memories, state.caches)


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_generation(hf, ours, rerun, cases, new_tokens, repeats, engines=None):
    """Tokens/s of every implementation on each (B, beams) case; CTranslate2 (engines, an
    EngineProcess) in a process of its own."""
    rows, warmups, warmups8 = [], [], []
    start = ours.config.decoder_start_token_id
    int8 = ours.quantize("int8")
    for B, beams in cases:
        src = torch.randint(1, VOCAB - 1, (B, SRC), generator=torch.Generator().manual_seed(B))
        mask = torch.ones(B, SRC, dtype=torch.bool)
        kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams)
        with torch.no_grad():
            expected = hf.generate(src, attention_mask=mask.long(), do_sample=False, **kw)
        got = ours.generate(src, src_mask=mask, **kw)
        same = "yes" if torch.equal(got, expected) else "NO"
        started = time.perf_counter()
        got_compiled = ours.generate(src, src_mask=mask, compile=True, **kw)
        warmups.append(f"{label(B, beams)} {time.perf_counter() - started:.1f} s")
        same_compiled = "yes" if torch.equal(got_compiled, expected) else "NO"
        got8 = int8.generate(src, src_mask=mask, **kw)
        started = time.perf_counter()
        got8_compiled = int8.generate(src, src_mask=mask, compile=True, **kw)
        warmups8.append(f"{label(B, beams)} {time.perf_counter() - started:.1f} s")
        agree, agree_compiled = (
            (got == expected).float().mean().item() if got.shape == expected.shape else 0.0
            for got in (got8, got8_compiled)
        )
        candidates = {
            "transformers generate (cache)": lambda src=src, mask=mask, kw=kw: hf.generate(
                src, attention_mask=mask.long(), do_sample=False, **kw
            ),
            "xattn generate": lambda src=src, mask=mask, kw=kw: ours.generate(
                src, src_mask=mask, **kw
            ),
            "xattn generate (compile=True)": lambda src=src, mask=mask, kw=kw: ours.generate(
                src, src_mask=mask, compile=True, **kw
            ),
            "xattn int8 (quantize)": lambda src=src, mask=mask, kw=kw: int8.generate(
                src, src_mask=mask, **kw
            ),
            "xattn int8 (quantize, compile=True)": lambda src=src, mask=mask, kw=kw: int8.generate(
                src, src_mask=mask, compile=True, **kw
            ),
        }
        if beams == 1:
            candidates["nn.Transformer re-run loop"] = lambda src=src: rerun.generate(
                src, new_tokens, start
            )
            candidates["a minimal eager step, by hand"] = MinimalStep(B, new_tokens)
        candidates["xattn compile=True floor: no search"] = CompiledFloor(
            ours, src, mask, beams, new_tokens
        )
        candidates["the step's matmuls alone, nn.Linear"] = lambda rows=B * beams: matmul_floor(
            ours, rows, new_tokens
        )
        times = {}
        with torch.no_grad():
            for _ in range(repeats):  # interleaved rounds, each call after its own warm-up
                for name, fn in candidates.items():
                    times.setdefault(name, []).append(median_time(fn, 1))
                for kind in ("float32", "int8") if engines else ():
                    for count in engines.thread_counts:
                        seconds = engines.seconds(kind, count, src, new_tokens, beams)
                        times.setdefault(ct2_name(kind, count), []).append(seconds)
        candidates = {**candidates, **{name: None for name in times if name not in candidates}}
        base = statistics.median(times["transformers generate (cache)"])
        fastest = {}  # CTranslate2 at its faster thread count: the reference of the ratios
        for kind in ("float32", "int8") if engines else ():
            counts = engines.thread_counts
            fastest[kind] = min(statistics.median(times[ct2_name(kind, n)]) for n in counts)
        for name in candidates:
            t = statistics.median(times[name])
            tokens = B * new_tokens  # new tokens of the returned sequences
            checks = {
                "xattn generate": same,
                "xattn generate (compile=True)": same_compiled,
                "xattn int8 (quantize)": f"{agree:.0%} of tokens",
                "xattn int8 (quantize, compile=True)": f"{agree_compiled:.0%} of tokens",
            }
            check = checks.get(name, "")
            reference = fastest.get("int8" if "int8" in name else "float32")
            rows.append(
                [
                    label(B, beams),
                    name,
                    f"{tokens / t:,.0f}",
                    f"{base / t:.2f}x",
                    f"{reference / t:.2f}x" if engines else "",
                    check,
                ]
            )
    print_table(
        f"Generation: {SRC} source tokens, {new_tokens} new tokens, d_model {D}, "
        f"{LAYERS}+{LAYERS} layers, vocab {VOCAB}, {torch.get_num_threads()} threads",
        [
            "case",
            "implementation",
            "new tokens/s",
            "vs transformers",
            "vs CTranslate2, faster thread count (int8 rows: int8)",
            "same tokens as transformers",
        ],
        rows,
    )
    print(
        "generate(compile=True), the first call of each case (compiling; from the second "
        "shape on, with symbolic sizes): "
        + ", ".join(warmups)
        + "; of the int8 copy: "
        + ", ".join(warmups8)
    )


def label(B: int, beams: int) -> str:
    return f"B{B} {'greedy' if beams == 1 else f'beam {beams}'}"


def bench_accelerator(hf, ours, cases, new_tokens, repeats, device, dtype):
    """Tokens/s of transformers and xattn on an accelerator in dtype, side by side (the CPU
    peers and the int8 copy are CPU-only); tokens compared as a share, since rounding in
    bfloat16 can turn a near tie either way."""
    hf, ours = hf.to(device, dtype), ours.to(device, dtype)

    def timed(fn):
        def run():
            fn()
            torch.cuda.synchronize(device)

        return median_time(run, 1)

    rows = []
    for B, beams in cases:
        src = torch.randint(1, VOCAB - 1, (B, SRC), device=device)
        mask = torch.ones(B, SRC, dtype=torch.bool, device=device)
        kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams)

        def run_hf(src=src, mask=mask, kw=kw):
            return hf.generate(src, attention_mask=mask.long(), do_sample=False, **kw)

        def run_ours(src=src, mask=mask, kw=kw, compile=False):
            return ours.generate(src, src_mask=mask, compile=compile, **kw)

        def run_compiled(src=src, mask=mask, kw=kw):
            return run_ours(src, mask, kw, compile=True)

        with torch.no_grad():
            expected, got, got_compiled = run_hf(), run_ours(), run_compiled()
            theirs, mine, compiled = [], [], []
            for _ in range(repeats):  # interleaved, each call after its own warm-up
                theirs.append(timed(run_hf))
                mine.append(timed(run_ours))
                compiled.append(timed(run_compiled))
        base = statistics.median(theirs)
        row = [label(B, beams), f"{B * new_tokens / base:,.0f}"]
        for times, tokens in ((mine, got), (compiled, got_compiled)):
            t = statistics.median(times)
            same_shape = tokens.shape == expected.shape
            agree = (tokens == expected).float().mean().item() if same_shape else 0.0
            row += [f"{B * new_tokens / t:,.0f}", f"{base / t:.2f}x", f"{agree:.0%}"]
        rows.append(row)
    print_table(
        f"Generation on {torch.cuda.get_device_name(device)}, {dtype}: {SRC} source tokens, "
        f"{new_tokens} new tokens",
        [
            "case",
            "transformers tokens/s",
            "xattn tokens/s",
            "xattn vs transformers",
            "same",
            "xattn compile=True tokens/s",
            "compiled vs transformers",
            "same (compiled)",
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


def minor_faults() -> int:
    """Page faults of this process so far that the kernel served without reading a disk
    (a page mapped for the first time: fresh memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def keep_freed_memory() -> bool:
    """glibc's malloc set to keep what is freed, as a caching allocator would (blocks up to
    32 MB, glibc's cap, from its heap; the heap never given back): by default glibc returns
    the top of its heap to the system whenever more than twice the largest block freed so
    far lies free there, and the next training step maps those pages again, a page fault
    per 4 KiB. Whether it applied (glibc only)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(
        libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
    )


def bench_training(ours_config, repeats, allocator: str, B=32, T=32):
    """Tokens/s of one training step (forward, loss, backward, AdamW) at the same size,
    every model with PyTorch's fused AdamW (xattn's trainer uses it; the per-tensor loop
    that is the CPU default took ~30 ms of each step). nn.Transformer's loss is
    nn.CrossEntropyLoss, xattn's the one its trainer computes (training.losses), and xattn
    is also timed with nn.CrossEntropyLoss (the model's share); the floor's loss is
    xattn's. The page faults of each timed step are counted: at glibc's defaults a step
    of this size maps tens of megabytes afresh, 1-1.5 us a 4 KiB page on the machines
    measured, and how many depends on the model's pattern of allocations more than on its
    arithmetic (docs/benchmarks.md)."""
    torch.manual_seed(0)
    ours = xattn.EncoderDecoder(ours_config).train()
    rerun = RerunTransformer().train()
    floor = LinearLayersAlone().train()
    src = torch.randint(1, VOCAB - 1, (B, SRC))
    tgt = torch.randint(1, VOCAB - 1, (B, T + 1))
    targets = tgt[:, 1:].reshape(-1)
    torch_loss = nn.CrossEntropyLoss()

    def xattn_loss(logits, targets):
        return token_cross_entropy(logits, targets) / len(targets)

    steps = {}
    models = [
        ("nn.Transformer", rerun, torch_loss),
        ("xattn EncoderDecoder", ours, xattn_loss),
        ("xattn EncoderDecoder, nn.CrossEntropyLoss", ours, torch_loss),
        ("the linear layers alone", floor, xattn_loss),
    ]
    for name, model, loss_fn in models:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as xattn trains

        def step(model=model, opt=opt, loss_fn=loss_fn):
            logits = model(src, tgt[:, :-1])
            loss = loss_fn(logits.reshape(-1, VOCAB), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[name] = step
    times, faults = {}, {}
    for _ in range(repeats):
        for name, step in steps.items():
            step()  # warm-up
            before, started = minor_faults(), time.perf_counter()
            step()
            times.setdefault(name, []).append(time.perf_counter() - started)
            faults.setdefault(name, []).append(minor_faults() - before)
    base = statistics.median(times["nn.Transformer"])
    rows = []
    for name in steps:
        t = statistics.median(times[name])
        fault_count = f"{statistics.median(faults[name]):,.0f}"
        rows.append([name, f"{B * T / t:,.0f}", f"{base / t:.2f}x", fault_count])
    print_table(
        f"Training step (forward, loss, backward, AdamW), B {B}, source {SRC}, target {T}, "
        f"{allocator}",
        ["model", "target tokens/s", "speed-up vs nn.Transformer", "page faults a step"],
        rows,
    )


def training_tables(config, repeats, **sizes) -> None:
    """The training table at malloc's settings as the process started, then, where glibc
    can be told so, with freed memory kept for the rest of the process."""
    config = config.replace(dropout=0.1)
    bench_training(config, repeats, "malloc as the process started", **sizes)
    if keep_freed_memory():
        bench_training(config, repeats, "malloc keeping freed memory", **sizes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="B = 1 greedy, 8 tokens, 1 + 1 layers, compiled without timing kernels, and a "
        "training step at B 4 (a check)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu (all peers) or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    if args.quick:  # every model of the run is built with LAYERS; compiling takes less
        global LAYERS
        LAYERS = 1
        from xattn.model import compiled  # freezing alone: no max-autotune (a check, not timing)

        compiled.compile_options = lambda device: {"freezing": True, "cpp.weight_prepack": False}
    torch.set_num_threads(args.threads)
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        parser.error(f"--device {args.device}: no such device here (cpu, or cuda with a GPU)")
    if args.device == "cpu" and args.dtype != "float32":
        parser.error("--dtype bfloat16 is for --device cuda (the CPU rows run float32 and int8)")
    hf, ours, folder, vocab = build_models()
    if args.device != "cpu":
        cases = [(1, 1), (8, 1), (8, 4)]
        dtype = getattr(torch, args.dtype)
        bench_accelerator(hf, ours, cases, 48, args.repeats, torch.device(args.device), dtype)
        return 0
    rerun = RerunTransformer().eval()
    if args.quick:
        bench_generation(hf, ours, rerun, [(1, 1)], 8, 1)
        training_tables(ours.config, 1, B=4)
        return 0
    engines = ctranslate2_engines(folder, vocab)
    cases = [(1, 1), (8, 1), (8, 4)]
    try:
        bench_generation(hf, ours, rerun, cases, 48, args.repeats, engines)
    finally:
        if engines is not None:
            engines.close()
    cross_kv_memory(hf, ours)
    training_tables(ours.config, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
