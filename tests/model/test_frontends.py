"""Input front ends: shapes, masks for variable sizes (a padded batch equals each example
alone), positions, config validation, save/load, generation with a prompt."""

import pytest
import torch

from xattn.model import EncoderDecoder, ModelConfig
from xattn.model.frontends import AudioFrontEnd, ImageFrontEnd, SentenceFrontEnd, sinusoids_2d
from xattn.training.batching import Item, collate_items, pad_sources


def _batch_matches_alone(front_end, sources, pad=0):
    src, mask = pad_sources(sources, pad)
    x, out_mask = front_end(src, mask)
    for i, s in enumerate(sources):
        alone, _ = front_end(s[None], torch.ones(1, s.shape[0], dtype=torch.bool))
        n = alone.shape[1]
        assert int(out_mask[i].sum()) == n
        torch.testing.assert_close(x[i, :n], alone[0], atol=1e-5, rtol=1e-5)
        assert torch.all(x[i, n:] == 0)  # padding positions are exact zeros
    return x, out_mask


def test_audio_front_end_subsamples_by_four_with_masks():
    torch.manual_seed(0)
    fe = AudioFrontEnd(40, 32).eval()
    sources = [torch.randn(n, 40) for n in (37, 100, 8, 1)]
    x, mask = _batch_matches_alone(fe, sources)
    assert x.shape == (4, 25, 32)
    assert mask.sum(1).tolist() == [10, 25, 2, 1]  # ceil(ceil(n / 2) / 2)


def test_image_front_end_grid_with_variable_widths():
    torch.manual_seed(0)
    fe = ImageFrontEnd(12, 32).eval()
    sources = [torch.rand(w, 12) for w in (48, 20, 9)]  # (W, H) pixel columns
    x, mask = _batch_matches_alone(fe, sources)
    assert x.shape == (3, 12 * 3, 32)  # 3 rows x ceil(48 / 4) columns
    assert mask.sum(1).tolist() == [36, 15, 9]
    # in training, batch norm's statistics count real pixels only: more padding changes
    # nothing, and the running statistics move
    fe.train()
    src, mask = pad_sources(sources, 0)
    more = torch.cat([src, torch.rand(3, 16, 12)], 1)  # 16 more columns of noise, masked
    more_mask = torch.cat([mask, torch.zeros(3, 16, dtype=torch.bool)], 1)
    before = fe.norms[0].running_mean.clone()
    x1, _ = fe(src, mask)
    x2, m2 = fe(more, more_mask)
    torch.testing.assert_close(x2[:, : x1.shape[1]], x1)
    assert not m2[:, x1.shape[1] :].any() and (x2[:, x1.shape[1] :] == 0).all()
    assert not torch.equal(fe.norms[0].running_mean, before)


def test_sinusoids_2d_layout():
    table = sinusoids_2d(3, 5, 16)  # token c * 3 + r
    assert table.shape == (15, 16)
    for c in range(5):
        for r in range(3):
            assert torch.equal(table[c * 3 + r, :8], table[r, :8])  # row half: row r
            assert torch.equal(table[c * 3 + r, 8:], table[c * 3, 8:])  # column half
    assert len({tuple(row.tolist()) for row in table}) == 15


def test_image_token_sees_seventeen_pixel_columns():
    torch.manual_seed(0)
    fe = ImageFrontEnd(12, 32).eval()
    x = torch.rand(1, 48, 12)
    base, _ = fe(x)
    for col in (0, 20, 21, 47):
        poked = x.clone()
        poked[0, col, 6] += 1.0
        moved = (fe(poked)[0] - base).abs().sum(-1)[0] > 1e-6  # (36,) tokens, c * 3 + r
        columns = {int(k) // 3 for k in moved.nonzero()}
        assert columns == {c for c in range(12) if 4 * c - 8 <= col <= 4 * c + 8}


def test_sentence_front_end_one_slot_per_sentence():
    torch.manual_seed(0)
    fe = SentenceFrontEnd(20, 16, max_words=6, max_sentences=10).eval()
    passages = [
        torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]]),
        torch.tensor([[3, 4, 5, 9], [8, 0, 0, 0], [6, 7, 0, 0]]),
    ]
    src, mask = pad_sources(passages, 0)
    assert src.shape == (2, 3, 4) and mask.tolist() == [[True, True, False], [True] * 3]
    x, out_mask = fe(src, mask)
    assert torch.equal(out_mask, mask)
    # the last sentence of each passage gets the same recency embedding: "0 before the end"
    last_a = fe.words(torch.tensor([6, 7])).sum(0)  # position gains start at 1: bag of words
    torch.testing.assert_close(x[0, 1], last_a + fe.recency.weight[0])
    torch.testing.assert_close(x[1, 2], last_a + fe.recency.weight[0])
    assert torch.all(x[0, 2] == 0)
    # once the gains are learned, word order matters: "6 7" and "7 6" are different slots
    with torch.no_grad():
        fe.position_gains.normal_()
    gains = 1 + fe.position_gains
    swapped = fe(torch.tensor([[[6, 7, 0, 0]], [[7, 6, 0, 0]]]))[0][:, 0]
    expected = fe.words(torch.tensor([6, 7])) * gains[:2]
    torch.testing.assert_close(swapped[0], expected.sum(0) + fe.recency.weight[0])
    assert not torch.allclose(swapped[0], swapped[1])
    with pytest.raises(ValueError, match=r"at most 10 sentences of 6 words"):
        fe.check(torch.zeros(1, 11, 3, dtype=torch.long))


@pytest.mark.parametrize(
    ("kind", "features", "source"),
    [
        ("image", 12, lambda: torch.rand(2, 24, 12)),
        ("audio", 20, lambda: torch.randn(2, 30, 20)),
        ("sentences", 5, lambda: torch.randint(1, 30, (2, 4, 5))),
    ],
)
def test_models_with_front_ends_train_save_and_load(tmp_path, kind, features, source):
    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny",
        vocab_size=30,
        target_vocab_size=16,
        share_embeddings=False,
        front_end=kind,
        source_features=features,
    )
    model = EncoderDecoder(config)
    src = source()
    mask = torch.ones(src.shape[:2], dtype=torch.bool)
    mask[1, -1] = False
    tgt = torch.randint(3, 16, (2, 5))
    logits = model(src, tgt, src_mask=mask)
    assert logits.shape == (2, 5, 16)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.front_end.parameters())
    model.save(tmp_path / "m")
    loaded = EncoderDecoder.load(tmp_path / "m")
    assert type(loaded.front_end) is type(model.front_end)
    expected = model.eval()(src, tgt, src_mask=mask)
    torch.testing.assert_close(loaded(src, tgt, src_mask=mask), expected)
    out = loaded.generate(src, src_mask=mask, max_new_tokens=4)
    assert out.shape[0] == 2 and out.shape[1] <= 5


def test_front_end_config_and_input_errors():
    with pytest.raises(ValueError, match=r"front_end.*expected None or one of image, audio"):
        ModelConfig.preset("tiny", front_end="video", source_features=3, share_embeddings=False)
    with pytest.raises(ValueError, match=r"needs source_features"):
        ModelConfig.preset("tiny", front_end="audio", share_embeddings=False)
    model = EncoderDecoder(
        ModelConfig.preset("tiny", front_end="audio", source_features=8, share_embeddings=False)
    )
    with pytest.raises(ValueError, match=r"src has shape \(2, 10, 7\); expected log-mel frames"):
        model.encode(torch.randn(2, 10, 7))
    with pytest.raises(ValueError, match=r"reads float features"):
        model.encode(torch.zeros(2, 10, dtype=torch.long))
    qa = EncoderDecoder(
        ModelConfig.preset("tiny", front_end="sentences", source_features=4, share_embeddings=False)
    )
    with pytest.raises(ValueError, match=r"src is a float tensor .* reads token ids"):
        qa.encode(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"word ids outside \[0, 64\)"):
        qa.encode(torch.full((1, 2, 4), 99))


def test_prompted_generation_continues_the_prompt():
    torch.manual_seed(0)
    model = EncoderDecoder(ModelConfig.preset("tiny")).eval()
    src = torch.randint(3, 64, (3, 7))
    prompt = torch.tensor([[1, 5, 6], [1, 7, 8], [1, 9, 9]])
    out = model.generate(src, decoder_input_ids=prompt, max_new_tokens=4)
    assert torch.equal(out[:, :3], prompt) and out.shape[1] <= 7
    # greedy: each new token is the argmax of a teacher-forced pass over what came before
    for row in range(3):
        seq = out[row : row + 1]
        logits = model(src[row : row + 1], seq[:, :-1])
        assert torch.equal(logits[0, 2:].argmax(-1)[: seq.shape[1] - 3], seq[0, 3:])
    beams = model.generate(src, decoder_input_ids=prompt, max_new_tokens=4, num_beams=3)
    assert torch.equal(beams[:, :3], prompt)
    with pytest.raises(ValueError, match=r"decoder_input_ids has shape \(2, 3\)"):
        model.generate(src, decoder_input_ids=prompt[:2])


def test_collate_items_leaves_the_prompt_out_of_the_loss():
    items = [Item([5, 2], [1, 7, 8, 9, 2], prompt=3), Item([6, 6, 2], [1, 4, 2])]
    batch = collate_items(items, pad=0)
    assert batch.tgt_in.tolist() == [[1, 7, 8, 9], [1, 4, 0, 0]]
    assert batch.tgt_out.tolist() == [[-100, -100, 9, 2], [4, 2, -100, -100]]
    assert batch.src.tolist() == [[5, 2, 0], [6, 6, 2]]
    features = collate_items([Item(torch.ones(3, 2), [1, 2]), Item(torch.ones(1, 2), [1, 2])], 0)
    assert features.src.shape == (2, 3, 2) and features.src_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert torch.all(features.src[1, 1:] == 0)
