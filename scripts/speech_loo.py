"""Leave-one-speaker-out for the speech task: one training per held-out speaker of the Free
Spoken Digit Dataset (the other three train), each scored on that speaker's test utterances,
on unseen synthetic voices and on the five people from outside FSDD (xattn/data/outside,
--outside utterances each, their clips trimmed): exact match, WER, and how often the
alignment head's peak lands inside the spoken word, per kind of voice. This is how
docs/results.md measures the speech recipe and each change to it.

With --jobs above one, each training runs in a process of its own, --jobs at once, each with
--threads threads (default one): on two cores, four single-threaded trainings at once take
about a quarter of the time of four in a row with two threads each. The thread count
changes the order of the sums and so the model: compare recipes measured with the same
--threads.

    python scripts/speech_loo.py OUT_DIR [--speakers george ...] [--jobs 4] [--threads 1]
        [--train 10000] [--valid 300] [--test 2000] [--outside 300] [--steps N]
        [--data '{"recorded_share": 0.5}'] [--model '{"dropout": 0.1}'] [--recipe '{"lr": 3e-3}']

`--speakers none` trains on all four FSDD speakers (its real test utterances are their takes
45-49: heard people, takes not trained on); only the outside voices then test unheard people.
--data changes make_utterances' arguments, --model the model's configuration and --recipe the
training recipe (SpeechTask.recipe); each speaker's model (with its alignment head and
word-timing settings, ready for `xattn transcribe --word-timestamps` and
scripts/transcribe_eval.py), metrics and result.json land in OUT_DIR/SPEAKER.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import torch

from xattn.alignment import keep_alignment_heads
from xattn.data.speech import REAL_SPEAKERS, make_utterances
from xattn.model import ModelConfig
from xattn.tasks.run import measure_alignment, scores_per_kind, train_task
from xattn.tasks.speech import SpeechTask
from xattn.training.evaluation import evaluate

KINDS = ("real", "synthetic", "outside")
ALL_TRAIN = "none"  # --speakers none: no speaker held out, all four train


def recipe(steps: int | None, changes: dict):
    """SpeechTask.recipe over `steps` (the warmup keeping its share), then `changes`."""
    return dataclasses.replace(SpeechTask.recipe.for_steps(steps), **changes)


def held_out(speaker: str, out: Path, sizes: dict, threads: int, changes: dict) -> dict:
    """Train with `speaker` held out and score the model; writes out/result.json."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    held = None if speaker == ALL_TRAIN else speaker
    splits = make_utterances(**sizes, seed=0, test_speaker=held, **changes["data"])
    config = recipe(changes["steps"], changes["recipe"])
    model, task, _ = train_task(
        SpeechTask, splits, out, config, progress=False, model_overrides=changes["model"] or None
    )
    test, hyps = splits["test"], []
    evaluate(model, task, test, dataclasses.replace(config, eval_size=len(test)), hypotheses=hyps)
    report = measure_alignment(model, task, splits["valid"], test, config.trained_head)
    keep_alignment_heads(model, report["alignment_heads"], out / "model", **task.timing)
    result = {"speaker": speaker, **changes, "steps": config.steps, "threads": threads}
    for kind, scores in scores_per_kind(task, test, hyps).items():
        result[kind] = {
            "utterances": scores["examples"],
            "voices": sorted({e.voice for e in test if task.kind(e) == kind}),
            "exact": scores["exact"],
            "wer": scores["wer"],
            "peak": report[f"alignment_heads_hit_rate_{kind}"],
        }
    result["seconds"] = time.perf_counter() - start
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def in_process_of_its_own(args: argparse.Namespace, speaker: str) -> tuple[dict | None, str]:
    """(result, "") of this script run for one speaker in a new process; (None, its
    stderr) when it fails."""
    argv = [sys.executable, __file__, str(args.out), "--speakers", speaker, "--jobs", "1"]
    for flag in ("threads", "train", "valid", "test", "outside", "steps"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    for flag in ("data", "model", "recipe"):
        argv += [f"--{flag}", json.dumps(getattr(args, flag))]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        return None, done.stderr.strip()
    return json.loads((args.out / speaker / "result.json").read_text()), ""


def table(results: list[dict]) -> list[str]:
    """Markdown rows: one per held-out speaker and their mean (the outside voices' columns
    when every result has them)."""
    kinds = [k for k in KINDS if all(k in r for r in results)]
    scores = [
        (k, key) for k in kinds for key in ("exact", "wer") if (k, key) != ("synthetic", "wer")
    ]
    names = [f"{kind}: {'WER' if key == 'wer' else key}" for kind, key in scores]
    names += [f"peak, {kind}" for kind in kinds]
    lines = ["| held-out speaker | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(name: str, values: list[float]) -> str:
        return f"| {name} | " + " | ".join(f"{v:.1%}" for v in values) + " |"

    cells = [[r[k][key] for k, key in scores] + [r[k]["peak"] for k in kinds] for r in results]
    lines += [row(r["speaker"], c) for r, c in zip(results, cells, strict=True)]
    if len(results) > 1:
        lines.append(row("mean", [sum(col) / len(col) for col in zip(*cells, strict=True)]))
    return lines


def json_object(text: str) -> dict:
    """A JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--speakers", nargs="+", default=list(REAL_SPEAKERS))
    parser.add_argument("--jobs", type=int, default=4, help="trainings at once")
    parser.add_argument("--threads", type=int, default=1, help="threads per training")
    parser.add_argument("--train", type=int, default=SpeechTask.demo_sizes["train"])
    parser.add_argument("--valid", type=int, default=SpeechTask.demo_sizes["valid"])
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--outside", type=int, default=300, help="utterances per outside voice")
    parser.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    parser.add_argument("--data", type=json_object, default={}, help="make_utterances changes")
    parser.add_argument("--model", type=json_object, default={}, help="model config changes")
    parser.add_argument("--recipe", type=json_object, default={}, help="recipe changes")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.speakers) - {*REAL_SPEAKERS, ALL_TRAIN})
    if unknown:
        parser.error(f"--speakers: {unknown} not among {[*REAL_SPEAKERS, ALL_TRAIN]}")
    fixed = {"train", "valid", "test", "outside", "seed", "test_speaker"}  # flags and split
    accepted = {
        "--data": set(inspect.signature(make_utterances).parameters) - fixed,
        "--model": {f.name for f in dataclasses.fields(ModelConfig)},
    }
    for flag, given in (("--data", args.data), ("--model", args.model)):
        wrong = sorted(set(given) - accepted[flag])
        if wrong:
            parser.error(f"{flag}: cannot change {wrong}; one of {sorted(accepted[flag])}")
    try:
        recipe(args.steps, args.recipe)
    except (TypeError, ValueError) as error:
        parser.error(f"--steps/--recipe: {error}")
    changes = {"data": args.data, "model": args.model, "recipe": args.recipe, "steps": args.steps}
    sizes = {"train": args.train, "valid": args.valid, "test": args.test, "outside": args.outside}
    if args.jobs <= 1 or len(args.speakers) == 1:
        results = [held_out(s, args.out / s, sizes, args.threads, changes) for s in args.speakers]
    else:  # a fresh interpreter per training, --jobs at once
        with ThreadPoolExecutor(args.jobs) as pool:
            done = list(pool.map(lambda s: in_process_of_its_own(args, s), args.speakers))
        failed = [(s, error) for s, (_, error) in zip(args.speakers, done, strict=True) if error]
        for speaker, error in failed:
            print(f"the training with {speaker} held out failed:\n{error}", file=sys.stderr)
        if failed:
            return 1
        results = [result for result, _ in done]
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
