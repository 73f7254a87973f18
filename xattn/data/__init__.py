"""Data: tokenizers (and, later, datasets and collation)."""

from .tokenizers import MarianTokenizer, load_tokenizer

__all__ = ["MarianTokenizer", "load_tokenizer"]
