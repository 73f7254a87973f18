"""Generation: search strategies that drive a step function, and logits processors."""

from .config import GenerationConfig
from .search import SearchResult, Stepper, beam_search, greedy_search, search

__all__ = ["GenerationConfig", "SearchResult", "Stepper", "beam_search", "greedy_search", "search"]
