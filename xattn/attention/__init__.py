"""The attention core: the math and its backends, modules, and caches."""

from .cache import CrossAttentionMemory, KVCache
from .functional import BACKENDS, BackendChoice, attention, causal_mask, explain_backend
from .modules import CrossAttention, SelfAttention

__all__ = [
    "BACKENDS",
    "BackendChoice",
    "CrossAttention",
    "CrossAttentionMemory",
    "KVCache",
    "SelfAttention",
    "attention",
    "causal_mask",
    "explain_backend",
]
