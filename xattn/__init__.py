"""xattn: cross-attention for PyTorch.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + bias, masked) V

Q comes from the target sequence, K and V from the source. The formula is written out in
`xattn.attention.functional._math_attention`; every backend is tested against it.
"""

from .attention import (
    BACKENDS,
    BackendChoice,
    CrossAttention,
    CrossAttentionMemory,
    KVCache,
    SelfAttention,
    attention,
    causal_mask,
    explain_backend,
)
from .generation import GenerationConfig
from .model import DecoderState, EncoderDecoder, Ensemble, GenerationOutput, ModelConfig

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendChoice",
    "CrossAttention",
    "CrossAttentionMemory",
    "DecoderState",
    "EncoderDecoder",
    "Ensemble",
    "GenerationConfig",
    "GenerationOutput",
    "KVCache",
    "ModelConfig",
    "SelfAttention",
    "__version__",
    "attention",
    "causal_mask",
    "explain_backend",
]
