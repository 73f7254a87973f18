"""Training: batching, the loop, checkpoints, metrics."""

from .loop import TrainConfig, evaluate, train, translate

__all__ = ["TrainConfig", "evaluate", "train", "translate"]
