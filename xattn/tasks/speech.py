"""Speech recognition: spoken digit words (synthetic voices and real speakers) -> "nine
five three".

Log-mel frames at 8 kHz go through the audio front end (two stride-2 convolutions: one
encoder position per 4 frames, 40 ms); the decoder writes the words. A word's gold
positions are those whose 40 ms window starts inside the frames where it was spoken.
Scores are reported per kind of voice: unseen synthetic voices and an unseen real speaker.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from ..data.speech import HOP, N_MELS, SAMPLE_RATE, Utterance, make_utterances
from ..training import TrainConfig
from .base import Task

__all__ = ["SpeechTask"]

SUBSAMPLING = 4  # frames per encoder position


class SpeechTask(Task):
    name = "speech"
    title = "a speech recognizer (spoken digits, synthetic voices and real speakers -> words)"
    front_end = "audio"
    recipe: ClassVar[TrainConfig] = TrainConfig(
        steps=1600,
        batch_size=64,
        lr=2e-3,
        warmup_steps=301,
        label_smoothing=0.0,
        eval_every=200,
        eval_size=300,
        checkpoint_every=200,
        max_new_tokens=8,
        alignment_loss=1.0,  # the last layer's first head learns where each word is spoken
        alignment_head=(-1, 0),
    )
    # and 100 test utterances of each of the five people from outside FSDD (data/outside)
    demo_sizes: ClassVar[dict[str, int]] = {
        "train": 10000,
        "valid": 300,
        "test": 1000,
        "outside": 100,
    }
    model_overrides: ClassVar[dict] = {"source_features": N_MELS}
    # the alignment head is trained to cover each word (recipe: alignment_loss), so its
    # spans are read with pause rows; the demo and `xattn train` choose the filter width and
    # pause level on validation (alignment.choose_timing), starting from these
    timing: ClassVar[dict] = {"median_filter_width": 3, "pause_log_weight": -4.0}

    @staticmethod
    def generate(
        train: int, valid: int, test: int, seed: int = 0, outside: int = 0, hold_out="george"
    ) -> dict[str, list[Utterance]]:
        """hold_out: the FSDD speaker heard only in the test split (None: all four train;
        make_utterances' test_speaker)."""
        return make_utterances(
            train, valid, test, seed=seed, outside=outside, test_speaker=hold_out
        )

    def source(self, example: Utterance) -> torch.Tensor:
        return torch.from_numpy(example.features)  # (frames, N_MELS)

    def reference(self, example: Utterance) -> str:
        return example.text

    def gold(self, example: Utterance) -> list[list[int]]:
        return [
            [k for k in range(-(-a // SUBSAMPLING), -(-b // SUBSAMPLING))] for a, b in example.spans
        ]

    def source_labels(self, example: Utterance, length: int) -> list[str]:
        return [f"{k * SUBSAMPLING * HOP / SAMPLE_RATE:.2f}s" for k in range(length)]

    def word_spans(self, maps, heads, example: Utterance):
        predicted = self.word_times(maps, heads, len(example.words))
        gold = [(a * HOP / SAMPLE_RATE, b * HOP / SAMPLE_RATE) for a, b in example.spans]
        return predicted, gold

    def word_times(self, maps, heads, count: int):
        """(start, end) seconds of the first `count` target words, read from the alignment
        heads of maps (L, H, T, S') (rows that predict each word, then </s>, whose row is
        left out) with the task's timing recipe (alignment.token_times with pause rows)."""
        from ..alignment import token_times

        rows = torch.stack([maps[layer, head, :count] for layer, head in heads])  # (h, n, S')
        times = token_times(rows, SUBSAMPLING * HOP / SAMPLE_RATE, **self.timing)
        return list(zip(times.starts[:count], times.ends[:count], strict=True))

    def explorer_source(self, example: Utterance, length: int, words=None) -> dict:
        from ..viz.explorer import audio_source

        spans = [(a * HOP / SAMPLE_RATE, b * HOP / SAMPLE_RATE) for a, b in example.spans]
        source = audio_source(
            example.features,
            SUBSAMPLING * HOP / SAMPLE_RATE,
            HOP / SAMPLE_RATE,
            samples=example.audio,
            sample_rate=SAMPLE_RATE,
            spans=spans,
            words=words,
        )
        return {**source, "labels": self.source_labels(example, length)}

    def describe(self, example: Utterance) -> str:
        return f"{example.seconds:.1f} s of {example.voice} saying: {example.text}"

    def kind(self, example: Utterance) -> str:
        return example.kind

    def draw(self, example: Utterance, words, weights, path: Path, title: str) -> Path:
        from ..viz import plot_spectrogram_attention

        return plot_spectrogram_attention(
            example.features,
            weights,
            words,
            path,
            frames_per_position=SUBSAMPLING,
            spans=example.spans,
            title=title,
        )
