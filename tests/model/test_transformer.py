"""EncoderDecoder: cached decoding equals the full pass, generation, save/load, bad input."""

import json
import math

import pytest
import torch

from xattn import EncoderDecoder, ModelConfig
from xattn.generation import GenerationConfig, beam_search

# fmt: off
CONFIGS = {
    "pre-norm": ModelConfig.preset("tiny"),
    "post-norm+scale": ModelConfig.preset(
        "tiny", pre_norm=False, embed_scale=True, final_logits_bias=True, activation="silu"
    ),
    "rmsnorm+gqa+learned": ModelConfig.preset(
        "tiny", norm="rmsnorm", num_kv_heads=2, positions="learned", position_offset=2,
        embed_norm=True, share_embeddings=False, target_vocab_size=40, tie_output=False,
    ),
}
# fmt: on


def make(name, seed=0):
    torch.manual_seed(seed)
    model = EncoderDecoder(CONFIGS[name]).eval()
    if model.final_logits_bias is not None:
        model.final_logits_bias.normal_()
    return model


def source(B=3, S=7, vocab=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 4:] = False
    return src, mask


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("chunk", [1, 3])
def test_cached_decoding_equals_full_forward(name, chunk):
    model = make(name)
    src, mask = source()
    tgt = torch.randint(3, 40, (3, 8))
    with torch.no_grad():
        full, full_maps = model.decode(
            tgt, model.encode(src, mask), src_mask=mask, return_weights="mean"
        )
        memory = model.encode(src, mask)
        state = model.start_decoding(memory, mask, max_length=8)
        pieces, maps = [], []
        for t0 in range(0, 8, chunk):
            logits, state, m = model.decode_step(
                tgt[:, t0 : t0 + chunk], state, return_weights="mean"
            )
            pieces.append(logits)
            maps.append(m)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    for layer in range(len(full_maps)):  # cross-attention maps too
        stepped = torch.cat([m[layer] for m in maps], dim=1)
        torch.testing.assert_close(stepped, full_maps[layer], atol=1e-6, rtol=1e-5)
        assert (stepped[1, :, 4:] == 0).all()  # padded source positions get no weight
    assert state.length == 8


@pytest.mark.parametrize("name", CONFIGS)
def test_training_forward_with_fused_projections_equals_the_inference_forward(name):
    # while training, q/k/v (and cross-attention k/v) run as one product; without dropout
    # the logits and the gradients are those of the per-projection inference path
    model = make(name)
    src, mask = source()
    tgt = torch.randint(3, 40, (3, 5), generator=torch.Generator().manual_seed(2))

    def logits_and_grads(training):
        model.train(training)
        model.zero_grad()
        logits = model(src, tgt, src_mask=mask)
        logits.square().mean().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    logits, grads = logits_and_grads(False)
    fused_logits, fused_grads = logits_and_grads(True)
    torch.testing.assert_close(fused_logits, logits, atol=1e-5, rtol=1e-5)
    assert set(fused_grads) == set(grads)
    for n in grads:
        torch.testing.assert_close(fused_grads[n], grads[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("embed_scale", [True, False])
def test_a_new_model_starts_with_unit_inputs_and_tied_logits_of_unit_size(embed_scale):
    # token embeddings start at N(0, 1 / scale^2): the scaled inputs are N(0, 1) either way;
    # with the default sqrt(d) scale the tied output layer's logits start near unit size, so
    # the first loss is near log(V) (not ~200, as N(0, 1) tied to the output made it here,
    # whose softmax then trained through denormal floats at a tenth of the speed)
    torch.manual_seed(0)
    config = ModelConfig.preset("base", embed_scale=embed_scale, dropout=0.0)
    model = EncoderDecoder(config)
    weight = model.tgt_embed.weight
    assert weight[config.pad_token_id].abs().max() == 0
    assert (weight * model.embed_scale)[3:].std().item() == pytest.approx(1.0, abs=0.02)
    src = torch.randint(3, config.vocab_size, (4, 16))
    tgt = torch.randint(3, config.vocab_size, (4, 17))
    logits = model(src, tgt[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())
    if embed_scale:
        assert 0.5 < logits.std().item() < 2.0
        assert loss.item() < math.log(config.vocab_size) + 4
    else:
        assert logits.std().item() > 10  # the unscaled convention keeps N(0, 1) rows


def test_forward_is_decode_of_encode_and_target_is_causal():
    model = make("pre-norm")
    src, mask = source()
    tgt = torch.randint(3, 60, (3, 6))
    with torch.no_grad():
        logits = model(src, tgt, src_mask=mask)
        assert torch.equal(logits, model.decode(tgt, model.encode(src, mask), src_mask=mask))
        changed = tgt.clone()
        changed[:, 4:] = 5
        later = model(src, changed, src_mask=mask)
    assert logits.shape == (3, 6, 64)
    torch.testing.assert_close(later[:, :4], logits[:, :4])
    assert not torch.allclose(later[:, 4:], logits[:, 4:])


def test_source_padding_content_is_ignored():
    model = make("post-norm+scale")
    src, mask = source()
    other = src.clone()
    other[1, 4:] = 9
    tgt = torch.randint(3, 60, (3, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(src, tgt, src_mask=mask), model(other, tgt, src_mask=mask))


def test_a_source_mask_without_padding_is_left_out_of_the_encoder_attention(monkeypatch):
    """The encoder's attention gets no mask where src_mask has no padding (none to build),
    with the output of no mask; a padded batch's mask still reaches every layer."""
    from xattn.attention import modules

    model = make("pre-norm")
    src, mask = source()
    masks = []
    real = modules.attention
    monkeypatch.setattr(
        modules, "attention", lambda *a, **k: masks.append(k["mask"]) or real(*a, **k)
    )
    with torch.no_grad():
        full = model.encode(src, torch.ones_like(mask))
        assert masks == [None] * model.config.encoder_layers
        assert torch.equal(full, model.encode(src))
        model.encode(src, mask)
    padded = masks[-model.config.encoder_layers :]
    assert all(torch.equal(m, mask[:, None, None, :]) for m in padded)


def test_float_feature_sequences_feed_the_same_encoder():
    config = ModelConfig.preset("tiny", source_features=12, share_embeddings=False)
    model = EncoderDecoder(config).eval()
    feats = torch.randn(2, 10, 12)  # (B, S, F): image patches or audio frames
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 6:] = False
    with torch.no_grad():
        memory = model.encode(feats, mask)
        out = model.generate(feats, src_mask=mask, max_new_tokens=4, num_beams=2)
    assert memory.shape == (2, 10, 32)
    assert out.shape[0] == 2 and out[0, 0] == config.decoder_start_token_id
    with pytest.raises(ValueError, match=r"src has dtype torch.int64; this model reads float"):
        model.encode(torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("name", CONFIGS)
def test_beam_width_one_equals_greedy(name):
    model = make(name)
    src, mask = source()
    greedy = model.generate(src, src_mask=mask, max_new_tokens=10)
    one_beam = model.generate(src, src_mask=mask, max_new_tokens=10, num_beams=1)
    assert torch.equal(greedy, one_beam)
    # beam search with one beam (forced through the beam code path) finds the greedy path
    memory = model.encode(src, mask)
    from xattn.model.transformer import _ModelStepper

    config = model.generation_config.replace(max_new_tokens=10)
    stepper = _ModelStepper(model, model.start_decoding(memory, mask, max_length=11), False)
    start = torch.full((3, 1), model.config.decoder_start_token_id)
    beams = beam_search(stepper, start, config, batch_size=3).sequences
    assert torch.equal(beams, greedy[:, : beams.shape[1]])


class _ReplicatedStepper:
    """What transformers does: a copy of the source's K/V for every beam."""

    def __init__(self, model, memory, mask, beams, max_length):
        rows = torch.arange(memory.shape[0]).repeat_interleave(beams)
        self.model = model
        self.state = model.start_decoding(memory[rows], mask[rows], max_length=max_length)

    def step(self, tokens):
        logits, self.state, _ = self.model.decode_step(tokens, self.state)
        return logits[:, -1], None

    def reorder(self, indices):
        self.state = self.state.reorder(indices)


def test_shared_cross_kv_gives_the_same_beams_as_replicated_kv():
    model = make("post-norm+scale")
    src, mask = source()
    config = GenerationConfig(num_beams=4, max_new_tokens=9, eos_token_id=2, pad_token_id=0)
    shared = model.generate(src, src_mask=mask, generation_config=config)
    memory = model.encode(src, mask)
    stepper = _ReplicatedStepper(model, memory, mask, 4, 10)
    start = torch.full((12, 1), model.config.decoder_start_token_id)
    replicated = beam_search(stepper, start, config, batch_size=3).sequences
    assert torch.equal(shared, replicated)
    state = model.start_decoding(memory, mask, rows_per_source=4, max_length=10)
    assert state.memories[0].key.shape[0] == 3  # one K/V per source, not per beam
    assert state.caches[0].key.shape[0] == 12


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_returns_cross_attention_of_generated_tokens(num_beams):
    model = make("pre-norm")
    src, mask = source()
    out = model.generate(
        src, src_mask=mask, max_new_tokens=8, num_beams=num_beams, return_weights="mean"
    )
    seqs = out.sequences
    N = seqs.shape[1] - 1
    assert len(out.cross_attention) == 2 and out.cross_attention[0].shape == (3, N, 7)
    # the maps collected during search equal a teacher-forced pass over the output
    with torch.no_grad():
        _, maps = model.decode(
            seqs[:, :-1], model.encode(src, mask), src_mask=mask, return_weights="mean"
        )
    pad = model.generation_config.pad_token_id
    eos = model.generation_config.eos_token_id[0]
    for b in range(3):
        row = seqs[b, 1:]
        ended = (row == eos).nonzero()
        n = int(ended[0]) + 1 if len(ended) else N  # tokens up to and with the end token
        for layer in range(2):
            torch.testing.assert_close(
                out.cross_attention[layer][b, :n], maps[layer][b, :n], atol=1e-5, rtol=1e-4
            )
            assert (out.cross_attention[layer][b, n:] == 0).all()
        assert (row[n:] == pad).all()
    heads = model.generate(src, src_mask=mask, max_new_tokens=3, return_weights=True)
    assert heads.cross_attention[0].shape == (3, 3, 4, 7)  # (B, N, H, S): every head
    # the same word as attention(): True is every head, "mean" their mean
    torch.testing.assert_close(
        heads.cross_attention[0].mean(2), out.cross_attention[0][:, :3], atol=1e-6, rtol=0
    )


def test_output_layout_starts_with_start_token_and_pads_after_end():
    model = make("post-norm+scale")
    with torch.no_grad():
        model.final_logits_bias[2] = 100.0  # the end token (id 2) dominates from the first step
    src, mask = source()
    out = model.generate(src, src_mask=mask, max_new_tokens=5)
    assert torch.equal(out, torch.tensor([[1, 2]] * 3))
    out = model.generate(src, src_mask=mask, max_new_tokens=5, min_new_tokens=3)
    assert out.shape == (3, 5) and (out[:, 0] == 1).all() and (out[:, 4] == 2).all()


# ---- save / load ---------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_save_load_round_trip(name, tmp_path):
    model = make(name)
    model.generation_config = model.generation_config.replace(num_beams=3, length_penalty=0.7)
    model.set_alignment_heads([[0, 1], [1, 3]])  # Whisper's field: kept with the model
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    loaded = EncoderDecoder.load(tmp_path / "m")
    assert loaded.config == model.config and not loaded.training
    assert loaded.generation_config == model.generation_config
    assert loaded.generation_config.alignment_heads == ((0, 1), (1, 3))
    src, mask = source()
    tgt = torch.randint(3, 40, (3, 4))
    with torch.no_grad():
        assert torch.equal(loaded(src, tgt, src_mask=mask), model(src, tgt, src_mask=mask))
    if model.config.tie_output:
        assert loaded.lm_head.weight.data_ptr() == loaded.tgt_embed.weight.data_ptr()
    assert not list(tmp_path.glob(".m.*"))  # no temporary folders left behind


def test_failed_save_leaves_the_old_model_whole(tmp_path, monkeypatch):
    model = make("pre-norm")
    model.save(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_model", broken)
    with pytest.raises(OSError, match="disk full"):
        make("pre-norm", seed=5).save(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_load_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match=r"not an xattn model folder \(config\.json is missing\)"):
        EncoderDecoder.load(tmp_path)
    make("pre-norm").save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="unreadable weights"):
        EncoderDecoder.load(tmp_path / "m")
    make("post-norm+scale").save(tmp_path / "other")
    (tmp_path / "m" / "model.safetensors").write_bytes(
        (tmp_path / "other" / "model.safetensors").read_bytes()
    )
    with pytest.raises(ValueError, match="does not match"):
        EncoderDecoder.load(tmp_path / "m")
    settings = tmp_path / "other" / "generation_config.json"
    settings.write_text(json.dumps({"alignment_heads": [[0, 0], [2, 0]]}))  # 2 decoder layers
    with pytest.raises(
        ValueError,
        match=r"other/generation_config.json: alignment_heads "
        r"\[\[0, 0\], \[2, 0\]\]: .* decoder's 2 layers x 4 heads",
    ):
        EncoderDecoder.load(tmp_path / "other")
    settings.write_text(json.dumps({"alignment_heads": [[0, -1]]}))
    with pytest.raises(ValueError, match=r"generation_config.json: GenerationConfig.alignment_he"):
        EncoderDecoder.load(tmp_path / "other")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"xattn": {"d_model": 30}}))
    with pytest.raises(ValueError, match=r"ModelConfig\.d_model=30: not divisible by num_heads=4"):
        EncoderDecoder.load(tmp_path / "m")


def test_bad_inputs_name_the_tensor():
    model = make("pre-norm")
    with pytest.raises(ValueError, match=r"src has shape \(7,\) and dtype torch.int64"):
        model.encode(torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"src holds token ids outside \[0, 64\)"):
        model.encode(torch.tensor([[1, 64]]))
    with pytest.raises(ValueError, match="src has S=200 positions; this model has max_positions"):
        model.encode(torch.ones(1, 200, dtype=torch.long))
    with pytest.raises(ValueError, match=r"src_mask has shape \(1, 4\) and dtype torch.int64"):
        model.encode(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="src is a float tensor"):
        model.encode(torch.randn(1, 3, 5))
    with pytest.raises(ValueError, match="the target reaches position 129"):
        model(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 129, dtype=torch.long))
    with pytest.raises(ValueError, match="return_weights='all'; expected False, True or 'mean'"):
        model.generate(torch.ones(1, 3, dtype=torch.long), return_weights="all")
    with pytest.raises(ValueError, match="unknown generation setting.s. num_beam; known: "):
        model.generate(torch.ones(1, 3, dtype=torch.long), num_beam=3)  # a typo, named
