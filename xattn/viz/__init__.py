"""Pictures of cross-attention (matplotlib is imported only here, and only when drawing)."""

from .maps import attention_html, plot_attention, plot_attention_grid, plot_loss_curve

__all__ = ["attention_html", "plot_attention", "plot_attention_grid", "plot_loss_curve"]
