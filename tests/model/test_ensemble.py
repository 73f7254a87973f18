"""Ensemble: the members' mean next-token probability, searched like one model's (against
a search written out by hand over full forward passes), exactly one model's output for an
ensemble of one, beams that keep every member's cache in step, and clear errors for models
that cannot be members together."""

import dataclasses

import pytest
import torch

import xattn
from xattn import Ensemble

V = 40


def make(seed: int, **kw):
    torch.manual_seed(seed)
    kw = {"tie_output": False, **kw}
    config = xattn.ModelConfig.preset("tiny", vocab_size=V, dropout=0.0, **kw)
    return xattn.EncoderDecoder(config).eval()


def greedy_by_hand(models, src, mask, steps: int) -> torch.Tensor:
    """Greedy over the mean of the models' softmax, each step a full forward pass (no
    cache): the reference for the ensemble's cached search (EOS not special here)."""
    rows = torch.full((src.shape[0], 1), models[0].config.decoder_start_token_id)
    for _ in range(steps):
        probs = [torch.softmax(m(src, rows, src_mask=mask)[:, -1].double(), -1) for m in models]
        rows = torch.cat([rows, torch.stack(probs).mean(0).argmax(-1, keepdim=True)], dim=1)
    return rows


def test_greedy_follows_the_mean_of_the_members_probabilities():
    models = [make(0), make(1), make(2)]
    src = torch.randint(3, V, (4, 6))
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2, 3:] = False
    out = Ensemble(models).generate(src, src_mask=mask, max_new_tokens=8, suppress_tokens=[2])
    expected = greedy_by_hand(models, src, mask, 8)
    assert torch.equal(out, expected)
    # the members alone write other tokens: the mean decides
    alone = [m.generate(src, src_mask=mask, max_new_tokens=8, suppress_tokens=[2]) for m in models]
    assert all(not torch.equal(out, a) for a in alone)


@pytest.mark.parametrize("kw", [{}, {"num_beams": 3}, {"num_beams": 4, "num_return_sequences": 2}])
def test_an_ensemble_of_one_is_the_model(kw):
    model = make(0)
    src = torch.randint(3, V, (3, 7))
    expected = model.generate(src, max_new_tokens=9, **kw)
    assert torch.equal(Ensemble([model]).generate(src, max_new_tokens=9, **kw), expected)
    torch.manual_seed(5)
    drawn = model.generate(src, max_new_tokens=9, do_sample=True, top_k=10)
    torch.manual_seed(5)
    again = Ensemble([model]).generate(src, max_new_tokens=9, do_sample=True, top_k=10)
    assert torch.equal(again, drawn)


def test_beams_reorder_every_members_cache():
    """Two copies of one model are the model's distribution: beam search over them finds the
    model's beams only if each beam's cache follows it in both copies."""
    model, twin = make(0), make(0)
    src = torch.randint(3, V, (2, 7))
    expected = model.generate(src, max_new_tokens=10, num_beams=4)
    assert expected[:, 1:].unique().numel() > 5  # beams that differ
    assert torch.equal(
        Ensemble([model, twin]).generate(src, max_new_tokens=10, num_beams=4), expected
    )
    mixed = Ensemble([model, make(1)]).generate(src, max_new_tokens=10, num_beams=4)
    assert mixed.shape[0] == 2 and not torch.equal(mixed, expected)


def test_int8_members_and_training_mode():
    models = [make(0), make(1)]
    src = torch.randint(3, V, (2, 5))
    int8 = Ensemble(models).quantize("int8")
    assert int8.quantized == "int8" and all(m.quantized == "int8" for m in int8.members)
    assert int8.generate(src, max_new_tokens=4).shape == (2, 5)
    ensemble = Ensemble(models).train()
    assert all(m.training for m in ensemble.members)
    ensemble.eval()
    assert not any(m.training for m in ensemble.members)


def test_members_that_cannot_be_ensembled_are_named():
    model = make(0)
    with pytest.raises(ValueError, match="needs at least one model"):
        Ensemble([])
    with pytest.raises(TypeError, match="member 1 is a Linear; expected EncoderDecoder"):
        Ensemble([model, torch.nn.Linear(2, 2)])
    other = xattn.EncoderDecoder(dataclasses.replace(model.config, vocab_size=V + 1))
    with pytest.raises(ValueError, match=r"b has config.vocab_size = 41 but a has 40"):
        Ensemble([model, other], names=["a", "b"])
    ended = make(1)
    ended.generation_config = ended.generation_config.replace(eos_token_id=[5])
    with pytest.raises(ValueError, match=r"member 1 has generation_config.eos_token_id"):
        Ensemble([model, ended])
    with pytest.raises(ValueError, match="quantized = 'int8' but member 0 has None"):
        Ensemble([model, make(1).quantize("int8")])
    with pytest.raises(ValueError, match="2 names for 1 models"):
        Ensemble([model], names=["a", "b"])
