"""transformers interop: tiny random Marian and BART models built here, saved with
save_pretrained, loaded with EncoderDecoder.from_hf: same logits, same greedy and beam
outputs, same sampling draws, and Marian's SentencePiece tokenizer."""

import io
import json
import shutil

import pytest
import torch
import transformers

import xattn

VOCAB = 96


def marian_config(**kw):
    base = dict(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=VOCAB - 1,
        eos_token_id=0,
        decoder_start_token_id=VOCAB - 1,
        forced_eos_token_id=0,
        activation_function="swish",
        scale_embedding=True,
    )
    base.update(kw)
    return transformers.MarianConfig(**base)


def bart_config(**kw):
    base = dict(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=64,
    )
    base.update(kw)
    return transformers.BartConfig(**base)


def build(kind, **kw):
    torch.manual_seed(0)
    if kind == "marian":
        model = transformers.MarianMTModel(marian_config(**kw))
    elif kind == "marian-separate":
        model = transformers.MarianMTModel(
            marian_config(
                share_encoder_decoder_embeddings=False,
                decoder_vocab_size=80,
                pad_token_id=79,
                decoder_start_token_id=79,
                **kw,
            )
        )
    else:
        model = transformers.BartForConditionalGeneration(bart_config(**kw))
    with torch.no_grad():  # make the end token likely, so hypotheses end at varied lengths
        model.final_logits_bias.normal_(0, 0.5)
        model.final_logits_bias[0, model.config.eos_token_id] = 1.2
    return model.eval()


@pytest.fixture(scope="module", params=["marian", "marian-separate", "bart"])
def pair(request, tmp_path_factory):
    hf = build(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return hf, xattn.EncoderDecoder.from_hf(folder), folder


def batch(hf):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, 60, (4, 9), generator=g)
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[1, 5:] = False
    mask[3, 2:] = False
    src[~mask] = hf.config.pad_token_id
    return src, mask


def test_same_logits(pair):
    hf, ours, _ = pair
    src, mask = batch(hf)
    tgt = torch.randint(3, 60, (4, 6))
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        got = ours(src, tgt, src_mask=mask)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4


SETTINGS = [
    dict(num_beams=1),
    dict(num_beams=4),
    dict(num_beams=4, length_penalty=0.3),
    dict(num_beams=3, length_penalty=2.0, early_stopping=True),
    dict(num_beams=4, early_stopping="never"),
    dict(num_beams=4, early_stopping="never", length_penalty=-0.5),
    dict(num_beams=5, num_return_sequences=3),
    dict(num_beams=4, no_repeat_ngram_size=2),
    dict(num_beams=2, repetition_penalty=1.5),
    dict(num_beams=4, bad_words_ids=[[5], [7, 8]]),
    dict(num_beams=4, min_new_tokens=5),
    dict(num_beams=1, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3),
]


@pytest.mark.parametrize(
    "settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_same_greedy_and_beam_outputs(pair, settings):
    hf, ours, _ = pair
    src, mask = batch(hf)
    with torch.no_grad():
        expected = hf.generate(
            src, attention_mask=mask.long(), max_new_tokens=12, do_sample=False, **settings
        )
    got = ours.generate(src, src_mask=mask, max_new_tokens=12, **settings)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "settings",
    [
        dict(top_k=20, top_p=0.9, temperature=0.7),
        dict(num_return_sequences=2, top_k=0),
        dict(num_beams=3, top_k=10, temperature=1.3),  # beam sampling
        dict(num_beams=3, num_return_sequences=2, top_p=0.8),
    ],
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()),
)
def test_same_sampling_draws(pair, settings):
    hf, ours, _ = pair
    src, mask = batch(hf)
    torch.manual_seed(5)
    with torch.no_grad():
        expected = hf.generate(
            src, attention_mask=mask.long(), max_new_tokens=10, do_sample=True, **settings
        )
    torch.manual_seed(5)
    got = ours.generate(src, src_mask=mask, max_new_tokens=10, do_sample=True, **settings)
    assert torch.equal(got, expected)


def test_generation_defaults_come_from_the_folder(tmp_path):
    hf = build("marian")
    hf.generation_config.num_beams = 3
    hf.generation_config.max_length = 9
    hf.generation_config.bad_words_ids = [[VOCAB - 1]]
    hf.save_pretrained(tmp_path)
    ours = xattn.EncoderDecoder.from_hf(tmp_path)
    assert ours.generation_config.num_beams == 3
    assert ours.generation_config.bad_words_ids == ((VOCAB - 1,),)
    src, mask = batch(hf)
    with torch.no_grad():
        expected = hf.generate(src, attention_mask=mask.long())
    got = ours.generate(src, src_mask=mask)
    assert got.shape[1] <= 9 and torch.equal(got, expected)


def test_pickled_checkpoint_is_refused(tmp_path):
    hf = build("bart")
    hf.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(ValueError, match=r"only a pickled pytorch_model\.bin is here; xattn never"):
        xattn.EncoderDecoder.from_hf(tmp_path)


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        xattn.EncoderDecoder.from_hf(tmp_path / "nope")
    hf = build("bart")
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "t5"}))
    with pytest.raises(
        ValueError, match="model_type='t5'; xattn imports marian, bart, whisper checkpoints"
    ):
        xattn.EncoderDecoder.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "d_model": 64}))
    with pytest.raises(ValueError, match=r"has shape .*config\.json implies"):
        xattn.EncoderDecoder.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="unreadable safetensors file"):
        xattn.EncoderDecoder.from_hf(tmp_path)


# ---- Marian's SentencePiece tokenizer --------------------------------------------------

TEXTS = [
    "the red car is fast",
    "a small house near the river",
    "she reads the green book every day",
    "the cat sleeps on the warm floor",
    "they walk to the market in the morning",
    "we drink cold water after the long walk",
] * 20


def train_spm(path):
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS),
        model_writer=buffer,
        vocab_size=48,
        character_coverage=1.0,
        model_type="unigram",
        minloglevel=2,
    )
    path.write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def marian_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("opus-mt-tiny")
    train_spm(folder / "source.spm")
    shutil.copyfile(folder / "source.spm", folder / "target.spm")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(folder / "source.spm"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in pieces:
        if piece not in vocab and piece not in ("<s>", "</s>", "<unk>"):
            vocab[piece] = len(vocab)
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    hf_tok = transformers.MarianTokenizer(
        source_spm=str(folder / "source.spm"),
        target_spm=str(folder / "target.spm"),
        vocab=str(folder / "vocab.json"),
    )
    hf_tok.save_pretrained(folder)
    torch.manual_seed(0)
    V = len(vocab)
    hf = transformers.MarianMTModel(
        marian_config(vocab_size=V, pad_token_id=V - 1, decoder_start_token_id=V - 1)
    ).eval()
    hf.save_pretrained(folder)
    return folder, hf, hf_tok


def test_marian_tokenizer_matches_transformers(marian_folder):
    folder, _, hf_tok = marian_folder
    ours = xattn.EncoderDecoder.from_hf(folder).tokenizer
    assert ours is not None
    for text in ["the red car is fast", "a house near the green river", "zebra quartz"]:
        assert ours.encode(text) == hf_tok(text)["input_ids"]
        ids = hf_tok(text)["input_ids"]
        assert ours.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True)


def test_translate_text_end_to_end_like_transformers(marian_folder, tmp_path):
    folder, hf, hf_tok = marian_folder
    model = xattn.EncoderDecoder.from_hf(folder)
    texts = ["the red car is fast", "she reads the book"]
    ids, mask = model.tokenizer(texts)
    enc = hf_tok(texts, return_tensors="pt", padding=True)
    assert torch.equal(ids, enc["input_ids"]) and torch.equal(mask.long(), enc["attention_mask"])
    with torch.no_grad():
        expected = hf.generate(**enc, num_beams=3, max_new_tokens=8)
    got = model.generate(ids, src_mask=mask, num_beams=3, max_new_tokens=8)
    assert torch.equal(got, expected)
    assert [model.tokenizer.decode(r) for r in got] == hf_tok.batch_decode(
        expected, skip_special_tokens=True
    )
    model.save(tmp_path / "copy")  # the tokenizer travels with the saved model
    again = xattn.EncoderDecoder.load(tmp_path / "copy")
    assert again.tokenizer.encode(texts[0]) == model.tokenizer.encode(texts[0])
    assert torch.equal(again.generate(ids, src_mask=mask, num_beams=3, max_new_tokens=8), got)


def marian_tokenizer_folder(folder, *, separate: bool):
    """A Marian tokenizer folder written by transformers: the spm models, vocab.json with a
    language code >>es<< in it, and (separate) a target vocabulary of its own."""
    import sentencepiece as spm

    train_spm(folder / "source.spm")
    shutil.copyfile(folder / "source.spm", folder / "target.spm")
    sp = spm.SentencePieceProcessor(model_file=str(folder / "source.spm"))
    vocab = {"</s>": 0, "<unk>": 1, ">>es<<": 2}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    kwargs = {}
    if separate:  # the target side numbers its pieces in reverse
        pieces = [p for p in vocab if p not in ("</s>", "<unk>", "<pad>", ">>es<<")]
        target = {"</s>": 0, "<unk>": 1, **{p: 2 + i for i, p in enumerate(reversed(pieces))}}
        target["<pad>"] = len(target)
        (folder / "target_vocab.json").write_text(json.dumps(target))
        kwargs = {"separate_vocabs": True, "target_vocab_file": str(folder / "target_vocab.json")}
    hf_tok = transformers.MarianTokenizer(
        source_spm=str(folder / "source.spm"),
        target_spm=str(folder / "target.spm"),
        vocab=str(folder / "vocab.json"),
        **kwargs,
    )
    hf_tok.save_pretrained(folder)
    return hf_tok


@pytest.mark.parametrize("separate", [False, True], ids=["shared", "separate-vocabularies"])
def test_marian_language_codes_and_separate_vocabularies(tmp_path, separate):
    from xattn.data.tokenizers import MarianTokenizer

    hf_tok = marian_tokenizer_folder(tmp_path, separate=separate)
    ours = MarianTokenizer(tmp_path)
    assert ours.separate_vocabs is separate
    for text in [">>es<< the red car is fast", "the red car is fast", ">>es<< zebra"]:
        expected = hf_tok(text)["input_ids"]
        assert ours.encode(text) == expected
    assert ours.encode(">>es<< the car")[0] == 2  # the code is one token, not spm pieces
    ids = hf_tok(text_target="the green book")["input_ids"]  # the target side's ids
    assert ours.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True)
    if separate:  # the target vocabulary is not the source one: decoding must use it
        assert ids != hf_tok("the green book")["input_ids"]
    (tmp_path / "copy").mkdir()
    ours.save(tmp_path / "copy")
    assert MarianTokenizer(tmp_path / "copy").encode(">>es<< the car") == ours.encode(
        ">>es<< the car"
    )
