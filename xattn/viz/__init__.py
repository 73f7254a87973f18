"""Pictures of cross-attention: PNG files (matplotlib, imported only when drawing) and the
self-contained HTML explorer (viz.explorer)."""

from .explorer import Explorer, ExplorerExample, explorer
from .inputs import plot_image_attention, plot_passage_attention, plot_spectrogram_attention
from .maps import plot_attention, plot_attention_grid, plot_loss_curve

__all__ = [
    "Explorer",
    "ExplorerExample",
    "explorer",
    "plot_attention",
    "plot_attention_grid",
    "plot_image_attention",
    "plot_loss_curve",
    "plot_passage_attention",
    "plot_spectrogram_attention",
]
