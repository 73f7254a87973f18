"""ModelConfig: every choice of the encoder-decoder, frozen, validated, with named presets.

Enough to express Marian and BART exactly (post-norm, sinusoidal or offset learned
positions, embedding scale, embedding LayerNorm, final logits bias) and a good pre-norm
default for our own models.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ACTIVATIONS", "PRESETS", "ModelConfig"]

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("sinusoidal", "learned", "none")
FRONT_END_NAMES = ("image", "audio", "sentences", "whisper")


@dataclass(frozen=True)
class ModelConfig:
    """The shape and conventions of an EncoderDecoder.

    Vocabulary: `vocab_size` for the source; `target_vocab_size` for the target (None: the
    same). `share_embeddings` makes source and target one matrix; `tie_output` uses the
    target embedding as the output projection. `source_features` set to F makes the encoder
    read float features (B, S, F) through a linear front end instead of token ids.
    `embed_scale` multiplies token embeddings by sqrt(d_model) on the way in; a new model's
    token embeddings start at N(0, 1 / scale^2), so the scaled inputs are N(0, 1) either way
    and, with the default scale, a tied output layer starts with logits of about unit size.

    `front_end` names a richer input front end (see model/frontends.py), which then reads
    `source_features` as: "image", the image height H of pixel columns (B, W, H); "audio",
    the number of log-mel bins F of frames (B, frames, F); "sentences", the most words per
    sentence L of passages (B, N, L) of word ids from a vocabulary of vocab_size;
    "whisper", Whisper's audio stem over F log-mel bins, with `source_positions` fixed
    encoder positions of its own (max_positions then counts the decoder's).
    """

    vocab_size: int = 8000
    target_vocab_size: int | None = None
    share_embeddings: bool = True
    tie_output: bool = True
    source_features: int | None = None
    front_end: str | None = None
    source_positions: int | None = None
    d_model: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int | None = None
    ffn_dim: int = 1024
    activation: str = "gelu"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    pre_norm: bool = True
    positions: str = "sinusoidal"
    position_offset: int = 0
    max_positions: int = 1024
    embed_scale: bool = True
    embed_norm: bool = False
    final_logits_bias: bool = False
    bias: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    pad_token_id: int = 0
    bos_token_id: int | None = 1
    eos_token_id: int = 2
    decoder_start_token_id: int = 1

    def __post_init__(self) -> None:
        def fail(field: str, why: str) -> None:
            raise ValueError(f"ModelConfig.{field}={getattr(self, field)!r}: {why}")

        for field in ("vocab_size", "d_model", "num_heads", "ffn_dim", "max_positions"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                fail(field, "expected a positive int")
        for field in ("encoder_layers", "decoder_layers", "position_offset"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(field, "expected an int >= 0")
        for field in ("target_vocab_size", "source_features", "num_kv_heads", "source_positions"):
            value = getattr(self, field)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                fail(field, "expected a positive int or None")
        if self.front_end is not None:
            if self.front_end not in FRONT_END_NAMES:
                fail("front_end", f"expected None or one of {', '.join(FRONT_END_NAMES)}")
            if self.source_features is None:
                fail(
                    "front_end",
                    "needs source_features (image height, mel bins or words per sentence)",
                )
            if self.front_end == "image" and self.d_model % 4:
                fail("d_model", "the image front end needs a width divisible by 4")
            if self.front_end == "whisper" and self.source_positions is None:
                fail("front_end", "the whisper front end needs source_positions")
        if self.d_model % self.num_heads:
            fail("d_model", f"not divisible by num_heads={self.num_heads}")
        if self.num_heads % self.kv_heads:
            fail("num_kv_heads", f"must divide num_heads={self.num_heads}")
        if self.activation not in ACTIVATIONS:
            fail("activation", f"expected one of {', '.join(ACTIVATIONS)}")
        if self.norm not in NORMS:
            fail("norm", f"expected one of {', '.join(NORMS)}")
        if self.positions not in POSITIONS:
            fail("positions", f"expected one of {', '.join(POSITIONS)}")
        if self.positions == "sinusoidal" and self.d_model % 2:
            fail("d_model", "sinusoidal positions need an even width")
        for field in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                fail(field, "expected 0 <= value < 1")
        if not isinstance(self.norm_eps, (int, float)) or not self.norm_eps > 0:
            fail("norm_eps", "expected a positive number")
        if self.share_embeddings and self.target_vocab != self.vocab_size:
            fail(
                "share_embeddings",
                f"one shared matrix needs vocab_size == target_vocab_size, got "
                f"{self.vocab_size} and {self.target_vocab_size}",
            )
        if self.share_embeddings and self.source_features is not None:
            fail("share_embeddings", "a feature front end has no source embedding to share")
        for field in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, field)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not (0 <= value < self.target_vocab)
            ):
                fail(field, f"expected a token id in [0, {self.target_vocab})")
        if self.bos_token_id is not None and not 0 <= self.bos_token_id < self.target_vocab:
            fail("bos_token_id", f"expected None or a token id in [0, {self.target_vocab})")

    # ---- derived fields ----------------------------------------------------------------

    @property
    def target_vocab(self) -> int:
        """V, the size of the output vocabulary."""
        return self.target_vocab_size or self.vocab_size

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    # ---- presets and serialization -----------------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named preset (see PRESETS), with fields overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"xattn": self.to_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        from ..utils import read_json

        path = Path(path)
        data = read_json(path)
        if "xattn" not in data:
            raise ValueError(f"{path}: not an xattn config (no 'xattn' section)")
        return cls.from_dict(data["xattn"])


PRESETS: dict[str, ModelConfig] = {
    # Unit tests: a model that runs in milliseconds.
    "tiny": ModelConfig(
        vocab_size=64,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        num_heads=4,
        ffn_dim=64,
        max_positions=128,
        dropout=0.0,
    ),
    # The default for our own small tasks: pre-norm, 2 + 2 layers, width 128.
    "small": ModelConfig(
        vocab_size=1000,
        d_model=128,
        encoder_layers=2,
        decoder_layers=2,
        num_heads=4,
        ffn_dim=512,
        max_positions=256,
        dropout=0.1,
    ),
    # Marian-sized (the benchmark model): d_model 256, 3 + 3 layers, 4 heads, ffn 1024.
    "base": ModelConfig(
        vocab_size=8000,
        d_model=256,
        encoder_layers=3,
        decoder_layers=3,
        num_heads=4,
        ffn_dim=1024,
        max_positions=512,
        dropout=0.1,
    ),
    # Marian's conventions at base size: post-norm, SiLU, sqrt(d) embedding scale.
    "marian": ModelConfig(
        vocab_size=8000,
        d_model=256,
        encoder_layers=3,
        decoder_layers=3,
        num_heads=4,
        ffn_dim=1024,
        max_positions=512,
        activation="silu",
        pre_norm=False,
        embed_scale=True,
        final_logits_bias=True,
        dropout=0.1,
        pad_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=0,
        bos_token_id=None,
    ),
}
