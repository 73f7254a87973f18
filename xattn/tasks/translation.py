"""Translation: parallel data (TSV or two aligned files, or the generated default corpus),
training a model on it, and the `xattn demo` main job.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.en_es import Example, split_corpus
from ..data.text_tokenizer import TranslationTokenizer
from ..model import EncoderDecoder, ModelConfig
from ..training import TrainConfig, evaluate, train, translate
from ..training.metrics import alignment_hit_rate

__all__ = ["DataError", "demo", "read_parallel", "train_translation"]

log = logging.getLogger("xattn")


class DataError(ValueError):
    """A malformed corpus line; the message starts with file:line."""


@dataclass(frozen=True)
class Parallel:
    pairs: list[tuple[str, str]]
    skipped: int  # bad lines skipped with skip_bad_lines


def _lines(path: Path):
    """(line number, text or None when the bytes are not UTF-8) for each line of a file."""
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    yield number, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    yield number, None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from err


def read_parallel(
    path: str | Path, target_path: str | Path | None = None, *, skip_bad_lines: bool = False
) -> Parallel:
    """A TSV file (source<TAB>target per line) or two line-aligned text files.

    Malformed lines (no tab, extra tabs, an empty side, undecodable bytes) raise DataError
    naming file:line, or are skipped and counted with skip_bad_lines.
    """
    path = Path(path)
    pairs: list[tuple[str, str]] = []
    skipped = 0

    def bad(message: str) -> None:
        nonlocal skipped
        if not skip_bad_lines:
            raise DataError(message + " (use --skip-bad-lines to skip such lines)")
        skipped += 1

    if target_path is None:
        for number, text in _lines(path):
            where = f"{path}:{number}"
            if text is None:
                bad(f"{where}: not valid UTF-8")
            elif not text.strip():
                continue  # blank lines are allowed
            elif text.count("\t") != 1:
                bad(f"{where}: expected source<TAB>target, found {text.count(chr(9))} tabs")
            else:
                source, target = (side.strip() for side in text.split("\t"))
                if not source or not target:
                    bad(f"{where}: empty {'source' if not source else 'target'} side")
                else:
                    pairs.append((source, target))
    else:
        target_path = Path(target_path)
        sources, targets = list(_lines(path)), list(_lines(target_path))
        if len(sources) != len(targets):
            raise DataError(
                f"{path} has {len(sources)} lines but {target_path} has {len(targets)}; the "
                f"files must be line-aligned"
            )
        for (number, source), (_, target) in zip(sources, targets, strict=True):
            for text, file in ((source, path), (target, target_path)):
                if text is None:
                    bad(f"{file}:{number}: not valid UTF-8")
                    break
                if not text.strip():
                    bad(f"{file}:{number}: empty line")
                    break
            else:
                pairs.append((source.strip(), target.strip()))
    if not pairs:
        raise DataError(f"{path}: no usable sentence pairs")
    return Parallel(pairs, skipped)


def _pairs(examples: list[Example]) -> list[tuple[str, str]]:
    return [(e.source, e.target) for e in examples]


def default_model_config(tokenizer: TranslationTokenizer, **overrides) -> ModelConfig:
    """The default for our own translators: pre-norm, 2 + 2 layers, width 128."""
    return ModelConfig.preset(
        "small", vocab_size=tokenizer.source_vocab_size,
        target_vocab_size=tokenizer.target_vocab_size, share_embeddings=False, **overrides,
    )  # fmt: skip


def train_translation(
    pairs: list[tuple[str, str]],
    valid: list[tuple[str, str]],
    run_dir: Path,
    train_config: TrainConfig,
    *,
    tokenizer_kind: str = "word",
    vocab_size: int = 8000,
    model_overrides: dict | None = None,
    resume: bool = False,
    progress: bool = True,
) -> tuple[EncoderDecoder, dict]:
    """Tokenizer + model + training; the final model is saved to run_dir/model."""
    run_dir = Path(run_dir)
    if resume and (run_dir / "checkpoints").is_dir():
        from ..training.checkpoint import latest_checkpoint

        latest = latest_checkpoint(run_dir / "checkpoints")
        model = EncoderDecoder.load(latest) if latest else None
        if model is None:
            raise DataError(f"{run_dir}: --resume given but no checkpoint found")
        tokenizer = model.tokenizer
    else:
        tokenizer = TranslationTokenizer.train(pairs, tokenizer_kind, vocab_size)
        torch.manual_seed(train_config.seed)
        model = EncoderDecoder(default_model_config(tokenizer, **(model_overrides or {})))
    result = train(model, tokenizer, pairs, valid, train_config, run_dir, resume=resume,
                   progress=progress)  # fmt: skip
    model.save(run_dir / "model")
    return model, result


DEMO_TRAIN = TrainConfig(
    steps=1000, batch_size=64, lr=2e-3, warmup_steps=75, label_smoothing=0.0,
    eval_every=250, eval_size=300, checkpoint_every=250, max_new_tokens=40,
)  # fmt: skip


def demo(
    run_dir: Path,
    *,
    steps: int | None = None,
    test_size: int = 1000,
    progress: bool = True,
    out=print,
) -> dict:
    """The main job: train the default English-Spanish model, evaluate it on held-out
    sentences, translate a few, and measure where its cross-attention looks."""
    run_dir = Path(run_dir)
    start = time.perf_counter()
    splits = split_corpus(train=20000, valid=500, test=1000, seed=0)
    splits["test"] = splits["test"][:test_size]
    config = DEMO_TRAIN
    if steps is not None:
        config = dataclasses.replace(
            config, steps=steps, eval_every=min(config.eval_every, steps),
            checkpoint_every=min(config.checkpoint_every, steps),
            warmup_steps=min(config.warmup_steps, steps // 10),
        )  # fmt: skip
    out(f"Training an English-to-Spanish model on {len(splits['train']):,} generated sentence "
        f"pairs ({config.steps} steps) into {run_dir}")  # fmt: skip
    model, _ = train_translation(
        _pairs(splits["train"]), _pairs(splits["valid"]), run_dir, config,
        model_overrides={"dropout": 0.0}, progress=progress,
    )  # fmt: skip
    tokenizer = model.tokenizer
    test = _pairs(splits["test"])
    scores = evaluate(model, tokenizer, test, dataclasses.replace(config, eval_size=len(test)))
    hit = _alignment_hit_rate(model, tokenizer, splits["test"][:300])  # teacher-forced
    took = time.perf_counter() - start
    out(f"\nTest set ({len(test)} held-out sentences): exact match {scores['exact']:.1%}, "
        f"BLEU {scores['bleu']:.1f}, chrF {scores['chrf']:.1f}")  # fmt: skip
    out(f"Cross-attention peak on the gold-aligned English word: {hit:.1%} of Spanish words")
    out("\nHeld-out translations:")
    sample = splits["test"][:6]
    for e, hyp in zip(sample, translate(model, tokenizer, [e.source for e in sample]),
                      strict=True):  # fmt: skip
        mark = "ok" if hyp == e.target else "!!"
        out(f"  [{mark}] {e.source}\n        -> {hyp}")
    summary = {**scores, "alignment_hit_rate": hit, "seconds": took, "steps": config.steps}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    out(f"\nDone in {took:.0f} s. Model: {run_dir / 'model'}; best checkpoint: "
        f"{run_dir / 'best'}; metrics: {run_dir / 'metrics.jsonl'}; summary: "
        f"{run_dir / 'summary.json'}")  # fmt: skip
    return summary


@torch.no_grad()
def _alignment_hit_rate(model, tokenizer, examples: list[Example]) -> float:
    """Teacher-forced head-and-layer-mean cross-attention over the gold translations."""
    model.eval()
    maps, gold = [], []
    for e in examples:
        src = torch.tensor([tokenizer.encode(e.source)])
        tgt = torch.tensor([tokenizer.encode_target(e.target)[:-1]])  # <s> + words
        if len(tokenizer.source_tokens(e.source)) != len(e.source_tokens):
            continue  # the tokenizer split differently: gold indices would not match
        _, layer_maps = model.decode(tgt, model.encode(src), return_attention="mean")
        mean = torch.stack(layer_maps).mean(0)[0]  # (T, S): row t predicts target word t
        maps.append(mean[:, : len(e.source_tokens)])
        gold.append(e.alignment)
    return alignment_hit_rate(maps, gold)
