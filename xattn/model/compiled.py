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
laid out for its kernels, one copy of each however many unrolled steps read it:
one_copy_of_each_constant; float32 linear layers packed for oneDNN's products rather
than MKL's, onednn_linear_layers); on a CPU also with inductor's own C++
matrix-product kernels, chosen against oneDNN's by timing each product of the step once
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

import contextlib
import dataclasses
import types
import weakref
from collections.abc import Callable, Iterator
from unittest import mock

import torch
import torch._inductor.config as inductor_config
import torch.utils._pytree as pytree
from torch import Tensor, nn
from torch._inductor.fx_passes import mkldnn_fusion
from torch._inductor.graph import GraphLowering
from torch._inductor.output_code import CompiledFxGraph
from torch.utils._python_dispatch import _disable_current_modes

from .packing import model_stamp

__all__ = [
    "BEAM_STEPS",
    "GREEDY_STEPS",
    "GraphReplay",
    "compile_options",
    "compiled_beam",
    "compiled_encoder",
    "compiled_greedy",
    "compiled_step",
    "graph_calls",
    "one_copy_of_each_constant",
    "onednn_linear_layers",
]

# model -> {name: (stamp, compiled function, its fixed steps)}
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

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


def _compiled(model: nn.Module, name: str, steps: int | None = None) -> CompiledStep:
    """The method `name` of model compiled, for the calls of one generate: the graphs made
    for this model, unless its weights changed since. steps: the method's keyword `steps`,
    fixed for the function's graphs (read while tracing) when the function is made."""
    stamp = model_stamp(model)
    functions = _COMPILED.setdefault(model, {})
    found = functions.get(name)
    if found is None or found[0] != stamp:
        function = _own_copy(getattr(type(model), name))
        if steps is not None:
            function.__kwdefaults__ = {**(function.__kwdefaults__ or {}), "steps": steps}
        found = functions[name] = (stamp, torch.compile(function), steps or 1)
    options = compile_options(next(model.parameters()).device)
    return CompiledStep(model, found[1], options, found[2])


def compiled_encoder(model: nn.Module) -> CompiledStep:
    """model._encoder_memories compiled: token ids (B, S) -> (memory (B, S, D), each decoder
    layer's cross-attention (key, value)), for the sources without padding of
    generate(compile=True)."""
    return _compiled(model, "_encoder_memories")


def compiled_step(model: nn.Module) -> CompiledStep:
    """model._step_at compiled: (tokens (N,), position (1,), memories, caches) -> logits
    (N, V). Beam search and sampling take their steps with it."""
    return _compiled(model, "_step_at")


def compiled_greedy(model: nn.Module) -> CompiledStep:
    """model._greedy_at compiled: GREEDY_STEPS greedy steps in one graph (its `steps`),
    (ids (N, W), position (1,), memories, caches, unfinished (N,), bans, eos (V,), pad) ->
    the number of steps after which no row was unfinished, the tokens written into ids, so
    that the Python between two steps runs once every `steps` steps."""
    return _compiled(model, "_greedy_at", steps=GREEDY_STEPS)


def compiled_beam(model: nn.Module) -> CompiledStep:
    """model._beam_at compiled: BEAM_STEPS beam search steps (its `steps`) with the
    search's own arithmetic in one graph, (position (1,), memories, caches, beams, bans,
    rule, cache rows (N, max_length)) -> whether the search is done, the beams and rows
    advanced in place."""
    return _compiled(model, "_beam_at", steps=BEAM_STEPS)


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two dense contiguous tensors of one dtype, shape and device hold the same
    bytes (so -0.0 and 0.0 differ, as do NaNs of other payloads)."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and a.device == b.device
        and a.is_contiguous()
        and b.is_contiguous()
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


@contextlib.contextmanager
def one_copy_of_each_constant() -> Iterator[None]:
    """While inductor compiles in this context, a constant it makes for a graph (the
    weights of a matrix product packed for its C++ kernel) that holds the same bytes as one
    it made for the graph before is that one. Inductor packs the weights of each product
    into a constant of its own, so without this a graph of k unrolled steps held k copies
    of the step's weights (4 x 20.8 MB of float32 in the benchmark's greedy graph, which
    did not fit in a 32 MB last-level cache: the one-row step took twice as long). The
    constants of a frozen graph are never written, so two with the same bytes are one.
    Only the constants inductor makes without a name are shared: those named after the
    graph's frozen parameters it already shares by storage, and may drop from the graph
    when a product packs them."""
    allocate = GraphLowering.allocate_non_dup_const_name
    made: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # graph -> names

    def shared(graph: GraphLowering, name: str | None, data: torch.Tensor) -> str:
        if name is not None or data.is_mkldnn:
            return allocate(graph, name, data)
        names = made.setdefault(graph, [])
        with _disable_current_modes():
            for known in names:
                value = graph.constants.get(known)
                if value is not None and not value.is_mkldnn and _same_bytes(value, data):
                    return known
        names.append(allocate(graph, name, data))
        return names[-1]

    with mock.patch.object(GraphLowering, "allocate_non_dup_const_name", shared):
        yield


@contextlib.contextmanager
def onednn_linear_layers() -> Iterator[None]:
    """While inductor compiles in this context, it packs the weights of a float32 linear
    layer for oneDNN's product (mkldnn._linear_pointwise, with the layer's activation or
    residual fused), where on x86 it would pack them for MKL's: inductor takes oneDNN's
    path for bfloat16 weights and where a layer's batch size is symbolic, and here for a
    batch size it knows as well (the weights are packed for that size all the same). Where
    MKL's products are slow, as on AMD processors, that made the graphs of the benchmark
    faster: the step's 19 products at 8 rows took 2,385 us through MKL and 873 through
    oneDNN on an AMD EPYC, and beam search's graph of 32 rows ran 1.54x
    (docs/benchmarks.md). Max-autotune still times each product against inductor's own
    C++ kernel and keeps the faster."""
    symbolic = mkldnn_fusion.has_free_symbols
    with mock.patch.object(
        mkldnn_fusion, "has_free_symbols", lambda size: isinstance(size, int) or symbolic(size)
    ):
        yield


class CompiledStep:
    """A model's compiled method for the calls of one generate, called with the method's
    arguments. The first call goes through dynamo's guards, which choose the graph or
    compile one, under the compile settings (inductor reads them while it compiles, not
    when a graph runs). The later calls pass the same tensors, shapes and objects (only
    the values in tensors change, which no guard reads), so they run the graph the guards
    chose without dynamo's and AOTAutograd's Python around it (GraphReplay: about a fifth
    of a greedy call of 4 steps at one row on a CPU), or where the graph cannot be replayed
    so, through dynamo without evaluating the guards again (skip_guard_eval_unsafe)."""

    def __init__(
        self, model: nn.Module, compiled: Callable, options: dict[str, object], steps: int = 1
    ) -> None:
        self.model, self.compiled, self.options = model, compiled, options
        self.steps = steps  # the decoding steps one call takes (greedy: its keyword `steps`)
        self.checked = False
        self.replay: GraphReplay | None = None

    def __call__(self, *args):
        if self.replay is not None:
            return self.replay(args)
        if self.checked:
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                return self.compiled(self.model, *args)
        compiling = inductor_config.patch(self.options)
        with compiling, one_copy_of_each_constant(), onednn_linear_layers(), graph_calls() as calls:
            result = self.compiled(self.model, *args)
        self.checked = True
        self.replay = GraphReplay.of(calls, args, result)
        return result


@contextlib.contextmanager
def graph_calls() -> Iterator[list[tuple[CompiledFxGraph, list, object]]]:
    """The compiled graphs inductor runs in this context, each call as (graph, its inputs,
    its outputs)."""
    calls: list[tuple[CompiledFxGraph, list, object]] = []
    run = CompiledFxGraph.__call__

    def recorded(graph: CompiledFxGraph, inputs):
        given = list(inputs)  # the call may empty the list it is given
        outputs = run(graph, inputs)
        calls.append((graph, given, outputs))
        return outputs

    with mock.patch.object(CompiledFxGraph, "__call__", recorded):
        yield calls


def _tensors_in(value, path: tuple = ()) -> Iterator[tuple[tuple, Tensor]]:
    """(path, tensor) of each tensor in value: a tensor, or tuples, lists and dataclasses
    of them (a path's steps are indices and field names)."""
    if isinstance(value, Tensor):
        yield path, value
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _tensors_in(item, (*path, i))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _tensors_in(getattr(value, field.name), (*path, field.name))


def _at(value, path: tuple):
    for step in path:
        value = value[step] if isinstance(step, int) else getattr(value, step)
    return value


class GraphReplay:
    """A compiled method's later calls as a direct call of its one inductor graph: each
    input of the graph taken from the call's arguments where the first call's was (a size
    it was given stays as it was), its outputs put back in the first call's result's
    structure. Only where that is all dynamo and AOTAutograd did around the graph in the
    first call: one graph, each of its tensor inputs found in the arguments, and the
    result's values the very tensors the graph returned, in order. So not a graph whose
    inputs' changes AOTAutograd applies after it (it returns them too), nor a result that
    holds a view of an input (AOTAutograd makes it after the graph) or a number."""

    def __init__(self, run: Callable, sources: list, spec: pytree.TreeSpec) -> None:
        self.run, self.sources, self.spec = run, sources, spec

    @classmethod
    def of(cls, calls: list, args: tuple, result) -> GraphReplay | None:
        """The replay of the first call that made `calls` (graph_calls) with args and
        returned result, or None where it cannot be replayed."""
        if len(calls) != 1:
            return None
        graph, inputs, outputs = calls[0]
        leaves, spec = pytree.tree_flatten(result)
        if not isinstance(outputs, (list, tuple)) or len(outputs) != len(leaves):
            return None
        if not all(isinstance(a, Tensor) and a is b for a, b in zip(leaves, outputs, strict=True)):
            return None
        paths = {}
        for path, tensor in _tensors_in(args):
            paths.setdefault(id(tensor), path)
        sources: list = []
        for value in inputs:
            if isinstance(value, Tensor):
                if id(value) not in paths:
                    return None
                sources.append(paths[id(value)])
            elif isinstance(value, int) and not isinstance(value, bool):
                sources.append(int(value))  # a size, the same in every call
            else:
                return None
        return cls(graph.current_callable, sources, spec)

    def __call__(self, args: tuple):
        inputs = [s if isinstance(s, int) else _at(args, s) for s in self.sources]
        return pytree.tree_unflatten(list(self.run(inputs)), self.spec)
