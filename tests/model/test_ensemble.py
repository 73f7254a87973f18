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
    kw = {"tie_output": False, "vocab_size": V, **kw}
    config = xattn.ModelConfig.preset("tiny", dropout=0.0, **kw)
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


def permuted_twin(**kw):
    """A word-level model and its twin trained on other data: the same words under other ids
    (a word's id follows its count), the twin's weights the model's rows moved to them."""
    import copy

    from xattn.data.tokenizers import PairTokenizer

    words = [f"w{i}" for i in range(10)]
    rising = [(w, w) for i, w in enumerate(words) for _ in range(i + 1)]
    falling = [(w, w) for i, w in enumerate(words) for _ in range(10 - i)]
    ours, theirs = PairTokenizer.train(rising), PairTokenizer.train(falling)
    size = ours.target_vocab_size
    model = make(0, vocab_size=size, share_embeddings=False, **kw)
    model.tokenizer = ours
    model.generation_config = model.generation_config.replace(
        alignment_heads=[(0, 0), (1, 1)], suppress_tokens=[2]
    )
    twin = copy.deepcopy(model)
    twin.tokenizer = theirs
    maps = []
    for side in ("source", "target"):
        a, b = getattr(ours, side).get_vocab(), getattr(theirs, side).get_vocab()
        maps.append(torch.tensor([b[t] for t, _ in sorted(a.items(), key=lambda kv: kv[1])]))
    assert not torch.equal(maps[1], torch.arange(size))  # other ids indeed
    with torch.no_grad():
        if model.config.front_end is None:
            twin.src_embed.weight[maps[0]] = model.src_embed.weight
        twin.tgt_embed.weight[maps[1]] = model.tgt_embed.weight
        twin.lm_head.weight[maps[1]] = model.lm_head.weight
    return model, twin, maps


@pytest.mark.parametrize("beams", [1, 3])
def test_members_with_the_same_words_under_other_ids_are_mapped(beams):
    model, twin, (source, target) = permuted_twin()
    src = torch.randint(4, model.config.vocab_size, (3, 6))
    kw = {"max_new_tokens": 7, "num_beams": beams, "suppress_tokens": [2]}
    expected = model.generate(src, **kw)
    assert expected[:, 1:].unique().numel() > 3
    assert torch.equal(twin.generate(source[src], **kw), target[expected])  # the twin alone
    assert torch.equal(Ensemble([model, twin]).generate(src, **kw), expected)
    assert torch.equal(Ensemble([twin, model]).generate(source[src], **kw), target[expected])
    prompt = expected[:, :3]  # a prompt in the first member's ids, continued by all
    continued = model.generate(src, decoder_input_ids=prompt, **kw)
    ensemble = Ensemble([model, twin])
    assert torch.equal(ensemble.generate(src, decoder_input_ids=prompt, **kw), continued)
    assert torch.equal(Ensemble([model, twin]).member_ids(1, expected), target[expected])


def test_word_times_read_each_member_in_its_own_ids():
    """Word timestamps teacher-force the output through every member: the twin must read it
    in its own ids for its alignment heads to match the model's."""
    import numpy as np

    model, twin, _ = permuted_twin(front_end="audio", source_features=40)
    t = np.arange(8000) / 8000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * (np.abs(t - 0.5) < 0.3)).astype(np.float32)
    audio = tone + np.random.default_rng(0).normal(0, 0.003, t.shape).astype(np.float32)
    expected = model.transcribe(audio, 8000, word_timestamps=True, max_new_tokens=4)
    assert len(expected.tokens) == 4 and len(set(expected.token_times)) > 1
    both = Ensemble([model, twin]).transcribe(audio, 8000, word_timestamps=True, max_new_tokens=4)
    assert both.words == expected.words
