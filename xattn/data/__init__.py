"""Data: tokenizers, and the embedded default English-Spanish corpus (data.en_es)."""

from .tokenizers import MarianTokenizer, load_tokenizer

__all__ = ["MarianTokenizer", "load_tokenizer"]
