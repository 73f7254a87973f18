"""The encoder-decoder transformer: config, building blocks, and the model."""

from .config import PRESETS, ModelConfig
from .ensemble import Ensemble
from .transformer import DecoderState, EncoderDecoder, GenerationOutput

__all__ = [
    "PRESETS",
    "DecoderState",
    "EncoderDecoder",
    "Ensemble",
    "GenerationOutput",
    "ModelConfig",
]
