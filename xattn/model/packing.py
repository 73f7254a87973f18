"""Linear layers for decoding steps, each in the faster of two layouts for its shape.

A decoding step multiplies a few rows by every weight matrix of the decoder: on a CPU it
is bound by reading the weights and by the fixed cost of each call. Two kernels compete:
the plain row-major F.linear, and oneDNN's blocked ("prepacked") weight layout, which has
a higher fixed cost a call and reads a large weight faster. Which one wins depends on the
CPU, the shape and the number of rows (measured in benchmarks/bench_generation.py: on one
Intel Xeon the packed layout lost on every 256-wide layer and won on the 8,000-row output
layer at 8 rows). So `step_linear(weight, bias, rows)`, called when decoding starts, times
both once per process for each (weight shape, rows) it meets, on random inputs of that
shape, and keeps the faster (`choose_kernel`); XATTN_STEP_KERNEL=packed or plain fixes the
choice. Both compute F.linear's arithmetic to float rounding.

Packed copies are made once per weight and kept in a table outside the model, keyed by the
parameter and dropped with it. A copy is made again after any change the table can see: a
new version of the weight (an in-place change: load_state_dict, copy_ or mul_ under
no_grad), any optimizer's step (fused optimizers change weights without a new version), and
model.train() or model.eval(). A change through `.data`, or in place to a weight made under
torch.inference_mode (which keeps no version), shows none of these: call forget() after one.
"""

from __future__ import annotations

import operator
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = [
    "PackedLinear",
    "StepLinears",
    "can_pack",
    "choose_kernel",
    "forget",
    "layer_step",
    "model_stamp",
    "step_linear",
]

_EPOCH = [0]  # counts forget() calls: a packed copy from an earlier epoch is stale


def forget(*_) -> None:
    """Make every packed copy stale: the next decoding step packs the weights again."""
    _EPOCH[0] += 1


# every optimizer's step, fused ones included, changes weights: the copies go stale
register_optimizer_step_post_hook(forget)


def _stamp(*tensors: Tensor | None) -> tuple[int, ...]:
    """What a packed copy of these tensors was made from: their versions and the epoch. An
    inference tensor (made under torch.inference_mode) has no version: it counts as -1, so
    an in-place change to one needs forget()."""
    return (_EPOCH[0], *(-1 if t.is_inference() else t._version for t in tensors if t is not None))


_SETS = [0]  # counts parameters, buffers and submodules set on any module


def _counted_set(*_) -> None:
    _SETS[0] += 1


for _register in (
    register_module_parameter_registration_hook,
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
):
    _register(_counted_set)

_TENSORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (sets, tensors, n)


def model_stamp(model: nn.Module) -> tuple[int, ...]:
    """_stamp of every parameter and buffer of a model, led by how many times one of them
    was replaced by another tensor. The list of them is read again only after a parameter,
    buffer or submodule was set on some module (walking the modules costs more than the
    versions: about 0.3 ms for a Marian-sized model, once per generate(compile=True))."""
    found = _TENSORS.get(model)
    if found is None or found[0] != _SETS[0]:
        tensors = (*model.parameters(), *model.buffers())
        replaced = 0
        if found is not None:
            same = len(tensors) == len(found[1]) and all(map(operator.is_, tensors, found[1]))
            replaced = found[2] + (not same)
        found = _TENSORS[model] = (_SETS[0], tensors, replaced)
    return (found[2], *_stamp(*found[1]))


class _ByTensor:
    """A table keyed by tensor identity whose entries go when their tensor is freed (a
    WeakKeyDictionary would compare tensors with ==, which works elementwise)."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[weakref.ref, object]] = {}

    def get(self, tensor: Tensor):
        found = self.entries.get(id(tensor))
        return None if found is None or found[0]() is not tensor else found[1]

    def put(self, tensor: Tensor, value) -> None:
        key = id(tensor)
        self.entries[key] = (weakref.ref(tensor, lambda _: self.entries.pop(key, None)), value)


_PACKED = _ByTensor()  # weight -> (its stamp when packed, the packed tensor)


def can_pack(weight: Tensor) -> bool:
    """Whether a weight can go into oneDNN's packed layout here: float32 on the CPU of a
    PyTorch build with oneDNN."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def _packed(weight: Tensor) -> Tensor:
    stamp = _stamp(weight)
    found = _PACKED.get(weight)
    if found is None or found[0] != stamp:
        found = (stamp, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
        _PACKED.put(weight, found)
    return found[1]


_KERNELS: dict[tuple[int, int, int, bool], str] = {}  # (out, in, rows, bias) -> kernel


def _best_time(fn: Callable[[], object], calls: int = 10, rounds: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - start)
    return best


def choose_kernel(out_features: int, in_features: int, rows: int, bias: bool = True) -> str:
    """ "packed" or "plain": the faster kernel for `rows` rows times a float32 weight
    (out_features, in_features) on this CPU, timed once per process on random inputs (a few
    ms) unless XATTN_STEP_KERNEL says which."""
    fixed = os.environ.get("XATTN_STEP_KERNEL", "auto")
    if fixed in ("packed", "plain"):
        return fixed
    if fixed != "auto":
        raise ValueError(f"XATTN_STEP_KERNEL={fixed!r}: expected packed, plain or auto")
    key = (out_features, in_features, rows, bias)
    if key not in _KERNELS:
        with torch.no_grad():
            weight = torch.randn(out_features, in_features)
            b = torch.randn(out_features) if bias else None
            x = torch.randn(rows, in_features)
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
            plain = _best_time(lambda: F.linear(x, weight, b))
            fast = _best_time(
                lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
            )
        _KERNELS[key] = "packed" if fast < plain else "plain"
    return _KERNELS[key]


class PackedLinear:
    """y = x W^T + b with W read from its packed copy: the same arithmetic as the linear
    layer (weight (out, in), bias (out,) or None)."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        self.weight, self.bias = weight, bias
        self.packed = _packed(weight)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def step_linear(
    weight: Tensor, bias: Tensor | None = None, rows: int = 1
) -> Callable[[Tensor], Tensor]:
    """A callable computing F.linear(x, weight, bias) for decoding steps of `rows` rows: a
    PackedLinear when can_pack(weight) and choose_kernel finds the packed layout faster for
    that shape, plain F.linear otherwise; weight may be fused (not a module's own)."""
    if can_pack(weight) and not torch.is_grad_enabled():
        out, features = weight.shape
        if choose_kernel(out, features, rows, bias is not None) == "packed":
            return PackedLinear(weight, bias)
    return lambda x: F.linear(x, weight, bias)


def layer_step(layer: nn.Module, rows: int = 1) -> Callable[[Tensor], Tensor]:
    """A linear layer for decoding steps of `rows` rows: an nn.Linear through step_linear,
    an int8 layer (model.quantize) through its forward (no module call)."""
    if isinstance(layer, nn.Linear):
        return step_linear(layer.weight, layer.bias, rows)
    return layer.forward


def _traced(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """A linear layer for a step torch.compile traces: F.linear of an nn.Linear's weights,
    an int8 layer's forward."""
    if isinstance(layer, nn.Linear):
        return partial(F.linear, weight=layer.weight, bias=layer.bias)
    return layer.forward


_FUSED = _ByTensor()  # q projection weight -> (stamp of q, k, v; fused weight and bias)


def _fused_qkv(attn, rows: int) -> Callable[[Tensor], Tensor]:
    """One linear for the q, k and v projections of a self-attention module (their weights
    stacked), made again when one of them changes (an int8 model fused them already)."""
    if hasattr(attn, "qkv_int8"):
        return attn.qkv_int8.forward
    parts = (attn.q_proj, attn.k_proj, attn.v_proj)
    stamp = _stamp(*(t for p in parts for t in (p.weight, p.bias)))
    found = _FUSED.get(attn.q_proj.weight)
    if found is None or found[0] != stamp:
        found = (stamp, *attn.fused_projection())
        _FUSED.put(attn.q_proj.weight, found)
    return step_linear(found[1], found[2], rows)


@dataclass(frozen=True)
class StepLinears:
    """A decoder layer's linear layers for decoding steps (see step_linear): q, k and v of
    self-attention fused into one, its output, cross-attention's q and output, and the
    feed-forward layers, each chosen for steps of `rows` rows."""

    qkv: Callable[[Tensor], Tensor]
    self_out: Callable[[Tensor], Tensor]
    cross_q: Callable[[Tensor], Tensor]
    cross_out: Callable[[Tensor], Tensor]
    fc1: Callable[[Tensor], Tensor]
    fc2: Callable[[Tensor], Tensor]

    @classmethod
    def plain(cls, layer) -> StepLinears:
        """The layer's linear layers as plain F.linear of its own weights, q, k and v
        stacked at each call (int8 layers: their forward): for steps that torch.compile
        traces (a frozen graph holds the stacked weight as a constant and chooses its own
        kernels)."""
        attn = layer.self_attn
        if hasattr(attn, "qkv_int8"):
            qkv = attn.qkv_int8.forward
        else:
            weight, bias = attn.fused_projection()
            qkv = partial(F.linear, weight=weight, bias=bias)
        linears = (attn.out_proj, layer.cross_attn.q_proj, layer.cross_attn.out_proj)
        linears += (layer.ffn.fc1, layer.ffn.fc2)
        return cls(qkv, *(_traced(m) for m in linears))

    @classmethod
    def of(cls, layer, rows: int = 1) -> StepLinears:
        return cls(
            _fused_qkv(layer.self_attn, rows),
            layer_step(layer.self_attn.out_proj, rows),
            layer_step(layer.cross_attn.q_proj, rows),
            layer_step(layer.cross_attn.out_proj, rows),
            layer_step(layer.ffn.fc1, rows),
            layer_step(layer.ffn.fc2, rows),
        )
