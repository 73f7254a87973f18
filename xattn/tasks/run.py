"""One train driver and one demo driver for every task.

- `train_task`: the task's tokenizer and model (or the latest checkpoint's, to resume),
  training, the final model saved to run_dir/model.
- `run_demo`: the data, training, the test scores, where cross-attention looks (the mean of
  every head and the alignment heads: chosen on the validation split, or the head the
  recipe trains to align), pictures of held-out examples and an HTML page, summary.json.
- `draw_example`: the task's picture and the layers x heads grid of one example.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..alignment import (
    HitRates,
    alignment_heads,
    attention_maps,
    choose_timing,
    describe_alignment_heads,
    head_mean,
    keep_alignment_heads,
    pharaoh,
    timing_scores,
    which_heads,
)
from ..model import EncoderDecoder
from ..training import TrainConfig, evaluate, predict, train
from ..training.batching import pad_sources
from .base import Task

__all__ = [
    "demo_splits",
    "draw_example",
    "run_demo",
    "scores_per_kind",
    "task_for_model",
    "train_task",
]

ALIGNMENT_EXAMPLES = 300  # validation and test examples the alignment figures are measured on
DRAWN_EXAMPLES = 8


def task_for_model(model: EncoderDecoder) -> Task:
    """The task a model saved by xattn was trained for (its front end says which)."""
    from . import TASKS

    for cls in TASKS.values():
        if cls.front_end == model.config.front_end:
            return cls(model.tokenizer)
    raise ValueError(f"this model has front end {model.config.front_end!r}: not a known task")


def train_task(
    task_cls: type[Task],
    splits: dict[str, Sequence],
    run_dir: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    model_overrides: dict | None = None,
    tokenizer_kind: str = "word",
    vocab_size: int = 8000,
) -> tuple[EncoderDecoder, Task, dict]:
    """Tokenizer + model + training on splits["train"] (evaluated on splits["valid"]); the
    final model is saved to run_dir/model. Returns (model, task, last evaluation)."""
    from ..training.checkpoint import latest_checkpoint
    from ..training.distributed import rank

    run_dir = Path(run_dir)
    latest = latest_checkpoint(run_dir / "checkpoints") if resume else None
    if resume and latest is None:
        raise ValueError(f"{run_dir}: --resume given but no checkpoint found")
    if latest is not None:
        model = EncoderDecoder.load(latest)
        task = task_cls(model.tokenizer)
    else:
        task = task_cls.build(splits["train"], kind=tokenizer_kind, vocab_size=vocab_size)
        torch.manual_seed(config.seed)
        model = EncoderDecoder(task.model_config(**(model_overrides or {})))
    examples = task.keep_fitting(splits["train"], model.config)
    valid = task.keep_fitting(splits["valid"], model.config)
    result = train(model, task, examples, valid, config, run_dir, resume=resume, progress=progress)
    if rank() == 0:
        model.save(run_dir / "model")
    return model, task, result


def demo_splits(
    task_cls: type[Task], *, test_size: int | None = None, train_size: int | None = None
) -> dict[str, list]:
    """The demo's data (seed 0): test_size cuts the test split (the same first examples
    whatever its size); train_size changes the training split (and shrinks validation)."""
    sizes = dict(task_cls.demo_sizes)
    if test_size is not None:
        sizes["test"] = max(test_size, sizes["test"])
    if train_size is not None:
        sizes["train"] = train_size
        sizes["valid"] = min(sizes["valid"], max(10, train_size // 10))
    splits = task_cls.generate(**sizes, seed=0)
    if test_size is not None:
        splits["test"] = splits["test"][:test_size]
    return splits


def example_attention(model, task: Task, example, text: str | None = None):
    """(target words with "</s>", maps (L, H, T, S')) of one example, teacher-forced over
    `text` (default: the reference)."""
    ids, prompt = task.target_ids(example, text)
    words = [*task.tokenizer.target_tokens(ids[prompt:]), "</s>"]
    return words, attention_maps(model, task, [example], [text])[0]


@torch.no_grad()
def token_probabilities(model, task: Task, example, text: str) -> list[float]:
    """The model's probability of each word of `text` (and of </s>) given the words before."""
    ids, prompt = task.target_ids(example, text)
    src, mask = pad_sources([task.source(example)], task.tokenizer.pad_token_id)
    logits = model(src, torch.tensor([ids[:-1]]), src_mask=mask)[0]  # (T, V)
    chosen = logits.softmax(-1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return chosen[prompt - 1 :].tolist()


def explorer_example(model, task: Task, example, hypothesis: str, words, maps, name: str):
    """The explorer's view of one example: its source as what it is, the target words of
    the hypothesis with their probabilities, the reference, and every head's maps."""
    from ..viz.explorer import ExplorerExample

    heads = model.generation_config.alignment_heads
    spans = None if heads is None else task.word_times(maps, heads, len(words) - 1)
    timed = None if spans is None else [(w, a, b) for w, (a, b) in zip(words, spans, strict=False)]
    probabilities = token_probabilities(model, task, example, hypothesis)
    reference = task.reference(example)
    ref_words = [*reference.split(), "</s>"] if reference else None
    return ExplorerExample(
        task.explorer_source(example, maps.shape[-1], timed),
        list(words),
        maps,
        name=name,
        generated=list(zip(words, probabilities, strict=True)),
        reference=ref_words,
        note=task.describe(example),
    )


def draw_example(
    model, task: Task, example, folder: Path, name: str, hypothesis: str | None = None
) -> dict:
    """The task's picture of the model's output (decoded here unless `hypothesis` gives
    it), drawn from the mean attention of the model's alignment heads (of every head when
    it has none), and the layers x heads grid. Returns the paths, the hypothesis and the
    drawn (source labels, target words, mean (T, S')) as "tokens"."""
    from ..viz import plot_attention_grid

    hyp = predict(model, task, [example])[0] if hypothesis is None else hypothesis
    words, maps = example_attention(model, task, example, hyp)
    mean = head_mean(maps, model.generation_config.alignment_heads)  # (T, S')
    labels = task.source_labels(example, maps.shape[-1])
    reference = task.reference(example)
    if reference:
        title = f"{hyp}   ({'ok' if hyp == reference else f'reference: {reference}'})"
    else:
        title = hyp  # an example without a reference (a sentence to translate)
    picture = task.draw(example, words, mean, folder / f"{name}.png", title)
    grid = plot_attention_grid(list(maps), labels, words, folder / f"{name}-grid.png", title=hyp)
    explore = explorer_example(model, task, example, hyp, words, maps, name)
    return {
        "picture": picture,
        "grid": grid,
        "hypothesis": hyp,
        "tokens": (labels, words, mean),
        "explorer": explore,
    }


def measure_alignment(
    model, task: Task, valid: Sequence, test: Sequence, trained: Sequence[int] | None = None
) -> dict:
    """Where cross-attention looks, on the first ALIGNMENT_EXAMPLES of each split: the hit
    rate of the mean of every head (test), the alignment heads chosen on valid (trained:
    the head training taught to align, which is then the choice) and their test rate, per
    kind of example, and the word-alignment scores where the task has them."""
    count = ALIGNMENT_EXAMPLES
    rates = HitRates(model, task, test)
    first = range(min(count, len(test)))
    valid_maps = HitRates(model, task, valid).maps(range(min(count, len(valid))))
    chosen = alignment_heads(valid_maps, rates.maps(first), trained=trained)
    report = {"alignment_hit_rate": rates(first), **chosen}
    heads = report["alignment_heads"]
    timing = choose_timing(task, valid_maps[0], heads, valid[: len(valid_maps[0])])
    if timing is not None:  # read the test's word times the way validation chose
        task.timing = timing
        report["word_timing_settings"] = timing
    for kind in sorted({k for k in map(task.kind, test) if k is not None}):
        chosen = [i for i, e in enumerate(test) if task.kind(e) == kind][:count]
        report[f"alignment_hit_rate_{kind}"] = rates(chosen)
        report[f"alignment_heads_hit_rate_{kind}"] = rates(chosen, heads)
    maps, _ = rates.maps(first)
    word = task.word_alignment([head_mean(m, heads) for m in maps], list(test[: len(first)]))
    if word is not None:
        scores, links = word
        report["word_alignment"] = dataclasses.asdict(scores)
        report["pharaoh"] = [pharaoh(pairs) for pairs in links]
    report.update(_word_timing(task, maps, heads, test[: len(first)]))
    return report


def scores_per_kind(
    task: Task, examples: Sequence, hypotheses: Sequence[str]
) -> dict[str, dict[str, float]]:
    """kind -> the task's scores of the hypotheses of the examples of that kind (tasks
    whose examples have kinds: the speech task's "real" and "synthetic" voices), with
    "examples": how many."""
    kinds = [task.kind(e) for e in examples]
    out = {}
    for kind in sorted({k for k in kinds if k is not None}):
        chosen = [i for i, k in enumerate(kinds) if k == kind]
        scores = task.metrics(
            [hypotheses[i] for i in chosen], [task.reference(examples[i]) for i in chosen]
        )
        out[kind] = {**scores, "examples": len(chosen)}
    return out


def _word_timing(task, maps, heads, examples) -> dict:
    """Word timestamps read from the alignment heads against the gold spans, overall and
    per kind (tasks whose gold are time spans only)."""
    spans = [task.word_spans(m, heads, e) for m, e in zip(maps, examples, strict=True)]
    if not spans or spans[0] is None:
        return {}
    report = {"word_timing": timing_scores([p for p, _ in spans], [g for _, g in spans])}
    for kind in sorted({k for k in map(task.kind, examples) if k is not None}):
        chosen = [s for s, e in zip(spans, examples, strict=True) if task.kind(e) == kind]
        report[f"word_timing_{kind}"] = timing_scores(
            [p for p, _ in chosen], [g for _, g in chosen]
        )
    return report


def run_demo(
    task_cls: type[Task],
    run_dir: str | Path,
    *,
    steps: int | None = None,
    test_size: int | None = None,
    train_size: int | None = None,
    progress: bool = True,
    out=print,
) -> dict:
    """Train the task's demo model and show what it does and where it looks (see the
    module docstring); returns the summary also written to run_dir/summary.json."""
    run_dir, start = Path(run_dir), time.perf_counter()
    splits = demo_splits(task_cls, test_size=test_size, train_size=train_size)
    config = task_cls.recipe.for_steps(steps)
    out(
        f"Training {task_cls.title} on {len(splits['train']):,} examples ({config.steps} steps) "
        f"into {run_dir}"
    )
    overrides = task_cls.demo_model_overrides
    model, task, _ = train_task(
        task_cls, splits, run_dir, config, progress=progress, model_overrides=overrides
    )
    test, hyps = splits["test"], []
    eval_config = dataclasses.replace(config, eval_size=len(test))
    scores = evaluate(model, task, test, eval_config, hypotheses=hyps)
    report = measure_alignment(model, task, splits["valid"], test, config.trained_head)
    keep_alignment_heads(model, report["alignment_heads"], run_dir / "model", **task.timing)
    alignments = report.pop("pharaoh", None)
    if alignments is not None:
        (run_dir / "test-alignments.txt").write_text("\n".join(alignments) + "\n")
    out(f"\nTest set ({len(test)} held-out examples): {task.score_line(scores)}")
    _print_alignment(task, test, hyps, scores, report, out)
    page = _draw_demo(model, task, test[:DRAWN_EXAMPLES], hyps, run_dir, out)
    took = time.perf_counter() - start
    summary = {"task": task.name, **scores, **report, "seconds": took, "steps": config.steps}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    out(
        f"\nCross-attention pictures (PNG per example, layers x heads grids) and an HTML page: "
        f"{page}\nDone in {took:.0f} s. Model: {run_dir / 'model'}; metrics: "
        f"{run_dir / 'metrics.jsonl'} and {run_dir / 'loss.png'}; summary: "
        f"{run_dir / 'summary.json'}"
    )
    return summary


def _timing_line(timing: dict) -> str:
    return (
        f"start error {1000 * timing['start_error']:.0f} ms, end error "
        f"{1000 * timing['end_error']:.0f} ms, boundaries within 50 ms {timing['f1_50ms']:.1%}, "
        f"within 100 ms {timing['f1_100ms']:.1%}, IoU {timing['iou']:.1%}"
    )


def _print_alignment(task, test, hyps, scores, report, out) -> None:
    out(
        f"Cross-attention peak on the input that produced the word: "
        f"{report['alignment_hit_rate']:.1%} of words (mean of the layers and heads)"
    )
    out(describe_alignment_heads(report))
    if "word_alignment" in report:
        word = report["word_alignment"]
        out(
            f"  word alignment from the alignment heads (each word's peak): precision "
            f"{word['precision']:.1%}, recall {word['recall']:.1%}, AER {word['aer']:.1%} "
            f"(Pharaoh i-j links: test-alignments.txt)"
        )
    if "word_timing" in report:
        out(f"  word timestamps from the alignment heads: {_timing_line(report['word_timing'])}")
        settings = report.get("word_timing_settings")
        if settings is not None:
            out(
                f"    read with a median filter of {settings['median_filter_width']} positions "
                f"and pause level {settings['pause_log_weight']} (chosen on validation)"
            )
    for kind, kind_scores in scores_per_kind(task, test[: len(hyps)], hyps).items():
        count = kind_scores.pop("examples")
        scores.update({f"{key}_{kind}": value for key, value in kind_scores.items()})
        wer = f", WER {kind_scores['wer']:.1%}" if "wer" in kind_scores else ""
        out(
            f"  {kind} examples ({count}): exact {kind_scores['exact']:.1%}{wer}; attention "
            f"peak on a supporting input {report[f'alignment_hit_rate_{kind}']:.1%} (alignment "
            f"heads {report[f'alignment_heads_hit_rate_{kind}']:.1%})"
        )
        if f"word_timing_{kind}" in report:
            out(f"    word timestamps: {_timing_line(report[f'word_timing_{kind}'])}")


def _draw_demo(model, task, examples, hyps, run_dir: Path, out) -> Path:
    """Pictures and the explorer page of the first held-out examples, printed as they go."""
    from ..viz import plot_loss_curve
    from ..viz.explorer import explorer

    plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss.png")
    folder = run_dir / "attention"
    folder.mkdir(parents=True, exist_ok=True)
    out("\nHeld-out examples:")
    views = []
    for i, example in enumerate(examples):
        drawn = draw_example(model, task, example, folder, f"example-{i + 1:02d}", hyps[i])
        views.append(drawn["explorer"])
        mark = "ok" if drawn["hypothesis"] == task.reference(example) else "!!"
        out(f"  [{mark}] {task.describe(example)}\n        -> {drawn['hypothesis']}")
    page = explorer(
        views,
        title=f"What {task.name} looked at",
        alignment_heads=model.generation_config.alignment_heads,
        description=f"The {task.name} demo's held-out examples; the map first shown is the mean of "
        f"{which_heads(model.generation_config.alignment_heads)}.",
    )
    return page.save(folder / "index.html")
