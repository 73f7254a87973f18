"""The decoding steps of generate(compile=True), compiled once per model with torch.compile.

Greedy search takes GREEDY_STEPS steps per call of one graph, EncoderDecoder._greedy_at:
each step picks its tokens inside the graph (the search's bans and forced tokens applied,
finished rows given the pad token) and feeds them to the next, so that the Python between
graph calls, which costs about as much as a step's arithmetic at one row on a CPU, runs
once for every GREEDY_STEPS steps; a last call may run steps past the end (dropped).
Beam search takes BEAM_STEPS steps with their search in one graph call,
EncoderDecoder._beam_at (the candidates, the finished pool and the stopping rule,
search.beam_advance, on tensors the graph updates in place; steps after the end keep the
state): no cache is reordered, each row reads its keys and values through a table of the
cache rows that hold them (KVCache.rows), which a row continuing another takes from it.
Sampling, whose draws are made in Python, and processors that are not
bans call one step at a time, EncoderDecoder._step_at. Every graph runs the lean step's
arithmetic (layers.decode_one) at a position held in a tensor, attending the whole
preallocated self-attention cache under the mask of its filled positions, so that no
shape changes from one length to the next and one graph serves every step of every
length (an int8 copy's linear layers run their traced int8 product, model.quantize). It
is compiled with inductor's weight freezing (the weights become constants of the graph,
laid out for its kernels, a copy for each product: a graph of k unrolled steps holds k
copies, so where GREEDY_STEPS copies would not fit in a CPU's last-level cache the greedy
graph of one row takes fewer steps, steps_per_call); on a CPU also with inductor's own C++
matrix-product kernels, chosen against ATen's by timing each product of the step once
(max-autotune), each fused with what follows it (bias, activation, residual), and a C++
wrapper that calls the kernels without Python in between. A graph frozen on weights that
have changed since would be wrong, so a model's compiled steps are made again after any
change `packing` can see (a new version of a parameter or buffer, one replaced by
another tensor, an optimizer step, train() / eval(), packing.forget();
packing.model_stamp).

The encoder of a source of token ids without padding runs compiled too, with the
projection of the cross-attention memories (EncoderDecoder._encoder_memories, one graph; a
padded batch and a front end's input run them eagerly); docs/benchmarks.md has what it
saves.

Each model's function is compiled from its own copy of the function's code, so that dynamo
keeps its graphs apart from other models' and drops them with the model. The first call
traces and compiles (tens of seconds on a CPU); calls with the same shapes reuse the
graph. A call in which a size (rows, cache length, source length) differs for the first
time compiles once more with that size left symbolic (dynamo's automatic dynamic shapes,
one size at a time): 2,000 sentences of the translation demo in batches of 64 make three
graphs (the first batch, the first with other source lengths, the last with fewer rows).
A batch without padding runs the graphs of padded ones (its memories get an all-True
mask), so padding makes no graph of its own.
"""

from __future__ import annotations

import functools
import types
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
import torch._inductor.config as inductor_config
from torch import nn

from .packing import model_stamp

__all__ = [
    "BEAM_STEPS",
    "GREEDY_STEPS",
    "compile_options",
    "compiled_beam",
    "compiled_encoder",
    "compiled_greedy",
    "compiled_step",
    "steps_per_call",
]

_COMPILED: weakref.WeakKeyDictionary = (
    weakref.WeakKeyDictionary()
)  # model -> {key: (stamp, fn, kw)}

GREEDY_STEPS = 4  # greedy steps per graph call (docs/benchmarks.md: 1, 4 and 8 measured)
BEAM_STEPS = 4  # beam search steps per graph call


def compile_options(device: torch.device) -> dict[str, object]:
    """The inductor settings a step on `device` is compiled with."""
    if device.type != "cpu":
        return {"freezing": True}
    return {
        "freezing": True,
        "max_autotune": True,
        "max_autotune_gemm_backends": "CPP,ATEN",
        "cpp_wrapper": True,
        "autotune_num_choices_displayed": 0,  # no table of timings on stderr
        "max_autotune_report_choices_stats": False,
    }


def _own_copy(function: types.FunctionType) -> types.FunctionType:
    """The same function with its own code object (dynamo keeps its graphs per code)."""
    return types.FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )


def _compiled(
    model: nn.Module, name: str, variant: tuple = (), defaults: Callable[[], dict] = dict
) -> CompiledStep:
    """The method `name` of model compiled, for the calls of one generate: the graphs made
    for this model (one function per variant), unless its weights changed since.
    defaults() gives keyword arguments of the method fixed for the function's graphs (read
    while tracing), called only when the function is made."""
    stamp = model_stamp(model)
    functions = _COMPILED.setdefault(model, {})
    key = (name, *variant)
    found = functions.get(key)
    if found is None or found[0] != stamp:
        fixed = defaults()
        function = _own_copy(getattr(type(model), name))
        function.__kwdefaults__ = {**(function.__kwdefaults__ or {}), **fixed}
        found = functions[key] = (stamp, torch.compile(function), fixed)
    options = compile_options(next(model.parameters()).device)
    return CompiledStep(model, found[1], options, **found[2])


@functools.cache
def last_level_cache_bytes() -> int | None:
    """The size of the processor's largest cache (Linux: sysfs), or None where unknown."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip()
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        if text[:-1].isdigit() and text[-1] in units:
            sizes.append(int(text[:-1]) * units[text[-1]])
        elif text.isdigit():
            sizes.append(int(text))
    return max(sizes) if sizes else None


def step_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights a decoding step reads: the decoder layers' and the output
    layer's parameters and buffers (an int8 copy's int8 weights), each tensor once."""
    seen, total = set(), 0
    for module in (model.decoder_layers, model.lm_head):
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.nbytes
    return total


def steps_per_call(model: nn.Module, most: int, rows: int) -> int:
    """most, or for one row on a CPU fewer (halved until they fit) where a graph's copies
    of the step's weights would not fit in the last-level cache: inductor packs the
    weights of each matrix product of a frozen graph into a constant of its own, so a
    graph of k unrolled steps holds k copies, and one row's products (a matrix times a
    vector each) are bound by reading their weights: from memory rather than the cache,
    the float32 B1 step took twice as long. From two rows on, each weight read serves
    every row and the Python a call saves weighs more (docs/benchmarks.md)."""
    device = next(model.parameters()).device
    cache = last_level_cache_bytes() if device.type == "cpu" and rows == 1 else None
    steps = most
    if cache is not None:
        weights = step_weight_bytes(model)
        while steps > 1 and steps * weights > cache:
            steps //= 2
    return steps


def compiled_encoder(model: nn.Module) -> CompiledStep:
    """model._encoder_memories compiled: token ids (B, S) -> (memory (B, S, D), each decoder
    layer's cross-attention (key, value)), for the sources without padding of
    generate(compile=True)."""
    return _compiled(model, "_encoder_memories")


def compiled_step(model: nn.Module) -> CompiledStep:
    """model._step_at compiled: (tokens (N,), position (1,), memories, caches) -> logits
    (N, V). Beam search and sampling take their steps with it."""
    return _compiled(model, "_step_at")


def compiled_greedy(model: nn.Module, rows: int) -> CompiledStep:
    """model._greedy_at compiled for `rows` rows: steps_per_call(model, GREEDY_STEPS, rows)
    greedy steps in one graph (its `steps`), (ids (N, W), position (1,), memories, caches,
    unfinished (N,), bans, eos (V,), pad) -> the number of steps after which no row was
    unfinished, the tokens written into ids, so that the Python between two steps runs
    once every `steps` steps."""

    def steps() -> dict:  # (steps_per_call depends on the rows only through rows == 1)
        return {"steps": steps_per_call(model, GREEDY_STEPS, rows)}

    return _compiled(model, "_greedy_at", (rows == 1,), steps)


def compiled_beam(model: nn.Module) -> CompiledStep:
    """model._beam_at compiled: BEAM_STEPS beam search steps (its `steps`) with the
    search's own arithmetic in one graph, (position (1,), memories, caches, beams, bans,
    rule, cache rows (N, max_length)) -> whether the search is done, the beams and rows
    advanced in place."""
    return _compiled(model, "_beam_at", defaults=lambda: {"steps": BEAM_STEPS})


class CompiledStep:
    """A model's compiled method for the calls of one generate, called with the method's
    arguments. The first call goes through dynamo's guards, which choose
    the graph or compile one, under the compile settings (inductor reads them while it
    compiles, not when a graph runs). The later calls pass the same tensors, shapes and
    objects (only the values in tensors change, which no guard reads), so they
    run the graph the guards chose without evaluating them again (skip_guard_eval_unsafe:
    about a tenth of a step at one row on a CPU)."""

    def __init__(
        self, model: nn.Module, compiled: Callable, options: dict[str, object], steps: int = 1
    ) -> None:
        self.model, self.compiled, self.options = model, compiled, options
        self.steps = steps  # the decoding steps one call takes (greedy: its keyword `steps`)
        self.checked = False

    def __call__(self, *args):
        if self.checked:
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                return self.compiled(self.model, *args)
        with inductor_config.patch(self.options):
            result = self.compiled(self.model, *args)
        self.checked = True
        return result
