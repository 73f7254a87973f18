"""The decoding step of generate(compile=True), compiled once per model with torch.compile.

The step is EncoderDecoder._step_at: the lean step's arithmetic (layers.decode_one) at a
position held in a tensor, attending the whole preallocated self-attention cache under the
mask of its filled positions, so that no shape changes from one length to the next and one
graph serves every step of every length. It is compiled with inductor's weight freezing
(the weights become constants of the graph, laid out for its kernels; without it the
step compiled slower still on a CPU); a graph frozen on weights that have changed since
would be wrong, so a model's compiled step is made again after any change `packing` can
see (a new version of a parameter or buffer, an optimizer step, train() / eval(),
packing.forget()).

Each model's step is compiled from its own copy of the function's code, so that dynamo
keeps its graphs apart from other models' and drops them with the model. The first call
traces and compiles (seconds to tens of seconds on a CPU); calls with the same shapes
reuse the graph; the first call with other shapes (rows, cache length, source length)
compiles once more, with those sizes left symbolic, and that graph serves all later shapes.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable
from functools import partial

import torch
import torch._inductor.config as inductor_config
from torch import nn

from .packing import _stamp

__all__ = ["compiled_step"]

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (stamp, fn)


def _own_copy(function: types.FunctionType) -> types.FunctionType:
    """The same function with its own code object (dynamo keeps its graphs per code)."""
    return types.FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )


def compiled_step(model: nn.Module) -> Callable:
    """model._step_at compiled (tokens (N,), position (1,), memories, caches) -> logits
    (N, V): the one made for this model, unless its weights changed since."""
    stamp = _stamp(*model.parameters(), *model.buffers())
    found = _COMPILED.get(model)
    if found is None or found[0] != stamp:
        found = (stamp, _Frozen(torch.compile(_own_copy(type(model)._step_at))))
        _COMPILED[model] = found
    return partial(found[1], model)


class _Frozen:
    """Calls a compiled function with inductor's freezing on (torch.compile's options= did
    not reach it in PyTorch 2.13). Every call, not only the one that compiles: dynamo reads
    the setting while it traces and checks it on each call (a call without it compiles an
    unfrozen graph). It holds no model: the table's entry goes with its model."""

    def __init__(self, compiled: Callable) -> None:
        self.compiled = compiled

    def __call__(self, *args):
        with inductor_config.patch(freezing=True):
            return self.compiled(*args)
