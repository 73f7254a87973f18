"""Training: the config, batching, the loop, evaluation, checkpoints, data parallelism."""

from .config import TrainConfig
from .evaluation import evaluate, predict
from .loop import train

__all__ = ["TrainConfig", "evaluate", "predict", "train"]
