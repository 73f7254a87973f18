"""The Task interface: what an application's examples are, how the model reads and writes
them, how outputs are scored, and what each output word should have looked at.

One train driver and one demo driver (xattn.tasks.run) serve every task; a task only says
what is particular to it: its data (`generate`), its input (`source`, through the front end
the task names, or token ids for text), the text it writes (`reference`, after an optional
`prompt_text` the decoder is fed), its gold alignment (`gold`), its scores and its picture.

Alignment convention (see xattn.alignment): the decoder row that predicts a target word is
the row of the token before it; `gold(example)` lists, for each predicted word (after the
prompt, end token left out), the memory positions that produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..data.tokenizers import PairTokenizer
from ..model import ModelConfig
from ..training import TrainConfig
from ..training.batching import Item
from ..training.metrics import error_rates

__all__ = ["Task"]


class Task:
    """One application. Subclasses set the class attributes and implement generate,
    source, reference and draw (and, where they apply, the other data methods)."""

    name: ClassVar[str] = "task"
    title: ClassVar[str] = ""  # what the demo trains, in words
    front_end: ClassVar[str | None] = None  # None: the source is token ids
    recipe: ClassVar[TrainConfig] = TrainConfig()  # the demo's and `xattn train`'s default
    demo_sizes: ClassVar[dict[str, int]] = {"train": 20000, "valid": 500, "test": 1000}
    model_overrides: ClassVar[dict[str, Any]] = {}  # ModelConfig fields over the small preset
    demo_model_overrides: ClassVar[dict[str, Any]] = {}  # and for the demo's model only
    best_keys: ClassVar[tuple[str, ...]] = ("exact", "-wer")  # "-": lower is better
    timing: ClassVar[dict[str, Any]] = {}  # how word times are read (GenerationConfig fields)

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    # ---- data ---------------------------------------------------------------------------

    @staticmethod
    def generate(train: int, valid: int, test: int, seed: int = 0) -> dict[str, list]:
        """The task's data splits (generated, or read from what ships with xattn)."""
        raise NotImplementedError

    @classmethod
    def held_out(cls, count: int, seed: int = 0) -> list:
        """The first `count` test examples the demo's data holds out."""
        return cls.generate(train=0, valid=0, test=count, seed=seed)["test"]

    def source(self, example) -> torch.Tensor | list[int]:
        """What the encoder reads for one example (without the batch dimension)."""
        raise NotImplementedError

    def source_text(self, example) -> str:
        """Text the source tokenizer learns from ("" when the source is not text)."""
        return ""

    def prompt_text(self, example) -> str:
        """Target words given to the decoder before it answers ("" for none)."""
        return ""

    def reference(self, example) -> str:
        """The output text the model should write."""
        raise NotImplementedError

    def gold(self, example) -> list[list[int]] | None:
        """For each reference word, the memory positions that produced it (None: unknown)."""
        return None

    def source_labels(self, example, length: int) -> list[str]:
        """A short label per memory position (for heatmaps and the HTML page)."""
        return [str(i) for i in range(length)]

    def kind(self, example) -> str | None:
        """A category to report scores by (QA: person or object questions), or None."""
        return None

    def describe(self, example) -> str:
        """The input, in words, for printed samples."""
        return ""

    def explorer_source(self, example, length: int, words=None) -> dict:
        """How the explorer draws this example's source of `length` memory positions (see
        xattn.viz.explorer): text labels unless a task draws its input as what it is;
        words: (word, start, end) timestamps of the output, for speech."""
        from ..viz.explorer import text_source

        return text_source(self.source_labels(example, length))

    def draw(self, example, words: list[str], weights: torch.Tensor, path: Path, title: str):
        """The task's picture of weights (T, S') for the target words; returns the path."""
        raise NotImplementedError

    # ---- derived ------------------------------------------------------------------------

    @classmethod
    def build(cls, examples: Sequence, *, kind: str = "word", vocab_size: int = 8000) -> Task:
        """The task with a tokenizer trained on the examples' source and target text."""
        probe = cls(None)
        texts = [
            (probe.source_text(e), f"{probe.prompt_text(e)} {probe.reference(e)}".strip())
            for e in examples
        ]
        return cls(PairTokenizer.train(texts, kind, vocab_size))

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
        """(<s> prompt words answer words </s>, prompt length counting <s>) for `text`
        (default: the reference)."""
        prompt = self.prompt_text(example)
        answer = self.reference(example) if text is None else text
        ids = self.tokenizer.encode_target(f"{prompt} {answer}".strip())
        prompt_words = len(self.tokenizer.encode_target(prompt)) - 2 if prompt else 0
        return ids, 1 + prompt_words

    def prompt_ids(self, example) -> list[int]:
        """The decoder's given start, <s> and the prompt words ([] without a prompt: the
        model's own decoder start token)."""
        prompt = self.prompt_text(example)
        return self.tokenizer.encode_target(prompt)[:-1] if prompt else []

    def encode(self, example) -> Item:
        ids, prompt = self.target_ids(example)
        return Item(self.source(example), ids, prompt, self.gold(example))

    def keep_fitting(self, examples: Sequence, config: ModelConfig) -> list:
        """The examples a model of this config can read and write (all, unless a task says
        otherwise)."""
        return list(examples)

    def metrics(self, hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        return error_rates(hypotheses, references)

    def word_spans(self, maps: torch.Tensor, heads, example):
        """(predicted, gold) (start, end) seconds of each reference word, read from maps
        (L, H, T, S') of the example's alignment heads by dynamic time warping, for tasks
        whose gold are time spans (speech); None otherwise."""
        return None

    def word_times(self, maps, heads, count: int):
        """(start, end) seconds of the first `count` target words read from the alignment
        heads of maps (L, H, T, S'), for tasks whose source is time (speech); None otherwise."""
        return None

    def word_alignment(self, maps: Sequence[torch.Tensor], examples: Sequence):
        """(AlignmentScores, links per example) of hard word alignments read from (T, S)
        maps, for tasks whose gold are word alignments (translation); None otherwise."""
        return None

    def score_line(self, scores: dict[str, float]) -> str:
        """The scores in words, for a demo's printout."""
        return (
            f"exact match {scores['exact']:.1%}, WER {scores['wer']:.1%}, CER {scores['cer']:.1%}"
        )

    def best_score(self, scores: dict[str, float]) -> list[float]:
        """What picks the best model: best_keys in order, higher is better."""
        return [(-scores[k[1:]] if k.startswith("-") else scores[k]) for k in self.best_keys]
