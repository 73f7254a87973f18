"""Ensemble: several trained models that write one output together.

    ensemble = Ensemble([EncoderDecoder.load(a), EncoderDecoder.load(b)])
    ensemble.generate(src_ids, num_beams=4) ; ensemble.transcribe(audio, 16000)

Every member reads the source with its own encoder and keeps its own cached decoder; at each
step the search follows the log of the members' mean next-token probability (the members
weigh the same). Models trained alike with different seeds (`xattn train --seed`) make
different mistakes on inputs unlike their training data, and the mean outvotes most of
them. The members must share what makes their outputs comparable: the kind of input, the
vocabularies and tokenizers, and the start, end and padding tokens. xattn's word-level
tokenizers trained on other data (another seed) hold the same words under other ids (a
word's id follows its count): the ensemble maps each member's ids to the first member's.
Each member keeps its own alignment heads, and word timestamps read all of them together.
An ensemble of one model generates exactly what the model does.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.tokenizers import PairTokenizer
from ..generation import GenerationConfig, search
from .transformer import EncoderDecoder, generation_settings

__all__ = ["Ensemble"]


class Ensemble(nn.Module):
    """Models (EncoderDecoder) that generate together; see the module docstring.

    config, generation_config and tokenizer are the first member's (the generation
    settings that the members must share are checked to be equal)."""

    def __init__(
        self, models: Sequence[EncoderDecoder], *, names: Sequence[str] | None = None
    ) -> None:
        """names: what to call each member in errors (their folders), else its index."""
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("an Ensemble needs at least one model")
        names = [f"member {i}" for i in range(len(models))] if names is None else list(names)
        if len(names) != len(models):
            raise ValueError(f"{len(names)} names for {len(models)} models")
        for name, model in zip(names, models, strict=True):
            if not isinstance(model, EncoderDecoder):
                raise TypeError(f"{name} is a {type(model).__name__}; expected EncoderDecoder")
        self.id_maps = [(None, None)] + [
            _check_member(models[0], model, names[0], name)
            for name, model in zip(names[1:], models[1:], strict=True)
        ]
        self.members = nn.ModuleList(models)

    @property
    def config(self):
        return self.members[0].config

    @property
    def generation_config(self) -> GenerationConfig:
        return self.members[0].generation_config

    @property
    def tokenizer(self):
        return self.members[0].tokenizer

    @property
    def quantized(self) -> str | None:
        return self.members[0].quantized

    def quantize(self, mode: str = "int8") -> Ensemble:
        """An ensemble of the members' int8 copies (EncoderDecoder.quantize)."""
        return Ensemble([member.quantize(mode) for member in self.members])

    @torch.no_grad()
    def generate(
        self,
        src_ids: Tensor,
        *,
        src_mask: Tensor | None = None,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        generation_config: GenerationConfig | None = None,
        decoder_input_ids: Tensor | None = None,
        compile: bool = False,
        **overrides: Any,
    ) -> Tensor:
        """EncoderDecoder.generate over the members' mean next-token probabilities (greedy,
        beam or sampling; the logits processors see the log of that mean). Returns the
        LongTensor (B * R, 1 + N) generate returns; attention maps are not collected."""
        config = generation_settings(
            generation_config or self.generation_config, max_new_tokens, num_beams, overrides
        )
        steppers = []
        for i, member in enumerate(self.members):
            source_map, target_map = self.id_maps[i]
            src = src_ids
            if source_map is not None and not src_ids.is_floating_point():
                src = source_map.to(src_ids.device)[src_ids]
            prompt = decoder_input_ids
            if prompt is not None:
                prompt = self.member_ids(i, prompt)
            stepper, rows, sources = member.stepper(src, src_mask, config, prompt, False, compile)
            if i == 0:  # the search starts from the first member's tokens
                start, B = rows, sources
            if target_map is not None:
                stepper = _MappedStepper(stepper, target_map.to(rows.device))
            steppers.append(stepper)
        stepper = steppers[0] if len(steppers) == 1 else _MeanStepper(steppers)
        return search(stepper, start, config, B).sequences

    def member_ids(self, index: int, ids: Tensor) -> Tensor:
        """Target ids of the first member (the ensemble's) as member `index`'s ids."""
        target_map = self.id_maps[index][1]
        return ids if target_map is None else target_map.to(ids.device)[ids]

    def transcribe(self, audio, sampling_rate: int, **options):
        """EncoderDecoder.transcribe (the same options) with the ensemble's generate, for
        xattn's own speech models (Whisper's prompt and language detection are one model's):
        word times from every member's alignment heads together."""
        if self.config.front_end == "whisper" and len(self.members) > 1:
            raise ValueError(
                "transcribe with an ensemble runs xattn's own speech models; these members "
                "are Whisper models (transcribe with one of them)"
            )
        from ..transcription import transcribe

        return transcribe(self, audio, sampling_rate, **options)


class _MappedStepper:
    """A member's Stepper seen in the first member's ids: tokens mapped in, logits mapped
    out (index[j]: the member's id of the first member's token j)."""

    def __init__(self, stepper, index: Tensor) -> None:
        self.stepper, self.index = stepper, index

    def step(self, tokens: Tensor) -> tuple[Tensor, None]:
        logits, _ = self.stepper.step(self.index[tokens])
        return logits.index_select(-1, self.index), None

    def reorder(self, indices: Tensor) -> None:
        self.stepper.reorder(indices)


class _MeanStepper:
    """The search's Stepper over several members' steppers: log of their mean softmax."""

    def __init__(self, steppers: list) -> None:
        self.steppers = steppers
        self.log_count = math.log(len(steppers))

    def step(self, tokens: Tensor) -> tuple[Tensor, None]:
        logprobs = [torch.log_softmax(s.step(tokens)[0].float(), dim=-1) for s in self.steppers]
        return torch.logsumexp(torch.stack(logprobs), dim=0) - self.log_count, None

    def reorder(self, indices: Tensor) -> None:
        for stepper in self.steppers:
            stepper.reorder(indices)


_SHARED = (
    "front_end",
    "source_features",
    "vocab_size",
    "target_vocab_size",
    "max_positions",
)
_SHARED_GENERATION = ("decoder_start_token_id", "eos_token_id", "pad_token_id")


def _check_member(first: EncoderDecoder, model: EncoderDecoder, first_name: str, name: str):
    """(source, target) id maps of member `name` (see _id_maps), or a ValueError naming what
    it does not share with the first member."""
    pairs = [(f"config.{k}", getattr(first.config, k), getattr(model.config, k)) for k in _SHARED]
    pairs += [
        (
            f"generation_config.{k}",
            getattr(first.generation_config, k),
            getattr(model.generation_config, k),
        )
        for k in _SHARED_GENERATION
    ]
    pairs.append(("quantized", first.quantized, model.quantized))
    for what, ours, theirs in pairs:
        if ours != theirs:
            raise ValueError(
                f"{name} has {what} = {theirs!r} but {first_name} has {ours!r}; the models "
                f"of an ensemble must share it"
            )
    maps = _id_maps(first.tokenizer, model.tokenizer)
    if maps is None:
        raise ValueError(
            f"{name}'s tokenizer differs from {first_name}'s (another vocabulary or another "
            f"tokenization): the models of an ensemble must write the same tokens"
        )
    return maps


def _id_maps(ours, theirs) -> tuple[Tensor | None, Tensor | None] | None:
    """(source, target) maps from our token ids to theirs (index[our id] = their id; None:
    the same ids): tokenizers saved alike have the same ids, and xattn's word-level
    tokenizers that hold the same words on each side (trained on other data: a word's id
    follows its count) are mapped; None for tokenizers that differ otherwise."""
    if _tokenizer_files(ours) == _tokenizer_files(theirs):
        return None, None
    if not all(isinstance(t, PairTokenizer) and t.kind == "word" for t in (ours, theirs)):
        return None
    maps = []
    for side in ("source", "target"):
        a, b = getattr(ours, side).get_vocab(), getattr(theirs, side).get_vocab()
        if a.keys() != b.keys():
            return None
        index = torch.empty(len(a), dtype=torch.long)
        for token, i in a.items():
            index[i] = b[token]
        maps.append(None if torch.equal(index, torch.arange(len(a))) else index)
    return maps[0], maps[1]


def _tokenizer_files(tokenizer) -> dict[str, bytes] | None:
    """The files a tokenizer saves, to compare two (None for none)."""
    if tokenizer is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save(folder)
        return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir())}
