"""int8 inference on the CPU: EncoderDecoder.quantize("int8") gives a copy whose linear layers
keep their weights in int8 (one scale per output row) and quantize their input per call
(dynamic int8: PyTorch's fbgemm kernels, VNNI where the CPU has it). Embeddings, norms and
convolutions stay float32. The copy is for inference: it refuses to be saved (save the
float model and quantize after loading).

The kernels are PyTorch's quantized ops (torch.ops.quantized.linear_prepack and
linear_dynamic); PyTorch deprecates its quantized tensors for a future release, and xattn
pins the release it tests with.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

__all__ = ["Int8Linear", "quantize_int8"]


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored in int8, one scale per output row (symmetric), and x
    quantized per call."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float().cpu()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        scales = (weight.abs().amax(1) / 127.0).clamp_min(1e-12).double()
        zeros = torch.zeros(len(scales), dtype=torch.long)
        with warnings.catch_warnings():  # PyTorch warns that quantized tensors will go
            warnings.simplefilter("ignore")
            levels = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(
                levels, None if bias is None else bias.detach().float().cpu()
            )

    @classmethod
    def of(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic(x, self.packed, True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(model):
    """An int8 copy of an EncoderDecoder (see the module docstring); `model` is unchanged.
    Each decoder self-attention also gets its q, k and v projections fused into one int8
    layer (qkv_int8), for the decoding steps."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 quantization is for CPU inference: move the model to the CPU")
    if not hasattr(torch.ops.quantized, "linear_dynamic"):
        raise ValueError("this PyTorch build has no quantized int8 linear kernels")
    quantized = copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer}).eval()
    for layer in quantized.decoder_layers:
        attn = layer.self_attn
        weight, bias = attn.fused_projection()
        attn.qkv_int8 = Int8Linear(weight, bias)
    for parent in list(quantized.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear.of(child))
    quantized.quantized = "int8"
    return quantized
