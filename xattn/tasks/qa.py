"""Question answering over generated stories: "... mary went to the kitchen . ..." +
"where is mary ?" -> "kitchen".

The passage goes in as one memory slot per sentence (the sentence front end); the decoder
is fed the question (a prompt it is not trained to predict) and writes the answer, so the
answer's cross-attention says which sentence it read. Gold: the supporting sentences.

An object question is two hops (who last had the apple, then where that person was), and
the answer writes the first hop out: "where is the apple ?" -> "daniel bathroom", each word
read from its own sentence (`Story.chain`), so that each hop is one cross-attention look
instead of a hop inside the layers. Both words must be right to count as exact;
`name_holder = False` asks for the place alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from ..data.stories import Story, make_stories
from ..training import TrainConfig
from .base import Task

__all__ = ["QATask"]

MAX_WORDS = 8  # words per sentence the front end reads


class QATask(Task):
    name = "qa"
    title = "a question answerer (stories -> where is ...?)"
    front_end = "sentences"
    recipe: ClassVar[TrainConfig] = TrainConfig(
        steps=1200,
        batch_size=64,
        lr=2e-3,
        warmup_steps=60,
        label_smoothing=0.0,
        eval_every=300,
        eval_size=500,
        checkpoint_every=300,
        max_new_tokens=4,
    )
    demo_sizes: ClassVar[dict[str, int]] = {"train": 20000, "valid": 500, "test": 2000}
    model_overrides: ClassVar[dict] = {
        "source_features": MAX_WORDS,
        "encoder_layers": 3,
        "decoder_layers": 3,
    }
    name_holder: ClassVar[bool] = True  # object answers: "holder place" (False: the place)

    @staticmethod
    def generate(train: int, valid: int, test: int, seed: int = 0) -> dict[str, list[Story]]:
        return make_stories(train, valid, test, seed=seed)

    @classmethod
    def held_out(cls, count: int, seed: int = 0) -> list[Story]:
        # one generator runs through all splits: the test stories depend on the others
        sizes = {**cls.demo_sizes, "test": max(count, cls.demo_sizes["test"])}
        return cls.generate(**sizes, seed=seed)["test"][:count]

    def source(self, example: Story) -> torch.Tensor:
        rows = [
            self.tokenizer.source.encode(s, add_special_tokens=False).ids for s in example.sentences
        ]
        if max(len(r) for r in rows) > MAX_WORDS:
            raise ValueError(
                f"a sentence of the story has more than {MAX_WORDS} words: {example.sentences}"
            )
        out = torch.zeros(len(rows), MAX_WORDS, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out  # (N, L)

    def source_text(self, example: Story) -> str:
        return example.passage

    def prompt_text(self, example: Story) -> str:
        return example.question

    def reference(self, example: Story) -> str:
        return example.reply if self.name_holder else example.answer

    def gold(self, example: Story) -> list[list[int]]:
        if self.name_holder:
            return [[i] for i in example.chain]  # the sentence behind each answer word
        return [list(example.support)]

    def source_labels(self, example: Story, length: int) -> list[str]:
        return [s.removesuffix(" .") for s in example.sentences]

    def explorer_source(self, example: Story, length: int, words=None) -> dict:
        from ..viz.explorer import text_source

        return text_source(self.source_labels(example, length), sentences=True)

    def describe(self, example: Story) -> str:
        return f"{example.passage} | {example.question}"

    def draw(self, example: Story, words, weights, path: Path, title: str) -> Path:
        from ..viz import plot_passage_attention

        answer = words[:-1] or words  # the answer words, without the closing </s>
        return plot_passage_attention(
            example.sentences, weights[: len(answer)], example.question, answer, path, title=title
        )

    def kind(self, example: Story) -> str:
        return example.kind
