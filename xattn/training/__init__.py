"""Training: the config, batching, the loop, its losses, evaluation, checkpoints, data
parallelism."""

from .config import TrainConfig
from .evaluation import evaluate, predict
from .loop import train
from .losses import token_cross_entropy

__all__ = ["TrainConfig", "evaluate", "predict", "token_cross_entropy", "train"]
