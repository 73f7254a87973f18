"""The translation demo's teacher-forced alignment maps: batched, padded, sliced right."""

import torch

from xattn.data.en_es import generate_corpus
from xattn.data.text_tokenizer import TranslationTokenizer
from xattn.model import EncoderDecoder, ModelConfig
from xattn.tasks.translation import _alignment_maps


def test_batched_maps_equal_one_sentence_at_a_time():
    examples = generate_corpus(20, seed=3)
    tokenizer = TranslationTokenizer.train([(e.source, e.target) for e in examples])
    config = ModelConfig.preset(
        "tiny",
        vocab_size=tokenizer.source_vocab_size,
        target_vocab_size=tokenizer.target_vocab_size,
        share_embeddings=False,
        dropout=0.0,
    )
    torch.manual_seed(0)
    model = EncoderDecoder(config)  # untrained: attention spread unevenly, fine for equality
    maps, gold = _alignment_maps(model, tokenizer, examples, batch_size=6)
    assert len({len(e.source_tokens) for e in examples}) > 1  # padding is exercised
    assert len(maps) == len(gold) == len(examples)
    for e, m, g in zip(examples, maps, gold, strict=True):
        words = len(tokenizer.encode_target(e.target)) - 1  # <s> + words: a row per word + </s>
        assert m.shape == (config.decoder_layers, config.num_heads, words, len(e.source_tokens))
        assert g == e.alignment
        alone = _alignment_maps(model, tokenizer, [e])[0][0]
        torch.testing.assert_close(m, alone, atol=1e-5, rtol=0)
        # and the decoder's own attention of this sentence without any padding
        src = torch.tensor([tokenizer.encode(e.source)])
        tgt = torch.tensor([tokenizer.encode_target(e.target)[:-1]])
        _, layers = model.decode(tgt, model.encode(src), return_attention="all")
        direct = torch.cat(layers)[..., : len(e.source_tokens)]
        torch.testing.assert_close(m, direct, atol=1e-5, rtol=0)
