"""What captioning, question answering and speech recognition share: a task with generated
data and an input front end, trained, evaluated, measured for where its cross-attention
looks, and drawn, by the same functions (`train_app`, `app_demo`, `app_attention`).

Alignment convention: the decoder row that predicts a target word is the row of the token
before it; a task's `gold(example)` lists, for each predicted word (after the prompt, end
token left out), the memory positions that produced it (the digit's patches, the
supporting sentence, the frames of the spoken word).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..data.text_tokenizer import TranslationTokenizer
from ..model import EncoderDecoder, ModelConfig
from ..model.transformer import GENERATION_FILE
from ..training import TrainConfig, evaluate, train
from ..training.batching import Item, pad_sources
from ..training.metrics import (
    alignment_heads,
    alignment_hit_rate,
    choose_alignment_heads,
    describe_alignment_heads,
    head_mean,
)
from ..training.task import Task, predict
from ..utils import pad_batch

__all__ = ["AppTask", "app_attention", "app_demo", "app_hit_rate", "attention_maps", "train_app"]

log = logging.getLogger("xattn")


class AppTask(Task):
    """A task with generated data. Subclasses set the class attributes and implement
    generate, source, target_text, gold, source_labels and draw."""

    name: ClassVar[str] = "app"
    title: ClassVar[str] = ""  # what the demo trains, in words
    front_end: ClassVar[str] = ""
    demo_train: ClassVar[TrainConfig] = TrainConfig()
    demo_sizes: ClassVar[dict[str, int]] = {"train": 20000, "valid": 500, "test": 1000}
    model_overrides: ClassVar[dict[str, Any]] = {}

    # ---- data --------------------------------------------------------------------------

    @staticmethod
    def generate(train: int, valid: int, test: int, seed: int = 0) -> dict[str, list]:
        raise NotImplementedError

    @classmethod
    def held_out(cls, count: int, seed: int = 0) -> list:
        """The first `count` test examples the demo's data would hold out."""
        return cls.generate(train=0, valid=0, test=count, seed=seed)["test"]

    def source(self, example) -> torch.Tensor:
        """What the front end reads for one example (without the batch dimension)."""
        raise NotImplementedError

    def source_text(self, example) -> str:
        """Text the source tokenizer learns from ("" when the source is not text)."""
        return ""

    def prompt_text(self, example) -> str:
        """Target words given to the decoder before it answers ("" for none)."""
        return ""

    def reference(self, example) -> str:
        raise NotImplementedError

    def gold(self, example) -> list[list[int]]:
        raise NotImplementedError

    def source_labels(self, example, length: int) -> list[str]:
        """A short label per memory position (for heatmaps and the HTML page)."""
        return [str(i) for i in range(length)]

    def kind(self, example) -> str | None:
        """A category to report scores by (QA: person or object questions), or None."""
        return None

    def describe(self, example) -> str:
        """The input, in words, for printed samples."""
        return ""

    def draw(
        self, example, words: list[str], weights: torch.Tensor, path: Path, title: str
    ) -> Path:
        """The task's picture of weights (T, S') for the target words."""
        raise NotImplementedError

    # ---- derived -----------------------------------------------------------------------

    @classmethod
    def build(cls, examples: Sequence) -> AppTask:
        """A task with a word tokenizer trained on the examples."""
        probe = cls(None)
        pairs = [
            (probe.source_text(e), f"{probe.prompt_text(e)} {probe.reference(e)}") for e in examples
        ]
        return cls(TranslationTokenizer.train(pairs, "word"))

    def model_config(self, **overrides) -> ModelConfig:
        """The small preset with this task's front end and an output layer of its own."""
        tok = self.tokenizer
        settings = {
            "vocab_size": tok.source_vocab_size,
            "target_vocab_size": tok.target_vocab_size,
            "share_embeddings": False,
            "tie_output": False,
            "front_end": self.front_end,
            "dropout": 0.0,
            **self.model_overrides,
            **overrides,
        }
        return ModelConfig.preset("small", **settings)

    def target_ids(self, example, text: str | None = None) -> tuple[list[int], int]:
        """(<s> prompt words answer words </s>, prompt length counting <s>)."""
        prompt = self.prompt_text(example)
        answer = self.reference(example) if text is None else text
        ids = self.tokenizer.encode_target(f"{prompt} {answer}".strip())
        prompt_words = len(self.tokenizer.encode_target(prompt)) - 2 if prompt else 0
        return ids, 1 + prompt_words

    def encode(self, example) -> Item:
        ids, prompt = self.target_ids(example)
        return Item(self.source(example), ids, prompt)

    def metrics(self, hypotheses, references) -> dict[str, float]:
        import jiwer

        scores = super().metrics(hypotheses, references)
        refs, hyps = list(references), [h if h.strip() else "<empty>" for h in hypotheses]
        scores["wer"] = float(jiwer.wer(refs, hyps))
        scores["cer"] = float(jiwer.cer(refs, hyps))
        return scores

    best_keys = ("exact", "-wer")


# ---- model, training, maps -------------------------------------------------------------


def task_for(model: EncoderDecoder) -> AppTask:
    """The task a saved model was trained for (its front end says which)."""
    from . import TASKS

    for cls in TASKS.values():
        if getattr(cls, "front_end", None) == model.config.front_end and cls.front_end:
            return cls(model.tokenizer)
    raise ValueError(
        f"this model has front end {model.config.front_end!r}: not one of the "
        f"captioning, QA or speech tasks"
    )


def train_app(
    task_cls: type[AppTask],
    splits: dict[str, list],
    run_dir: Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    model_overrides: dict | None = None,
) -> tuple[EncoderDecoder, AppTask, dict]:
    """Tokenizer + model + training; the final model is saved to run_dir/model."""
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
        task = task_cls.build(splits["train"])
        torch.manual_seed(config.seed)
        model = EncoderDecoder(task.model_config(**(model_overrides or {})))
    result = train(
        model,
        task.tokenizer,
        splits["train"],
        splits["valid"],
        config,
        run_dir,
        resume=resume,
        progress=progress,
        task=task,
    )
    if rank() == 0:
        model.save(run_dir / "model")
    return model, task, result


@torch.no_grad()
def app_attention(model, task: AppTask, example, text: str | None = None):
    """Teacher-forced cross-attention of one example over `text` (default: the reference).

    Returns (target words, per layer (H, T, S') maps, memory length S'); row t of a map is
    where the decoder looked while predicting target word t (prompt left out, the end
    token included as the last row).
    """
    ids, prompt = task.target_ids(example, text)
    words = [*task.tokenizer.target_tokens(ids[prompt:]), "</s>"]
    maps = attention_maps(model, task, [example], texts=[text])[0]  # (L, H, T, S')
    return words, list(maps), maps.shape[-1]


@torch.no_grad()
def attention_maps(
    model, task: AppTask, examples: Sequence, texts: Sequence | None = None, batch_size: int = 64
) -> list[torch.Tensor]:
    """app_attention's maps of many examples over `texts` (default: the references),
    computed in batches: one (L, H, T, S') tensor per example, the rows that predict its
    answer words and </s>, over the positions of its own memory."""
    model.eval()
    texts = [None] * len(examples) if texts is None else list(texts)
    if len(texts) != len(examples):
        raise ValueError(f"{len(texts)} texts for {len(examples)} examples")
    pad, maps = task.tokenizer.pad_token_id, []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        targets = [task.target_ids(e, t) for e, t in zip(chunk, texts[start:], strict=False)]
        src, mask = pad_sources([task.source(e) for e in chunk], pad)
        memory, memory_mask = model.encode(src, mask, return_mask=True)
        tgt, _ = pad_batch([ids[:-1] for ids, _ in targets], pad)  # causal: padding after
        _, layers = model.decode(tgt, memory, src_mask=memory_mask, return_attention="all")
        stacked = torch.stack(layers, 1)  # (B, L, H, T, S')
        for i, (ids, prompt) in enumerate(targets):
            length = memory.shape[1] if memory_mask is None else int(memory_mask[i].sum())
            maps.append(stacked[i, :, :, prompt - 1 : len(ids) - 1, :length])
    return maps


def app_hit_rate(model, task: AppTask, examples: Sequence) -> float:
    """How often the layer-and-head mean attention peak of a predicted word lands on the
    memory positions that produced it (teacher-forced over the references)."""
    return _HitRates(model, task, examples)(range(len(examples)))


class _HitRates:
    """app_hit_rate (and every head's own rate) over subsets of the same examples, each
    example's maps computed once."""

    def __init__(self, model, task: AppTask, examples: Sequence) -> None:
        self.model, self.task, self.examples = model, task, examples
        self.seen: dict[int, tuple[torch.Tensor, list]] = {}

    def maps(self, indices: Sequence[int]) -> tuple[list[torch.Tensor], list]:
        """Every layer's and head's maps of these examples, (L, H, N, S) each, and their gold."""
        new = [i for i in dict.fromkeys(indices) if i not in self.seen]
        maps = attention_maps(self.model, self.task, [self.examples[i] for i in new])
        for i, m in zip(new, maps, strict=True):
            self.seen[i] = m, self.task.gold(self.examples[i])
        return [self.seen[i][0] for i in indices], [self.seen[i][1] for i in indices]

    def __call__(self, indices: Sequence[int]) -> float:
        maps, gold = self.maps(indices)
        return alignment_hit_rate([m.mean((0, 1)) for m in maps], gold)


def keep_alignment_heads(model, heads: Sequence[Sequence[int]], folder: Path) -> None:
    """Record alignment heads ((layer, head) pairs counting from 0) with the model and in
    the generation_config.json of its saved folder, where `xattn attention` finds them."""
    model.set_alignment_heads(heads)
    model.generation_config.save(Path(folder) / GENERATION_FILE)


def choose_and_keep_alignment_heads(
    model, task: AppTask, examples: Sequence, folder: Path
) -> list[tuple[int, int]]:
    """choose_alignment_heads on (up to 300 of) these validation examples, then
    keep_alignment_heads."""
    maps = _HitRates(model, task, examples).maps(range(min(300, len(examples))))
    heads = choose_alignment_heads(*maps)
    keep_alignment_heads(model, heads, folder)
    return heads


def draw_example(
    model, task: AppTask, example, folder: Path, name: str, hypothesis: str | None = None
) -> dict:
    """The task's picture of the model's own output (decoded here unless `hypothesis` gives
    it): the mean attention of the model's alignment heads (of every head when it has
    none); and the layers x heads grid."""
    from ..viz import plot_attention_grid

    hyp = predict(model, task, [example])[0] if hypothesis is None else hypothesis
    words, layers, length = app_attention(model, task, example, hyp)
    mean = head_mean(layers, model.generation_config.alignment_heads)  # (T, S')
    labels = task.source_labels(example, length)
    ok = "ok" if hyp == task.reference(example) else f"reference: {task.reference(example)}"
    picture = task.draw(example, words, mean, folder / f"{name}.png", f"{hyp}   ({ok})")
    grid = plot_attention_grid(layers, labels, words, folder / f"{name}-grid.png", title=hyp)
    return {"picture": picture, "grid": grid, "hypothesis": hyp, "tokens": (labels, words, mean)}


def app_demo(
    task_cls: type[AppTask],
    run_dir: Path,
    *,
    steps: int | None = None,
    test_size: int | None = None,
    train_size: int | None = None,
    progress: bool = True,
    out=print,
) -> dict:
    """Generate the data, train, evaluate on the held-out test split, measure the
    alignment hit rate and draw the attention of some test examples."""
    run_dir = Path(run_dir)
    start = time.perf_counter()
    sizes = dict(task_cls.demo_sizes)
    if test_size is not None:
        sizes["test"] = test_size
    if train_size is not None:
        sizes["train"] = train_size
        sizes["valid"] = min(sizes["valid"], max(10, train_size // 10))
    splits = task_cls.generate(**sizes, seed=0)
    config = task_cls.demo_train.for_steps(steps)
    out(
        f"Training {task_cls.title} on {len(splits['train']):,} generated examples "
        f"({config.steps} steps) into {run_dir}"
    )
    model, task, _ = train_app(task_cls, splits, run_dir, config, progress=progress)
    test, hyps = splits["test"], []
    scores = evaluate(
        model,
        task.tokenizer,
        test,
        dataclasses.replace(config, eval_size=len(test)),
        task=task,
        hypotheses=hyps,
    )
    hit_rate = _HitRates(model, task, test)  # the overall and per-kind sets overlap
    hit = hit_rate(range(min(300, len(test))))
    valid = splits["valid"]
    heads = alignment_heads(
        _HitRates(model, task, valid).maps(range(min(300, len(valid)))),
        hit_rate.maps(range(min(300, len(test)))),
    )
    keep_alignment_heads(model, heads["alignment_heads"], run_dir / "model")  # pictures use them
    from ..viz import attention_html, plot_loss_curve

    plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss.png")
    out(
        f"\nTest set ({len(test)} held-out examples): exact match {scores['exact']:.1%}, "
        f"WER {scores['wer']:.1%}, CER {scores['cer']:.1%}"
    )
    out(
        f"Cross-attention peak on the input that produced the word: {hit:.1%} of words "
        f"(mean of the layers and heads)"
    )
    out(describe_alignment_heads(heads))
    kinds = sorted({k for k in map(task.kind, test) if k is not None})
    if kinds:
        for k in kinds:
            chosen = [i for i, e in enumerate(test) if task.kind(e) == k]
            right = sum(hyps[i] == task.reference(test[i]) for i in chosen) / len(chosen)
            k_hit = hit_rate(chosen[:300])
            scores[f"exact_{k}"], scores[f"alignment_hit_rate_{k}"] = right, k_hit
            out(
                f"  {k} questions ({len(chosen)}): exact {right:.1%}, attention peak on a "
                f"supporting input {k_hit:.1%}"
            )
    folder = run_dir / "attention"
    folder.mkdir(parents=True, exist_ok=True)
    out("\nHeld-out examples:")
    records = []
    for i, e in enumerate(test[:8]):
        drawn = draw_example(model, task, e, folder, f"example-{i + 1:02d}", hyps[i])
        records.append(drawn["tokens"])
        mark = "ok" if drawn["hypothesis"] == task.reference(e) else "!!"
        out(f"  [{mark}] {task.describe(e)}\n        -> {drawn['hypothesis']}")
    page = attention_html(records, folder / "index.html", title=f"What {task.name} looked at")
    out(
        f"\nCross-attention pictures (PNG per example, layers x heads grids) and an HTML "
        f"page: {page}"
    )
    took = time.perf_counter() - start
    summary = {
        "task": task.name,
        **scores,
        "alignment_hit_rate": hit,
        **heads,
        "seconds": took,
        "steps": config.steps,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    out(
        f"\nDone in {took:.0f} s. Model: {run_dir / 'model'}; metrics: "
        f"{run_dir / 'metrics.jsonl'} and {run_dir / 'loss.png'}; summary: "
        f"{run_dir / 'summary.json'}"
    )
    return summary
