"""GenerationConfig: how to search, with transformers' names and meanings.

A model loaded with `EncoderDecoder.from_hf` takes its defaults from the folder's
generation_config.json, as transformers does; keyword arguments to `generate` override them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["GenerationConfig"]


@dataclass(frozen=True)
class GenerationConfig:
    """Search settings (names and semantics follow transformers' GenerationConfig).

    Lengths count decoder tokens including the start token: `max_length` is the longest
    output row; `max_new_tokens`, when set, wins over it (max_length = 1 + max_new_tokens).
    `early_stopping`: True stops a source when num_beams hypotheses are finished; False
    uses transformers' heuristic; "never" runs the canonical beam search.
    `alignment_heads` (Whisper's generation-config field): the cross-attention heads, as
    (layer, head) pairs counting from 0, whose mean attention aligns the output with the
    input; search does not use it, attention pictures and word timestamps do (None: the
    mean of all heads), with `median_filter_width` positions of smoothing for timestamps and
    (xattn's speech models) `pause_log_weight` (see alignment.token_times).
    `suppress_tokens` are never generated, `begin_suppress_tokens` not as the first token.
    Whisper's prompt settings (`no_timestamps_token_id`, `lang_to_id`, `task_to_id`,
    `is_multilingual`, `forced_decoder_ids`) are kept as its generation_config.json has them.
    """

    max_length: int = 20
    max_new_tokens: int | None = None
    min_length: int = 0
    min_new_tokens: int | None = None
    num_beams: int = 1
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: tuple[tuple[int, ...], ...] | None = None
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    eos_token_id: tuple[int, ...] | None = None
    pad_token_id: int | None = None
    decoder_start_token_id: int | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: tuple[int, ...] | None = None
    alignment_heads: tuple[tuple[int, int], ...] | None = None
    median_filter_width: int = 7
    pause_log_weight: float | None = None
    suppress_tokens: tuple[int, ...] | None = None
    begin_suppress_tokens: tuple[int, ...] | None = None
    no_timestamps_token_id: int | None = None
    lang_to_id: dict[str, int] | None = None
    task_to_id: dict[str, int] | None = None
    is_multilingual: bool | None = None
    forced_decoder_ids: tuple[tuple[int, int | None], ...] | None = None

    def __post_init__(self) -> None:
        # Normalize transformers' int-or-list fields to tuples.
        for name in (
            "eos_token_id",
            "forced_eos_token_id",
            "suppress_tokens",
            "begin_suppress_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, (value,))
            elif isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("bad_words_ids", "alignment_heads", "forced_decoder_ids"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(tuple(w) for w in getattr(self, name)))

        def fail(name: str, why: str) -> None:
            raise ValueError(f"GenerationConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("max_length", "num_beams", "num_return_sequences"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "expected a positive int")
        for name in ("max_new_tokens",):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                fail(name, "expected a positive int or None")
        for name in ("min_length", "no_repeat_ngram_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                fail(name, "expected an int >= 0")
        if self.min_new_tokens is not None and (
            not isinstance(self.min_new_tokens, int) or self.min_new_tokens < 0
        ):
            fail("min_new_tokens", "expected an int >= 0 or None")
        if self.num_return_sequences > self.num_beams and not self.do_sample:
            fail("num_return_sequences", f"cannot exceed num_beams={self.num_beams}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            fail("temperature", "expected a positive number")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 0):
            fail("top_k", "expected an int >= 0 or None")
        if not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            fail("top_p", "expected 0 < top_p <= 1")
        if not (isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0):
            fail("repetition_penalty", "expected a positive number")
        if not isinstance(self.length_penalty, (int, float)) or not math.isfinite(
            self.length_penalty
        ):
            fail("length_penalty", "expected a finite number")
        if self.early_stopping not in (True, False, "never"):
            fail("early_stopping", "expected True, False or 'never'")
        if self.bad_words_ids is not None and (
            not self.bad_words_ids or any(not w for w in self.bad_words_ids)
        ):
            fail("bad_words_ids", "expected a non-empty list of non-empty token id lists")
        if self.alignment_heads is not None and (
            not self.alignment_heads
            or any(
                len(pair) != 2 or any(not isinstance(i, int) or i < 0 for i in pair)
                for pair in self.alignment_heads
            )
        ):
            fail("alignment_heads", "expected a non-empty list of [layer, head] pairs (from 0)")
        for name in ("suppress_tokens", "begin_suppress_tokens"):
            value = getattr(self, name)
            if value is not None and any(not isinstance(t, int) or t < 0 for t in value):
                fail(name, "expected a list of token ids")
        if not isinstance(self.median_filter_width, int) or self.median_filter_width % 2 != 1:
            fail("median_filter_width", "expected an odd positive int")

    def replace(self, **changes: Any) -> GenerationConfig:
        """A copy with some settings changed; an unknown name is a ValueError naming it."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            names = ", ".join(sorted(known))
            raise ValueError(f"unknown generation setting(s) {', '.join(unknown)}; known: {names}")
        return dataclasses.replace(self, **changes)

    def total_length(self, prompt_length: int = 1) -> int:
        """The longest output row, start token included."""
        if self.max_new_tokens is not None:
            return prompt_length + self.max_new_tokens
        return self.max_length

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = [list(v) if isinstance(v, tuple) else v for v in value]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """From a dict such as transformers' generation_config.json (unknown keys ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and v is not None}
        if "early_stopping" in kwargs and kwargs["early_stopping"] not in (True, False, "never"):
            kwargs["early_stopping"] = bool(kwargs["early_stopping"])
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> GenerationConfig:
        from ..utils import read_json

        try:
            return cls.from_dict(read_json(Path(path)))
        except (TypeError, ValueError) as err:  # a bad value: say which file holds it
            raise ValueError(err if str(path) in str(err) else f"{path}: {err}") from err

    def save(self, path: str | Path) -> None:
        """Write the JSON file whole or not at all (a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
