"""The encoder-decoder transformer: config, building blocks, and the model."""

from .config import PRESETS, ModelConfig
from .transformer import DecoderState, EncoderDecoder, GenerationOutput

__all__ = ["PRESETS", "DecoderState", "EncoderDecoder", "GenerationOutput", "ModelConfig"]
