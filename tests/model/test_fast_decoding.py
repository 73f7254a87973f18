"""The lean decoding step of generate: the same tokens and scores as the checked path (and,
in tests/test_hf.py, as transformers), prepacked weights that follow weight changes, beam
reordering without new buffers, int8 copies for CPU inference, and generate(compile=True):
one compiled graph for every position, the eager tokens, a new graph after a weight
change."""

import contextlib
import copy
import dataclasses
import gc
import types
import weakref

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn
from torch._dynamo.utils import counters
from torch._inductor.fx_passes import freezing_patterns
from torch._inductor.graph import GraphLowering
from torch._inductor.output_code import CompiledFxGraph
from torch._inductor.utils import run_and_get_code

import xattn
from xattn.attention import modules
from xattn.model import compiled, packing, quantize, transformer
from xattn.model.transformer import _ModelStepper


def make(**kw):
    """A tiny random model whose greedy tokens vary (a tied output layer repeats the start
    token)."""
    torch.manual_seed(0)
    kw = {"tie_output": False, **kw}
    config = xattn.ModelConfig.preset("tiny", vocab_size=60, dropout=0.0, **kw)
    return xattn.EncoderDecoder(config).eval()


def search_both(model, src, mask, **kw):
    """generate's output through the lean steps and through the checked decode_step."""
    lean = model.generate(src, src_mask=mask, **kw)
    real = _ModelStepper.__init__

    def checked(self, model, state, weights, *_):
        real(self, model, state, weights, False)

    _ModelStepper.__init__ = checked
    try:
        slow = model.generate(src, src_mask=mask, **kw)
    finally:
        _ModelStepper.__init__ = real
    return lean, slow


@pytest.mark.parametrize("kernel", ["packed", "plain", "auto"])
@pytest.mark.parametrize("pre_norm", [True, False])
@pytest.mark.parametrize("beams", [1, 3])
def test_lean_steps_equal_the_checked_steps(pre_norm, beams, kernel, monkeypatch):
    monkeypatch.setenv("XATTN_STEP_KERNEL", kernel)
    model = make(pre_norm=pre_norm, num_kv_heads=2)  # grouped-query heads too
    src = torch.randint(3, 60, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    lean, slow = search_both(model, src, mask, max_new_tokens=9, num_beams=beams)
    assert torch.equal(lean, slow)
    assert lean[:, 1:].unique().numel() > 5  # tokens that tell the steps apart


def step_logits(model, src, tokens):
    """(lean, checked) logits of one decoding step after `tokens`, from fresh states."""
    with torch.no_grad():
        memory = model.encode(src)
        out = []
        for lean in (True, False):
            state = model.start_decoding(memory, max_length=tokens.shape[1] + 1)
            _, state, _ = model.decode_step(tokens[:, :-1], state)
            if lean:
                out.append(model._decode_one(tokens[:, -1:], state)[0])
            else:
                out.append(model.decode_step(tokens[:, -1:], state)[0][:, -1])
    return out


@pytest.mark.parametrize("bias", ["zeros", "random"])
def test_lean_step_adds_the_final_logits_bias(bias):
    """The output layer of the steps carries the final logits bias (left out when it is
    all zeros, which changes no logit)."""
    model = make(final_logits_bias=True)
    if bias == "random":
        model.final_logits_bias.normal_()
    src, tokens = torch.randint(3, 60, (2, 5)), torch.randint(3, 60, (2, 4))
    lean, checked = step_logits(model, src, tokens)
    torch.testing.assert_close(lean, checked, atol=1e-5, rtol=1e-5)
    model.final_logits_bias = None
    plain, _ = step_logits(model, src, tokens)
    assert torch.equal(plain, lean) == (bias == "zeros")


def test_the_forward_adds_the_final_logits_bias_after_every_change_to_it():
    """A bias of zeros is left out of the forward; a change in place (a load, an optimizer
    step) or a new tensor in its place is seen at the next call."""
    model = make(final_logits_bias=True)
    src, tgt = torch.randint(3, 60, (2, 5)), torch.randint(3, 60, (2, 4))
    zeros = model(src, tgt)
    bias = model.final_logits_bias
    model.final_logits_bias = None
    assert torch.equal(model(src, tgt), zeros)
    model.final_logits_bias = bias
    with torch.no_grad():
        bias.normal_()
    torch.testing.assert_close(model(src, tgt), zeros + bias)
    model.final_logits_bias = torch.full_like(bias, 2.0)
    torch.testing.assert_close(model(src, tgt), zeros + 2.0)
    model.final_logits_bias.zero_()
    assert torch.equal(model(src, tgt), zeros)


def test_packed_weights_follow_weight_changes(monkeypatch):
    monkeypatch.setenv("XATTN_STEP_KERNEL", "packed")
    model = make()
    src, tokens = torch.randint(3, 60, (2, 5)), torch.randint(3, 60, (2, 4))
    lean, checked = step_logits(model, src, tokens)
    torch.testing.assert_close(lean, checked, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # in-place changes, as an optimizer step makes
        model.decoder_layers[0].ffn.fc1.weight.mul_(-1.0)
        model.decoder_layers[1].self_attn.k_proj.weight.add_(0.5)
        model.lm_head.weight.mul_(1.5)
    changed, checked_again = step_logits(model, src, tokens)
    torch.testing.assert_close(changed, checked_again, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(changed, lean)  # the packed copies were made again
    if packing.can_pack(model.lm_head.weight):  # oneDNN present: the packed path was used
        assert packing._PACKED.get(model.lm_head.weight) is not None


def test_model_stamp_sees_changed_and_replaced_weights_and_nothing_else(monkeypatch):
    """What a compiled graph is checked against once per generate: the versions of the
    model's tensors and the replacements of one by another. The module walk that lists
    them runs again only after a parameter, buffer or submodule was set somewhere."""
    model = make()
    stamp = packing.model_stamp(model)
    walks = []
    real = torch.nn.Module.buffers
    monkeypatch.setattr(torch.nn.Module, "buffers", lambda m, *a: walks.append(m) or real(m, *a))
    assert packing.model_stamp(model) == stamp and not walks  # the list was kept
    xattn.EncoderDecoder(model.config)  # another model built: no change to this one
    assert packing.model_stamp(model) == stamp and walks == [model]
    layer = model.decoder_layers[0].ffn.fc1
    layer.weight = layer.weight  # the same tensor set again
    assert packing.model_stamp(model) == stamp
    with torch.no_grad():
        layer.weight.mul_(2.0)
    changed = packing.model_stamp(model)
    assert changed != stamp
    fresh = torch.nn.Parameter(layer.weight.detach().clone())  # version 0, as a new weight has
    layer.weight = fresh
    assert packing.model_stamp(model) not in (stamp, changed)
    layer.register_buffer("extra", torch.zeros(3))  # a buffer added
    assert packing.model_stamp(model)[0] == 2


@pytest.mark.parametrize("fused", [True, False])
def test_packed_weights_follow_optimizer_steps(fused, monkeypatch):
    """A fused optimizer changes weights without a new tensor version; a step of any
    optimizer, like a change through .data followed by model.eval(), makes them stale."""
    monkeypatch.setenv("XATTN_STEP_KERNEL", "packed")
    model = make()
    src, tokens = torch.randint(3, 60, (2, 5)), torch.randint(3, 60, (2, 4))
    before, _ = step_logits(model, src, tokens)  # packs every decoder weight
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=fused)
    model(src, tokens).logsumexp(-1).mean().backward()  # in eval mode: no train() call
    optimizer.step()
    for p in model.parameters():
        p.grad = None
    lean, checked = step_logits(model, src, tokens)
    assert not torch.allclose(before, checked)  # the step changed the model
    torch.testing.assert_close(lean, checked, atol=1e-5, rtol=1e-5)
    model.lm_head.weight.data.mul_(2.0)  # no version, no optimizer: eval() picks it up
    model.eval()
    lean, checked = step_logits(model, src, tokens)
    torch.testing.assert_close(lean, checked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("beams", [1, 3])
def test_generate_under_inference_mode(beams):
    """torch.inference_mode makes the fused and packed weights inference tensors, which keep
    no version counter; a model built under it has such weights too."""
    model = make()
    src = torch.randint(3, 60, (2, 6))
    expected = model.generate(src, max_new_tokens=6, num_beams=beams)
    with torch.inference_mode():
        assert torch.equal(model.generate(src, max_new_tokens=6, num_beams=beams), expected)
        built = make()
        assert torch.equal(built.generate(src, max_new_tokens=6, num_beams=beams), expected)
    int8 = model.quantize("int8")
    expected8 = int8.generate(src, max_new_tokens=6, num_beams=beams)
    with torch.inference_mode():
        assert torch.equal(int8.generate(src, max_new_tokens=6, num_beams=beams), expected8)


def test_kernel_choice_keeps_the_faster_timed_once_per_shape(monkeypatch):
    monkeypatch.setattr(packing, "_KERNELS", {})
    assert packing.choose_kernel(48, 16, 3) in ("packed", "plain")  # both kernels really run
    monkeypatch.setattr(packing, "_KERNELS", {})
    timed = []  # choose_kernel times plain F.linear first, then the packed layout
    times = iter([2.0, 1.0, 1.0, 2.0])
    monkeypatch.setattr(packing, "_best_time", lambda fn: timed.append(fn) or next(times))
    assert packing.choose_kernel(48, 16, 3) == "packed" and len(timed) == 2
    assert packing.choose_kernel(48, 16, 3) == "packed" and len(timed) == 2  # kept
    assert packing.choose_kernel(48, 16, 5) == "plain" and len(timed) == 4  # other rows
    monkeypatch.setenv("XATTN_STEP_KERNEL", "plain")
    assert packing.choose_kernel(48, 16, 3) == "plain" and len(timed) == 4
    monkeypatch.setenv("XATTN_STEP_KERNEL", "fast")
    with pytest.raises(ValueError, match="XATTN_STEP_KERNEL='fast'"):
        packing.choose_kernel(48, 16, 7)


def test_step_linear_takes_the_kernel_chosen_for_its_rows(monkeypatch):
    """The choice is made once, when the step's linears are made for a number of rows;
    either kernel gives F.linear's numbers."""
    weight, bias = torch.randn(40, 24), torch.randn(40)
    asked = []

    def choice(out, features, rows, bias):
        asked.append((out, features, rows, bias))
        return ["plain", "packed"][rows % 2]

    monkeypatch.setattr(packing, "choose_kernel", choice)
    with torch.no_grad():
        for rows in (2, 3):
            step = packing.step_linear(weight, bias, rows)
            x = torch.randn(rows, 1, 24)
            torch.testing.assert_close(step(x), torch.nn.functional.linear(x, weight, bias))
            if packing.can_pack(weight):
                assert isinstance(step, packing.PackedLinear) == (rows == 3)
    if packing.can_pack(weight):
        assert asked == [(40, 24, 2, True), (40, 24, 3, True)]


def test_generate_chooses_kernels_for_its_rows(monkeypatch):
    """Every linear of the step is chosen for the rows generate decodes: B * beams."""
    asked = []

    def choice(out, features, rows, bias):
        asked.append(rows)
        return "plain"

    monkeypatch.setattr(packing, "choose_kernel", choice)
    model = make()
    model.generate(torch.randint(3, 60, (3, 5)), max_new_tokens=4, num_beams=2)
    if packing.can_pack(model.lm_head.weight):
        assert len(asked) == 6 * len(model.decoder_layers) + 1 and set(asked) == {6}


@pytest.mark.parametrize("order", [[1, 1, 0, 3], [2, 0, 1, 3], [0, 1, 2, 3], [3, 3, 3, 3]], ids=str)
def test_beam_reordering_copies_only_moved_rows_in_place(order, monkeypatch):
    """Row i continues row order[i]: a cycle of rows (each the source of another), all rows
    from one, and no move at all; the rows that stay are not copied."""
    model = make()
    cache = model.decoder_layers[0].self_attn.new_cache(4, 8)
    order = torch.tensor(order)
    with torch.no_grad():
        cache, _, _ = cache.write(torch.randn(4, 4, 3, 8), torch.randn(4, 4, 3, 8))
        expected = (cache.key[:, :, :3][order].clone(), cache.value[:, :, :3][order].clone())
        unfilled = cache.key[:, :, 3:].clone()
        copied = []
        real = torch.Tensor.index_copy_
        monkeypatch.setattr(
            torch.Tensor,
            "index_copy_",
            lambda t, d, rows, x: copied.append(rows) or real(t, d, rows, x),
        )
        moved = cache.reorder(order)
    assert moved.key.data_ptr() == cache.key.data_ptr() and moved.length == 3
    torch.testing.assert_close(moved.key[:, :, :3], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(moved.value[:, :, :3], expected[1], rtol=0, atol=0)
    assert torch.equal(moved.key[:, :, 3:], unfilled)  # positions past the length untouched
    stay = order == torch.arange(4)
    if stay.all():
        assert copied == []
    else:
        assert all(torch.equal(rows, (~stay).nonzero().squeeze(1)) for rows in copied)
        assert len(copied) == 2  # keys and values


def test_a_cache_read_through_rows_reorders_its_table_and_refuses_in_order_writes():
    """A cache with a rows table (compiled beam search): reorder copies no key but gives
    each row the table of the row it continues, so that write_at reads row order[i]'s keys
    before the reorder (and, the table's next column naming each row itself, as compiled
    beam search writes it, the row's own key there); append refuses it."""
    model = make()
    cache = model.decoder_layers[0].self_attn.new_cache(4, 6)
    cache = dataclasses.replace(cache, rows=torch.arange(4)[:, None].expand(4, 6).clone())
    order = torch.tensor([2, 0, 0, 3])
    new_key, new_value = torch.randn(4, 4, 1, 8), torch.randn(4, 4, 1, 8)
    with torch.no_grad():
        for t in range(3):
            cache.write_at(torch.randn(4, 4, 1, 8), torch.randn(4, 4, 1, 8), torch.tensor([t]))
        before = cache.key.clone()
        moved = cache.reorder(order)
        moved.rows[:, 3] = torch.arange(4)
        keys, values = moved.write_at(new_key, new_value, torch.tensor([3]))
    assert moved.key is cache.key and torch.equal(moved.key[:, :, :3], before[:, :, :3])
    assert torch.equal(moved.rows[:, :3], cache.rows[order, :3])
    assert torch.equal(keys[:, :, :3], before[order, :, :3])
    assert torch.equal(keys[:, :, 3:4], new_key) and torch.equal(values[:, :, 3:4], new_value)
    with pytest.raises(
        ValueError, match=r"KVCache.append .* through a table \(rows \(4, 6\).*write_at"
    ):
        moved.append(new_key, new_value)


def test_int8_copy_reads_alike_and_is_not_saved(tmp_path):
    model = make()
    int8 = model.quantize("int8")
    assert model.quantized is None and int8.quantized == "int8"
    assert int8.quantize("int8") is int8
    assert not any(type(m) is torch.nn.Linear for m in int8.modules())
    src, tgt = torch.randint(3, 60, (4, 9)), torch.randint(3, 60, (4, 6))
    with torch.no_grad():
        exact, approx = model(src, tgt), int8(src, tgt)
    assert (exact - approx).abs().max() < 0.05 * exact.abs().max()
    assert (exact.argmax(-1) == approx.argmax(-1)).float().mean() > 0.9
    assert int8.generate(src, max_new_tokens=5, num_beams=2).shape[0] == 4
    with pytest.raises(ValueError, match="int8 copy for inference: save the float model"):
        int8.save(tmp_path / "m")
    with pytest.raises(ValueError, match="quantize\\('int4'\\); the one mode is 'int8'"):
        model.quantize("int4")


def test_int8_layers_pack_fbgemm_weights_only_for_eager_calls(quick_compile):
    """A copy that only compiled steps run holds its int8 weights once; a layer makes
    fbgemm's packed copy at its first eager call."""
    int8 = make(**ONE_LAYER).quantize("int8")
    layers = [m for m in int8.modules() if isinstance(m, quantize.Int8Linear)]
    src = torch.randint(3, 60, (2, 7), generator=torch.Generator().manual_seed(3))
    int8.generate(src, max_new_tokens=4, compile=True)  # no padding: a compiled encoder
    assert layers and all(layer.packed is None for layer in layers)
    eager = int8.generate(src, max_new_tokens=4)
    assert all(layer.packed is not None for layer in (int8.lm_head, int8.decoder_layers[0].ffn.fc1))
    assert torch.equal(eager, int8.generate(src, max_new_tokens=4))


def test_int8_copy_projects_stacked_q_k_v_in_one_product_with_the_same_result(monkeypatch):
    """The encoder's self-attentions and the memories' projection run one int8 product for
    q, k and v (k and v): the same input quantized once, so the same numbers as one
    product each."""
    int8 = make().quantize("int8")
    src, mask = inputs()
    calls = []
    real = torch.ops.quantized.linear_dynamic
    monkeypatch.setattr(
        torch.ops.quantized, "linear_dynamic", lambda *a: calls.append(1) or real(*a)
    )
    with torch.no_grad():
        memory = int8.encode(src, mask)
        memories = int8.project_memories(memory, mask)
    L, D = int8.config.encoder_layers, int8.config.decoder_layers
    assert len(calls) == 4 * L + D  # qkv, out, fc1, fc2 a layer; one k/v product a memory
    for attn in int8.modules():
        for name in ("qkv_int8", "kv_int8"):
            if hasattr(attn, name):
                delattr(attn, name)  # one product each again
    with torch.no_grad():
        assert torch.equal(int8.encode(src, mask), memory)
        separate = int8.project_memories(memory, mask)
    for one, three in zip(memories, separate, strict=True):
        assert torch.equal(one.key, three.key) and torch.equal(one.value, three.value)
    assert len(calls) == 4 * L + D + 6 * L + 2 * D


def test_int8_copy_holds_each_weight_once():
    """The separate q, k and v projections are layers of the stacked one's rows: the int8
    copy holds one byte for each float32 weight of the model's linear layers."""
    model = make()
    int8 = model.quantize("int8")
    held = {}
    for layer in int8.modules():
        if isinstance(layer, quantize.Int8Linear):
            storage = layer.weight_t.untyped_storage()
            held[storage.data_ptr()] = storage.nbytes()
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert sum(held.values()) == sum(m.weight.numel() for m in linears)
    attn = int8.decoder_layers[0].self_attn
    x = torch.randn(3, int8.config.d_model)
    parts = (attn.q_proj, attn.k_proj, attn.v_proj)
    widths = [part.out_features for part in parts]
    eager = attn.qkv_int8(x).split(widths, -1)
    traced = attn.qkv_int8.traced(x).split(widths, -1)
    for part, y, z in zip(parts, eager, traced, strict=True):
        assert torch.equal(part(x), y) and torch.equal(part.traced(x), z)


def inputs():
    src = torch.randint(3, 60, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    return src, mask


ONE_LAYER = dict(encoder_layers=1, decoder_layers=1)  # compiled graphs half the size

BART_LIKE = dict(
    pre_norm=False, positions="learned", position_offset=2, embed_norm=True, embed_scale=True
)


@pytest.fixture
def quick_compile(monkeypatch):
    """Compile with freezing alone (seconds, not the tens of seconds that timing each matrix
    product's kernels takes on a CPU), greedy graphs of two steps (half the graph of
    GREEDY_STEPS) and beam search graphs of one (the beam test sets its own), for the
    tests of what compiling means, not of which kernels it picks. Without oneDNN's packed
    weights inductor keeps the graphs it made in its cache (it cannot store packed ones),
    so a test whose model and shapes an earlier test compiled loads that graph."""
    options = {"freezing": True, "cpp.weight_prepack": False}
    # inductor registers its weight-packing passes once a process, at the first frozen
    # compile, if cpp.weight_prepack is on then: register them now, while it is
    freezing_patterns.lazy_init()
    monkeypatch.setattr(compiled, "compile_options", lambda device: options)
    monkeypatch.setattr(compiled, "GREEDY_STEPS", 2)
    monkeypatch.setattr(compiled, "BEAM_STEPS", 1)


def check_compiled_tokens(model, beams=True, other_shapes=True):
    """One graph serves the nine steps of a first call, with the eager tokens; with beams,
    beam search, and with other_shapes, the shapes after it (a longer cache, a prompt),
    give the eager tokens too."""
    src, mask = inputs()
    frames = counters["frames"]["ok"]
    got = model.generate(src, src_mask=mask, max_new_tokens=9, compile=True)
    assert counters["frames"]["ok"] - frames == 1  # nine positions, one graph
    assert torch.equal(got, model.generate(src, src_mask=mask, max_new_tokens=9))
    assert got[:, 1:].unique().numel() > 5  # tokens that tell the steps apart
    prompt = torch.tensor([[model.config.decoder_start_token_id, 5, 9]] * 3)
    cases = [dict(num_beams=3, max_new_tokens=9)] if beams else []
    if other_shapes:
        cases.append(dict(max_new_tokens=12, decoder_input_ids=prompt))
    for kw in cases:
        eager = model.generate(src, src_mask=mask, **kw)
        assert torch.equal(model.generate(src, src_mask=mask, compile=True, **kw), eager)


def test_compiled_steps_give_the_eager_tokens_with_one_graph_for_every_position(monkeypatch, capfd):
    """With the CPU's compile options: inductor's own matrix-product kernels, timed against
    ATen's, and the attention formula fused into the graph. max-autotune reports every
    product's timings on stderr unless told not to; compiled afresh (no cached graph, which
    would time nothing), the calls print none of it."""
    options = compiled.compile_options(torch.device("cpu"))
    assert options["max_autotune"]
    options = {**options, "force_disable_caches": True}
    monkeypatch.setattr(compiled, "compile_options", lambda device: options)
    monkeypatch.setattr(compiled, "GREEDY_STEPS", 2)  # the greedy graph, half its size
    made = constants_made(monkeypatch)
    check_compiled_tokens(make(num_kv_heads=2, **ONE_LAYER), beams=False, other_shapes=False)
    assert "autotune" not in capfd.readouterr().err.lower()
    assert copies(made) == 0  # the two steps' products share their packed weights


def constants_made(monkeypatch) -> list[torch.Tensor]:
    """The constants inductor makes without a name (the packed weights of its C++
    matrix-product kernels) from now on in this test."""
    made, allocate = [], GraphLowering.allocate_non_dup_const_name

    def recorded(graph, name, data):
        if name is None and not data.is_mkldnn:
            made.append(data)
        return allocate(graph, name, data)

    monkeypatch.setattr(GraphLowering, "allocate_non_dup_const_name", recorded)
    return made


def copies(tensors: list[torch.Tensor]) -> int:
    """How many of tensors hold the same bytes as one before them."""
    return sum(any(compiled._same_bytes(t, u) for u in tensors[:i]) for i, t in enumerate(tensors))


@pytest.mark.parametrize("shared", [True, False], ids=["one-copy", "inductor-alone"])
def test_a_frozen_graph_holds_one_copy_of_a_weight_that_several_products_read(shared, monkeypatch):
    """Inductor packs each matrix product's weights for its C++ kernel into a constant of
    its own: a layer applied twice made two copies of its weight (as a graph of unrolled
    decoding steps made one per step); compiled in one_copy_of_each_constant, one, with
    the same outputs."""
    torch.manual_seed(0)
    layer = nn.Linear(64, 64).eval()
    x = torch.randn(1, 64)
    options = {
        "freezing": True,
        "max_autotune": True,
        "max_autotune_gemm_backends": "CPP",  # inductor's C++ kernels, which pack
        "force_disable_caches": True,
        "autotune_num_choices_displayed": 0,
    }
    made = constants_made(monkeypatch)
    twice = torch.compile(lambda x: layer(torch.relu(layer(x))))
    sharing = compiled.one_copy_of_each_constant() if shared else contextlib.nullcontext()
    with torch.no_grad(), inductor_config.patch(options), sharing:
        got = twice(x)
    torch.testing.assert_close(got, layer(torch.relu(layer(x))))
    packed = [t for t in made if t.numel() == layer.weight.numel()]
    assert len(packed) == (1 if shared else 2)
    assert copies(made) == (0 if shared else 1)
    assert GraphLowering.allocate_non_dup_const_name.__name__ == "recorded"  # restored


@pytest.mark.parametrize(
    "config", [dict(pre_norm=False, norm="rmsnorm"), BART_LIKE], ids=["post-norm-rms", "bart-like"]
)
def test_compiled_steps_of_other_model_shapes_give_the_eager_tokens(config, quick_compile):
    check_compiled_tokens(make(**config, **ONE_LAYER), beams=False)


def test_compiled_greedy_steps_end_rows_and_apply_bans_as_eager_search(quick_compile):
    """Greedy search takes several steps per graph call: rows that end inside a call are
    padded after their end token, the search stops after the step where the last row
    ended, steps run past max_new_tokens are dropped, and the bans (min_new_tokens,
    suppress_tokens, begin_suppress_tokens, forced first and last tokens) act at the same
    lengths as in eager steps.
    A processor that is not a ban (repetition_penalty) takes the steps one at a time; with
    beams, the caches are reordered between them (the state's lengths read then)."""
    model = make(**ONE_LAYER)
    src, mask = inputs()
    free = model.generate(src, src_mask=mask, max_new_tokens=12, eos_token_id=None)
    eos = int(free[1, 3])  # row 1 ends at its third new token, the others elsewhere or never
    cases = [
        dict(max_new_tokens=12, eos_token_id=[eos]),
        dict(max_new_tokens=7, eos_token_id=[eos], min_new_tokens=5, suppress_tokens=[4]),
        dict(max_new_tokens=9, eos_token_id=[eos, 7], begin_suppress_tokens=[int(free[0, 1])]),
        dict(max_new_tokens=6, eos_token_id=[58], forced_bos_token_id=3, forced_eos_token_id=[58]),
        dict(max_new_tokens=8, eos_token_id=[eos], repetition_penalty=1.5),
        dict(max_new_tokens=8, eos_token_id=[eos], repetition_penalty=1.5, num_beams=3),
    ]
    ended_early = False
    for kw in cases:
        eager = model.generate(src, src_mask=mask, **kw)
        got = model.generate(src, src_mask=mask, compile=True, **kw)
        assert torch.equal(got, eager), kw
        ended_early |= eager.shape[1] < 1 + kw["max_new_tokens"]
    assert ended_early
    assert (free[:, 1:] == eos).any(1).sum() >= 2  # more than one row meets its end token


def test_compiled_stepper_state_follows_its_steps(quick_compile):
    """The compiled steps read the position from a tensor; the state's lengths, brought up
    to date where the state is read, count the steps taken, and a reorder (beam search
    with a processor that is not a ban) moves the filled positions of the moved rows."""
    model = make(**ONE_LAYER)
    src, mask = inputs()
    config = transformer.generation_settings(model.generation_config, 6, 3, {})
    with torch.no_grad():  # as generate runs
        stepper, start, _ = model.stepper(src, mask, config, compile=True)
        assert isinstance(stepper, transformer._CompiledStepper)
        stepper.step(start)
        stepper.step(start)
        assert stepper.state.length == 2 and {c.length for c in stepper.state.caches} == {2}
        before = stepper.state.caches[0].key.clone()
        order = torch.tensor([1, 0, 2, 3, 3, 5, 6, 8, 7])  # rows stay within their source
        stepper.reorder(order)
    after = stepper.state.caches[0].key
    assert torch.equal(after[:, :, :2], before[order, :, :2])


def test_compiled_beam_steps_search_in_the_graph_as_eager_search(quick_compile, monkeypatch):
    """Beam search takes its steps with their search (candidates, finished pool, stopping
    rule) in graph calls of several steps, no cache reordered: the eager beams where
    hypotheses end at different steps, with a length penalty, each stopping mode, bans
    and a forced end token, and where the last call runs a step past the end; the
    settings held in tensors, changing them compiles nothing (a longer cache compiles
    once)."""
    monkeypatch.setattr(compiled, "BEAM_STEPS", 3)  # 8 steps: the third call runs 9
    model = make(**ONE_LAYER)
    src, mask = inputs()
    free = model.generate(src, src_mask=mask, max_new_tokens=12, eos_token_id=None)
    eos = int(free[1, 3])
    cases = [
        dict(length_penalty=0.6, early_stopping=True, num_return_sequences=2),
        dict(early_stopping="never", min_new_tokens=4, suppress_tokens=[4]),
        dict(length_penalty=1.5, forced_eos_token_id=[eos]),
    ]
    lengths, frames = set(), counters["frames"]["ok"]
    for kw in cases:
        kw = {"num_beams": 3, "eos_token_id": [eos], "max_new_tokens": 8, **kw}
        eager = model.generate(src, src_mask=mask, **kw)
        got = model.generate(src, src_mask=mask, compile=True, **kw)
        assert torch.equal(got, eager), kw
        lengths |= {row.index(eos) if eos in row else len(row) for row in eager.tolist()}
    assert set(compiled._COMPILED[model]) == {"_beam_at"}  # no single-step graph
    assert len(lengths) > 2  # hypotheses ended at different steps
    assert counters["frames"]["ok"] - frames == 1  # one graph for every setting


def test_one_source_compiles_one_graph_for_every_step(quick_compile):
    """A single row: its token column is a view with another stride at every step; the step
    reads it from one tensor of its own, so no step compiles again (two graphs: the
    encoder's, as the row has no padding, and the steps')."""
    model = make(**ONE_LAYER)
    src, mask = inputs()
    frames = counters["frames"]["ok"]
    for _ in range(2):
        got = model.generate(src[:1], src_mask=mask[:1], max_new_tokens=9, compile=True)
    assert counters["frames"]["ok"] - frames == 2
    assert torch.equal(got, model.generate(src[:1], src_mask=mask[:1], max_new_tokens=9))


def test_batches_with_and_without_padding_share_their_graph(quick_compile):
    """A batch without padding runs the steps' graph of a padded batch (an all-True mask in
    its memories), with its eager tokens; so does one without a mask at all. Its encoder
    runs compiled (one graph more), a padded batch's eagerly, with the same memory."""
    model = make(**ONE_LAYER)
    src, mask = inputs()
    frames = counters["frames"]["ok"]
    model.generate(src, src_mask=mask, max_new_tokens=5, compile=True)
    assert counters["frames"]["ok"] - frames == 1
    for full in (torch.ones_like(mask), None):
        got = model.generate(src, src_mask=full, max_new_tokens=5, compile=True)
        assert torch.equal(got, model.generate(src, src_mask=full, max_new_tokens=5))
    assert counters["frames"]["ok"] - frames == 2
    with torch.no_grad():
        memory, projected = compiled.compiled_encoder(model)(src)
        torch.testing.assert_close(memory, model.encode(src), atol=1e-5, rtol=1e-5)
        (key, value), *_ = projected
        eager = model.project_memories(memory)[0]
        torch.testing.assert_close(key, eager.key, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(value, eager.value, atol=1e-5, rtol=1e-5)
    assert counters["frames"]["ok"] - frames == 2


def test_compile_options_are_set_for_the_first_step_of_a_call(quick_compile, monkeypatch):
    """Inductor reads its settings while compiling: they are put in place for the first
    step of each generate call, where a graph may be compiled, not for the later steps
    (which run the graph the first one chose)."""
    patched = []
    real = compiled.inductor_config.patch

    def patch(options):
        patched.append(options)
        return real(options)

    monkeypatch.setattr(compiled, "inductor_config", types.SimpleNamespace(patch=patch))
    model = make(**ONE_LAYER)
    src, mask = inputs()
    for calls, beams in enumerate((1, 1, 2), start=1):
        model.generate(src, src_mask=mask, max_new_tokens=6, num_beams=beams, compile=True)
        assert patched == [compiled.compile_options(torch.device("cpu"))] * calls


def test_only_the_first_step_of_a_call_goes_through_dynamo(quick_compile, monkeypatch):
    """The first step of a generate call goes through dynamo, whose guards choose the
    graph; the later steps pass the same objects and call that graph directly
    (GraphReplay), with the eager tokens; the next call goes through dynamo again."""
    through_dynamo, replayed = [], []
    run, replay = CompiledFxGraph.__call__, compiled.GraphReplay.__call__

    def counted_run(graph, inputs):
        through_dynamo.append(graph)
        return run(graph, inputs)

    def counted_replay(self, args):
        replayed.append(self)
        return replay(self, args)

    monkeypatch.setattr(CompiledFxGraph, "__call__", counted_run)
    monkeypatch.setattr(compiled.GraphReplay, "__call__", counted_replay)
    monkeypatch.setattr(torch.compiler, "set_stance", None)  # the fallback is not taken
    model = make(**ONE_LAYER)
    src, mask = inputs()
    kw = dict(src_mask=mask, max_new_tokens=6, min_new_tokens=6, compile=True)
    for calls in (1, 2):
        got = model.generate(src, **kw)  # greedy: two steps per call (quick_compile)
        assert (len(through_dynamo), len(replayed)) == (calls, 2 * calls)  # padded: eager encoder
    assert torch.equal(got, model.generate(src, src_mask=mask, max_new_tokens=6, min_new_tokens=6))
    through_dynamo.clear(), replayed.clear()
    got = model.generate(src, num_beams=2, **kw)
    assert (len(through_dynamo), len(replayed)) == (1, 5)  # beam search: a step a call
    eager = model.generate(src, src_mask=mask, num_beams=2, max_new_tokens=6, min_new_tokens=6)
    assert torch.equal(got, eager)


@dataclasses.dataclass
class Pair:
    first: torch.Tensor
    second: torch.Tensor


def bump_and_scale(pairs, scale):
    pairs[1].first.add_(1)  # written in place, inside the graph
    return pairs[0].first * scale, (pairs[1].second + pairs[1].first, scale.sum())


def test_a_graph_replay_reads_its_inputs_where_the_first_call_had_them():
    """A replay takes each tensor from the place in its arguments where the first call
    had the graph's input, new objects and values included, writes what the graph writes
    and returns the first call's structure: what the compiled function returns."""

    def arguments(seed):
        g = torch.Generator().manual_seed(seed)
        first = Pair(torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g))
        second = Pair(torch.randn(3, 4, generator=g), torch.randn(4, generator=g))
        return (first, second), torch.randn(4, generator=g)

    function = torch.compile(bump_and_scale, fullgraph=True)
    first = arguments(0)
    with compiled.graph_calls() as calls:
        result = function(*first)
    replay = compiled.GraphReplay.of(calls, first, result)
    assert replay is not None
    for seed in (1, 2):
        given, expected = arguments(seed), arguments(seed)
        got = replay(given)
        want = bump_and_scale(*expected)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1][0], want[1][0])
        assert torch.equal(got[1][1], want[1][1])
        assert torch.equal(given[0][1].first, expected[0][1].first)  # written alike


def test_a_graph_replay_is_refused_where_dynamo_did_more_than_call_one_graph():
    def view_of_its_input(x):  # AOTAutograd makes the view after the graph
        return x[1:]

    def with_a_number(x):
        return x + 1, 3

    def breaks(x):  # two graphs
        y = x + 1
        torch._dynamo.graph_break()
        return y * 2

    for function in (view_of_its_input, with_a_number, breaks):
        x = torch.randn(5)
        with compiled.graph_calls() as calls:
            result = torch.compile(function)(x)
        assert compiled.GraphReplay.of(calls, (x,), result) is None


def test_compiled_steps_attend_with_the_formula(monkeypatch):
    """Inside a compiled CPU graph the step's attention is the math backend's formula (fused
    by inductor); eager steps call SDPA. Both give the same attention to float rounding."""
    q, k, v = torch.randn(3, 4, 1, 8), torch.randn(3, 4, 6, 8), torch.randn(3, 4, 6, 8)
    mask = torch.tensor([True] * 4 + [False] * 2)[None, None, None]
    called = []
    math, sdpa = modules._math_attention, torch.nn.functional.scaled_dot_product_attention

    def spy(name, real):
        def call(*args, **kwargs):
            called.append(name)
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(modules, "_math_attention", spy("math", math))
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy("sdpa", sdpa))
    eager = modules._step_attention(q, k, v, mask, False)
    traced = torch.compile(modules._step_attention, backend="eager", fullgraph=True)
    compiled_out = traced(q, k, v, mask, False)
    assert called == ["sdpa", "math"]
    torch.testing.assert_close(compiled_out, eager)
    weights = torch.softmax((q @ k.transpose(-1, -2) / 8**0.5).masked_fill(~mask, -1e30), -1)
    torch.testing.assert_close(eager, weights @ v)


def test_compiled_step_follows_weight_changes(quick_compile):
    """The weights are frozen into the graph: a change to them makes a new one."""
    model = make(**ONE_LAYER)
    src, mask = inputs()
    before = model.generate(src, src_mask=mask, max_new_tokens=8, compile=True)
    with torch.no_grad():
        model.decoder_layers[0].ffn.fc1.weight.mul_(-3.0)
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight))
    eager = model.generate(src, src_mask=mask, max_new_tokens=8)
    assert not torch.equal(eager, before)
    assert torch.equal(model.generate(src, src_mask=mask, max_new_tokens=8, compile=True), eager)


def test_compiled_step_is_made_again_after_forget(monkeypatch, quick_compile):
    """A change that shows no new version (through .data) passes the check of the weights
    (whether the graph then reads the changed tensor is inductor's: run alone, this test's
    graph did; after earlier tests in one process, it did not); after
    packing.forget() the graph is made again and gives the eager tokens, as documented."""
    monkeypatch.setenv("XATTN_STEP_KERNEL", "plain")  # eager steps read the live weights
    model = make(**ONE_LAYER)
    src, mask = inputs()
    before = model.generate(src, src_mask=mask, max_new_tokens=8, compile=True)
    stamp = packing.model_stamp(model)
    model.lm_head.weight.data.add_(torch.randn_like(model.lm_head.weight))
    eager = model.generate(src, src_mask=mask, max_new_tokens=8)
    assert not torch.equal(eager, before)
    assert packing.model_stamp(model) == stamp
    packing.forget()
    assert packing.model_stamp(model) != stamp
    assert torch.equal(model.generate(src, src_mask=mask, max_new_tokens=8, compile=True), eager)


def test_a_compiled_model_is_freed_with_its_graphs(quick_compile):
    model = make(**ONE_LAYER)
    src, mask = inputs()
    model.generate(src, src_mask=mask, max_new_tokens=3, compile=True)
    held = weakref.ref(model)
    del model
    gc.collect()
    assert held() is None


def test_int8_traced_product_is_the_int8_formula():
    """The compiled kernel's arithmetic: each input row scaled to [-127, 127] and rounded,
    the int8 weights, the integer product, both scales; within int8 rounding of float32,
    closer than fbgemm's 7-bit input (eager)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(40, 24)
    int8 = quantize.Int8Linear.of(linear)
    x = torch.randn(2, 3, 40) * torch.tensor([1.0, 100.0, 0.01])[:, None]  # rows of any size
    x[1, 2] = 0.0  # an all-zero row
    step = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
    levels = torch.round(x / step).double()
    expected = (levels @ int8.weight_t.double()) * step.double() * int8.scale.double()
    with torch.no_grad():
        got, eager, exact = int8.traced(x), int8(x), linear(x)
    torch.testing.assert_close(got, (expected + linear.bias.double()).float())
    assert got.shape == (2, 3, 24) and torch.equal(got[1, 2], linear.bias.detach())
    error = (got - exact).norm(dim=-1) / exact.norm(dim=-1)
    assert error.max() < 0.02
    assert (got - exact).norm() < (eager - exact).norm()
    assert torch.equal(copy.deepcopy(int8).traced(x), got)


def test_int8_compiled_steps_call_no_eager_kernel(quick_compile, monkeypatch):
    """Compiled int8 steps run the traced product inside the graph: a compiled generate of
    9 tokens calls fbgemm as often as one of 1 token (the encoder's calls); eager steps
    call it at every step."""
    model = make(**ONE_LAYER).quantize("int8")
    src, mask = inputs()
    model.generate(src, src_mask=mask, max_new_tokens=9, compile=True)  # inductor loaded
    eager_calls, fbgemm = [], torch.ops.quantized.linear_dynamic
    spy = lambda *args: eager_calls.append(1) or fbgemm(*args)  # noqa: E731
    monkeypatch.setattr(torch.ops.quantized, "linear_dynamic", spy)
    calls = []
    for new_tokens, compile in ((1, True), (9, True), (9, False)):
        model.generate(src, src_mask=mask, max_new_tokens=new_tokens, compile=compile)
        calls.append(len(eager_calls))
        eager_calls.clear()
    assert calls[0] == calls[1] > 0 and calls[2] > calls[1]


@pytest.mark.parametrize("config", [{}, BART_LIKE], ids=["pre-norm", "bart-like"])
def test_int8_copies_compile_to_the_traced_int8_tokens(config, quick_compile, monkeypatch):
    """With the traced product in eager calls too (encoder included), compiled int8 steps
    give the eager tokens: one arithmetic, compiled or not (eager int8 calls fbgemm, which
    rounds the input otherwise)."""
    monkeypatch.setattr(quantize.Int8Linear, "forward", quantize.Int8Linear.traced)
    model = make(**config).quantize("int8")  # two layers: caches of more than one layer
    check_compiled_tokens(model, beams=not config, other_shapes=False)


def test_compile_refuses_non_booleans():
    model = make()
    src, mask = inputs()
    with pytest.raises(ValueError, match="compile='yes'"):
        model.generate(src, src_mask=mask, compile="yes")


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "inductor-alone"])
def test_float32_linear_layers_of_a_frozen_graph_run_onednn_products(onednn):
    """Inductor packs a float32 linear layer's weights for MKL's product on x86; compiled
    in onednn_linear_layers, for oneDNN's (as for bfloat16), with the same outputs."""
    assert torch._C.has_mkl and torch.backends.mkldnn.is_available()  # this CPU build's
    torch.manual_seed(0)
    layer = nn.Linear(64, 48).eval()
    x = torch.randn(8, 64)
    once = torch.compile(lambda x: torch.relu(layer(x)))
    context = compiled.onednn_linear_layers() if onednn else contextlib.nullcontext()
    options = {"freezing": True, "force_disable_caches": True}
    with torch.no_grad(), inductor_config.patch(options), context:
        got, code = run_and_get_code(once, x)
    torch.testing.assert_close(got, torch.relu(layer(x)))
    assert ("_linear_pointwise" in "".join(code)) == onednn
    assert ("_mkl_linear" in "".join(code)) == (not onednn)
    assert compiled.mkldnn_fusion.has_free_symbols(8) is False  # restored
