"""int8 inference on the CPU: EncoderDecoder.quantize("int8") gives a copy whose linear
layers keep their weights in int8 (one scale per output row, symmetric) and quantize their
input per call (dynamic int8). Embeddings, norms and convolutions stay float32. The copy
is for inference: it refuses to be saved (save the float model and quantize after
loading).

Two kernels share the int8 weights. Eager calls run PyTorch's fbgemm kernel
(torch.ops.quantized.linear_dynamic: one call that quantizes the whole input to 7 bits
with one scale and zero point), on a packed copy of the weights that a layer makes at its
first eager call (a copy only compiled steps use holds none). A step that torch.compile
traces (generate(compile=True)) quantizes each row of the input to int8 with a scale of
its own (symmetric), in tensor operations that inductor fuses around PyTorch's int8 matrix
product (torch._int_mm, oneDNN, VNNI where the CPU has it). The two round the input
differently, so compiled and eager int8 tokens may differ where two are near-tied. PyTorch
deprecates its quantized tensors (fbgemm's packed weights) for a future release; xattn
pins the release it tests with.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from ..attention.modules import CrossAttention, SelfAttention

__all__ = ["Int8Linear", "quantize_int8"]


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored in int8, one scale per output row (see the module
    docstring for the two kernels)."""

    def __init__(self, weight_t: Tensor, scale: Tensor, bias: Tensor | None) -> None:
        """weight_t (in, out) int8 levels, scale (out,) float32, bias (out,) or None: W^T is
        weight_t times scale (see of_weights for float weights)."""
        super().__init__()
        self.in_features, self.out_features = weight_t.shape
        self.register_buffer("weight_t", weight_t)  # (in, out): the fast layout for _int_mm
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)
        self.packed = None  # fbgemm's copy of the weights, made by the first eager call

    @classmethod
    def of_weights(cls, weight: Tensor, bias: Tensor | None) -> Int8Linear:
        """Float weights (out, in) quantized, one symmetric scale per output row."""
        weight = weight.detach().float().cpu()
        bias = None if bias is None else bias.detach().float().cpu()
        scale = (weight.abs().amax(1) / 127.0).clamp_min(1e-12)
        levels = torch.round(weight / scale[:, None]).to(torch.int8)
        return cls(levels.t(), scale, bias)

    @classmethod
    def of(cls, linear: nn.Linear) -> Int8Linear:
        return cls.of_weights(linear.weight, linear.bias)

    def rows(self, start: int, stop: int) -> Int8Linear:
        """The layer of output rows start:stop of this one, on views of its int8 weights,
        scales and bias (the same numbers, no copy)."""
        bias = None if self.bias is None else self.bias[start:stop]
        return Int8Linear(self.weight_t[:, start:stop], self.scale[start:stop], bias)

    def _prepack(self):
        """fbgemm's packed weights of this layer's int8 weights, scales and bias."""
        zeros = torch.zeros(len(self.scale), dtype=torch.long)
        with warnings.catch_warnings():  # PyTorch warns that quantized tensors will go
            warnings.simplefilter("ignore")
            quantized = torch._make_per_channel_quantized_tensor(
                self.weight_t.t().contiguous(), self.scale.double(), zeros, 0
            )
            return torch.ops.quantized.linear_prepack(quantized, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return self.traced(x)
        if self.packed is None:
            self.packed = self._prepack()
        return torch.ops.quantized.linear_dynamic(x, self.packed, True)

    def traced(self, x: Tensor) -> Tensor:
        """The product as a compiled step computes it: each row of x scaled to [-127, 127]
        and rounded to int8, multiplied with the int8 weights in int32 (torch._int_mm) and
        scaled back to float32."""
        rows = x.reshape(-1, self.in_features)
        step = rows.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0  # (M, 1)
        levels = torch.round(rows / step).to(torch.int8)
        y = torch._int_mm(levels, self.weight_t).float() * (step * self.scale)  # (M, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(model):
    """An int8 copy of an EncoderDecoder (see the module docstring); `model` is unchanged.
    Each self-attention gets its q, k and v projections stacked into one int8 layer
    (qkv_int8), each cross-attention its k and v (kv_int8): one product instead of three or
    two in the encoder, the memories' projection and the decoding steps. The separate
    projections stay as layers of the stacked one's rows (views: the weights are held once)."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 quantization is for CPU inference: move the model to the CPU")
    if not hasattr(torch.ops.quantized, "linear_dynamic"):
        raise ValueError("this PyTorch build has no quantized int8 linear kernels")
    quantized = copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer}).eval()
    for attn in list(quantized.modules()):
        if isinstance(attn, SelfAttention):
            _stack(attn, ("q_proj", "k_proj", "v_proj"))
        elif isinstance(attn, CrossAttention):
            _stack(attn, ("k_proj", "v_proj"))
    for parent in list(quantized.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear.of(child))
    quantized.quantized = "int8"
    return quantized


def _stack(attn: nn.Module, parts: tuple[str, ...]) -> None:
    """The attention's stacked int8 layer (its _stacked_int8: qkv_int8, kv_int8) of the
    projections `parts`; each part then a layer of its rows."""
    stacked = Int8Linear.of_weights(*attn._fused(tuple(getattr(attn, p) for p in parts)))
    setattr(attn, attn._stacked_int8, stacked)
    start = 0
    for part in parts:
        stop = start + getattr(attn, part).out_features
        setattr(attn, part, stacked.rows(start, stop))
        start = stop
