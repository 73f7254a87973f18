"""Pictures of cross-attention (matplotlib is imported only here, and only when drawing)."""

from .inputs import plot_image_attention, plot_passage_attention, plot_spectrogram_attention
from .maps import attention_html, plot_attention, plot_attention_grid, plot_loss_curve

__all__ = [
    "attention_html",
    "plot_attention",
    "plot_attention_grid",
    "plot_image_attention",
    "plot_loss_curve",
    "plot_passage_attention",
    "plot_spectrogram_attention",
]
