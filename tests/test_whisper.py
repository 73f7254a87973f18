"""Whisper: tiny random models built with transformers, saved with save_pretrained, loaded
with EncoderDecoder.from_hf; features, logits, transcribed tokens (greedy and beam, with and
without a language, with the suppress lists) and token timestamps equal transformers'."""

import json
import shutil

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import xattn
from xattn.data.audio import log_mel, whisper_spec
from xattn.transcription import Transcription

TEXTS = ["hello world, it is a test.", "the quick brown fox (jumps) over it!"] * 10
SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|fr|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|notimestamps|>",
]


def whisper_tokenizer(folder):
    """A byte-level BPE tokenizer.json with Whisper's special tokens (ids at the end)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=90, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(TEXTS, trainer)
    tok.add_special_tokens(SPECIALS)
    tok.save(str(folder / "tokenizer.json"))
    return tok


def build(folder, *, multilingual=True, n_mels=80, seed=0):
    """A tiny random WhisperForConditionalGeneration saved to folder (with tokenizer.json)."""
    tok = whisper_tokenizer(folder)
    ids = {name: tok.token_to_id(name) for name in SPECIALS}
    V = tok.get_vocab_size()
    torch.manual_seed(seed)
    config = transformers.WhisperConfig(
        vocab_size=V, num_mel_bins=n_mels, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, d_model=32, max_source_positions=1500, max_target_positions=64,
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"], decoder_start_token_id=ids["<|startoftranscript|>"],
        begin_suppress_tokens=[ids["<|endoftext|>"], 3], suppress_tokens=[5, 6],
    )  # fmt: skip
    hf = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # an end token that grows likelier: outputs end before the limit
        bias = torch.randn(config.d_model)
        hf.model.decoder.layer_norm.bias.copy_(bias)
        hf.model.decoder.embed_tokens.weight[ids["<|endoftext|>"]] = 0.12 * bias / bias.norm()
    g = hf.generation_config
    g.no_timestamps_token_id = ids["<|notimestamps|>"]
    g.alignment_heads = [[1, 0], [1, 2]]
    g.max_length = 64
    if multilingual:
        g.lang_to_id = {"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"]}
        g.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
        g.is_multilingual = True
    else:
        g.is_multilingual = False
        g.forced_decoder_ids = [[1, ids["<|notimestamps|>"]]]
    hf.save_pretrained(folder)
    return hf, ids


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whisper-tiny")
    hf, ids = build(folder)
    return hf, xattn.EncoderDecoder.from_hf(folder), folder, ids


def audio_clip(seconds, seed=0, rate=16000):
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    return (0.1 * rng.normal(size=t.shape) + 0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def reference(hf, audio, **kw):
    """transformers' tokens (end token and padding dropped) and token timestamps."""
    fe = transformers.WhisperFeatureExtractor(feature_size=hf.config.num_mel_bins)
    feats = fe(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    out = hf.generate(
        feats["input_features"], attention_mask=feats["attention_mask"],
        return_token_timestamps=True, **kw,
    )  # fmt: skip
    tokens = out["sequences"][0].tolist()
    while tokens and tokens[-1] == hf.generation_config.eos_token_id:
        tokens.pop()
    return tokens, out["token_timestamps"][0, : len(tokens)].tolist()


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("seconds", [0.3, 4.2, 31.0])
def test_features_equal_the_feature_extractor(n_mels, seconds):
    audio = audio_clip(seconds)
    fe = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    expected = fe(audio, sampling_rate=16000, return_tensors="np")["input_features"][0].T
    got = log_mel(audio, whisper_spec(n_mels))
    assert got.shape == expected.shape == (3000, n_mels)
    assert np.abs(got - expected).max() < 1e-4


def test_same_logits_and_the_models_alignment_heads(whisper):
    hf, ours, _, _ = whisper
    features = torch.randn(2, 80, 3000)
    tgt = torch.randint(0, hf.config.vocab_size, (2, 9))
    with torch.no_grad():
        expected = hf(input_features=features, decoder_input_ids=tgt).logits
        got = ours(features.transpose(1, 2), tgt)
    assert (got - expected).abs().max() < 1e-4
    assert ours.config.front_end == "whisper" and ours.config.max_positions == 64
    # the checkpoint's alignment heads land where xattn's own models keep theirs
    assert ours.generation_config.alignment_heads == ((1, 0), (1, 2))
    assert ours.generation_config.suppress_tokens == (5, 6)


CASES = [
    dict(),  # language detected from the first decoder step
    dict(language="fr"),
    dict(num_beams=3),
    dict(num_beams=3, language="en"),
    dict(task="translate", language="en"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_same_tokens_and_token_times_as_transformers(whisper, case):
    hf, ours, _, _ = whisper
    ended = 0
    for seed, seconds in [(0, 2.0), (1, 5.5), (2, 11.3)]:
        audio = audio_clip(seconds, seed)
        case = {"task": "transcribe", **case}
        tokens, times = reference(hf, audio, max_new_tokens=30, **case)
        got = ours.transcribe(audio, 16000, max_new_tokens=30, word_timestamps=True, **case)
        assert got.tokens == tokens
        assert np.abs(np.array(got.token_times) - np.array(times)).max() <= 0.02
        assert got.text == ours.tokenizer.decode(tokens)
        ended += len(tokens) < 30
    assert ended  # some outputs stopped at the end token, which .tokens leaves out


def test_default_length_and_suppressed_tokens(whisper):
    hf, ours, _, _ids = whisper
    audio = audio_clip(3.0, seed=4)
    tokens, _ = reference(hf, audio, task="transcribe", language="en")  # max_length rule
    got = ours.transcribe(audio, 16000, language="en")
    assert got.tokens == tokens and got.language == "en"
    assert not {5, 6} & set(got.tokens)  # suppress_tokens never come out
    assert got.tokens[:1] != [3]  # begin_suppress_tokens: not first


def test_english_only_model_prompt(tmp_path):
    hf, _ids = build(tmp_path, multilingual=False, seed=3)
    ours = xattn.EncoderDecoder.from_hf(tmp_path)
    audio = audio_clip(2.5, seed=5)
    tokens, times = reference(hf, audio, max_new_tokens=20)
    got = ours.transcribe(audio, 16000, max_new_tokens=20, word_timestamps=True)
    assert got.tokens == tokens and got.language is None
    assert np.abs(np.array(got.token_times) - np.array(times)).max() <= 0.02
    with pytest.raises(ValueError, match="English-only"):
        ours.transcribe(audio, 16000, language="fr")


def test_any_sample_rate_is_resampled(whisper):
    _, ours, _, _ = whisper
    from xattn.data.audio import resample

    audio = audio_clip(2.0, rate=44100)
    direct = ours.transcribe(resample(audio, 44100, 16000), 16000, max_new_tokens=10)
    assert ours.transcribe(audio, 44100, max_new_tokens=10).tokens == direct.tokens


def test_audio_over_30_seconds_goes_in_windows(whisper):
    _, ours, _, _ = whisper
    audio = audio_clip(65.0, seed=6)
    whole = ours.transcribe(audio, 16000, max_new_tokens=8, language="en", word_timestamps=True)
    pieces = [audio[: 30 * 16000], audio[30 * 16000 : 60 * 16000], audio[60 * 16000 :]]
    parts = [
        ours.transcribe(p, 16000, max_new_tokens=8, language="en", word_timestamps=True)
        for p in pieces
    ]
    assert whole.tokens == [t for p in parts for t in p.tokens]
    offsets = [t + 30.0 * i for i, p in enumerate(parts) for t in p.token_times]
    assert whole.token_times == pytest.approx(offsets)
    assert max(whole.token_times) > 30.0


def test_words_are_grouped_like_openai_whisper():
    from xattn.alignment import group_words

    pieces = [" Hello", ",", " wor", "ld", " (", "it", ")", " is", " \u00bf", "qu\xe9", "?", " ok"]
    ids = list(range(len(pieces)))
    words = group_words(ids, lambda idx: "".join(pieces[i] for i in idx))
    assert words == [
        (" Hello,", [0, 1]),
        (" world", [2, 3]),
        (" (it)", [4, 5, 6]),
        (" is", [7]),
        (" \u00bfqu\xe9?", [8, 9, 10]),
        (" ok", [11]),
    ]
    # a character split over two tokens stays one piece until it decodes whole
    raw = [b" caf", b"\xc3", b"\xa9", b" au"]
    decode = lambda idx: b"".join(raw[i] for i in idx).decode("utf-8", errors="replace")  # noqa: E731
    assert group_words([0, 1, 2, 3], decode) == [(" caf\xe9", [0, 1, 2]), (" au", [3])]


def test_word_timestamps_of_a_tokenizer_model(whisper):
    _, ours, _, _ = whisper
    got = ours.transcribe(audio_clip(3.0, seed=7), 16000, max_new_tokens=20, word_timestamps=True)
    assert isinstance(got, Transcription) and got.words
    text = ours.tokenizer.decode(got.tokens, skip_special_tokens=False)
    assert "".join(w for w, _, _ in got.words) == text  # every token in exactly one word
    starts = [s for _, s, _ in got.words]
    assert starts == sorted(starts) and all(s <= e for _, s, e in got.words)


def test_dtw_finds_the_cheapest_path():
    import itertools

    from transformers.models.whisper.generation_whisper import _dynamic_time_warping

    from xattn.alignment import dynamic_time_warping

    rng = np.random.default_rng(0)

    def paths(T, S):  # every monotonic path from (0, 0) to (T - 1, S - 1), brute force
        def extend(path):
            i, j = path[-1]
            if (i, j) == (T - 1, S - 1):
                yield path
                return
            for di, dj in ((1, 1), (1, 0), (0, 1)):
                if i + di < T and j + dj < S:
                    yield from extend([*path, (i + di, j + dj)])

        yield from extend([(0, 0)])

    for T, S in itertools.product(range(1, 5), range(1, 6)):
        cost = rng.normal(size=(T, S))
        rows, cols = dynamic_time_warping(cost)
        best = min(sum(cost[i, j] for i, j in p) for p in paths(T, S))
        assert cost[rows, cols].sum() == pytest.approx(best, abs=1e-5)
        assert (rows[0], cols[0], rows[-1], cols[-1]) == (0, 0, T - 1, S - 1)
        expected = _dynamic_time_warping(cost)  # the same path as transformers', ties too
        assert rows.tolist() == expected[0].tolist() and cols.tolist() == expected[1].tolist()


def test_hub_names_download_then_load(whisper, monkeypatch, tmp_path):
    import huggingface_hub

    _, _, folder, _ = whisper
    asked = []

    def fake_download(repo_id, allow_patterns):
        asked.append((repo_id, allow_patterns))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model = xattn.EncoderDecoder.from_pretrained("openai/whisper-tiny")
    assert model.config.front_end == "whisper" and asked[0][0] == "openai/whisper-tiny"
    assert "*.safetensors" in asked[0][1] and not any("bin" in p for p in asked[0][1])

    def offline(repo_id, allow_patterns):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ValueError, match="nobody/nothing: no such local folder, and the hub"):
        xattn.EncoderDecoder.from_pretrained("nobody/nothing")


def write_wav(path, audio, rate=16000):
    from scipy.io import wavfile

    wavfile.write(path, rate, (audio * 32767).astype(np.int16))


def test_cli_transcribe(whisper, tmp_path, capsys):
    from xattn.cli import main

    _, ours, folder, _ = whisper
    write_wav(tmp_path / "a.wav", audio_clip(2.0, seed=8))
    base = ["transcribe", "--model", str(folder), str(tmp_path / "a.wav"), "--max-new-tokens", "12"]
    # the WAV's 16-bit rounding may change a random model's tokens: compare with the file's
    from xattn.data.audio import read_wav

    samples, rate = read_wav(tmp_path / "a.wav")
    expected = ours.transcribe(samples, rate, max_new_tokens=12, word_timestamps=True)
    assert main(base) == 0
    assert capsys.readouterr().out == expected.text + "\n"
    assert main([*base, "--word-timestamps"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(expected.words)
    assert [float(x) for x in lines[0].split()[:2]] == pytest.approx(
        expected.words[0][1:], abs=0.01
    )
    assert main([*base, "--json", "--word-timestamps"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["tokens"] == expected.tokens and record["text"] == expected.text
    assert record["token_times"] == pytest.approx(expected.token_times)
    int8 = ours.quantize("int8").transcribe(samples, rate, max_new_tokens=12)
    assert main([*base, "--int8"]) == 0
    assert capsys.readouterr().out == int8.text + "\n"
    # a phone's voice memo (AAC in M4A, 44.1 kHz stereo) is read through FFmpeg
    from tests.audio import encode
    from xattn.data.audio import read_audio, resample

    encode(tmp_path / "memo.m4a", resample(samples, rate, 44100), 44100, "aac", channels=2)
    memo = ours.transcribe(*read_audio(tmp_path / "memo.m4a"), max_new_tokens=12)
    assert main([*base[:3], str(tmp_path / "memo.m4a"), "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out == memo.text + "\n"


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_bytes(b"not a wav file at all"), "not a readable audio file"),
        (lambda p: write_wav(p, np.zeros(0, np.float32)), "holds no samples"),
        (lambda p: None, "no such audio file"),
    ],
)
def test_cli_transcribe_bad_audio(whisper, tmp_path, capsys, make, message):
    from xattn.cli import main

    _, _, folder, _ = whisper
    make(tmp_path / "x.wav")
    assert main(["transcribe", "--model", str(folder), str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err
    assert message in err and "x.wav" in err and len(err.strip().splitlines()) == 1


def test_cli_transcribe_names_an_unreadable_file_and_goes_on(whisper, tmp_path, capsys):
    from xattn.cli import main

    _, _, folder, _ = whisper
    write_wav(tmp_path / "a.wav", audio_clip(1.0))
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all")
    files = [str(tmp_path / name) for name in ("a.wav", "bad.wav", "a.wav")]
    argv = ["transcribe", "--model", str(folder), "--max-new-tokens", "4"]
    assert main([*argv, files[0]]) == 0
    one = capsys.readouterr().out
    assert main([*argv, *files]) == 2
    out, err = capsys.readouterr()
    assert out == one * 2  # the files that could be read, in order
    (line,) = err.strip().splitlines()
    assert line.startswith(f"xattn transcribe: error: {files[1]}: not a readable audio file")


def test_cli_transcribe_needs_a_speech_model(tmp_path, capsys):
    from xattn.cli import main

    model = xattn.EncoderDecoder(xattn.ModelConfig.preset("tiny"))
    model.save(tmp_path / "m")
    write_wav(tmp_path / "a.wav", audio_clip(1.0))
    assert main(["transcribe", "--model", str(tmp_path / "m"), str(tmp_path / "a.wav")]) == 2
    assert "transcribe needs a speech model" in capsys.readouterr().err


def test_cli_transcribe_refuses_an_ensemble_of_whisper_models(whisper, tmp_path, capsys):
    """Whisper's prompt (language detection) is one model's: several --model folders of
    Whisper exit 2 with the reason; one folder given twice is still two members."""
    from xattn.cli import main

    _, _, folder, _ = whisper
    write_wav(tmp_path / "a.wav", audio_clip(1.0))
    argv = ["transcribe", "--model", str(folder), "--model", str(folder), str(tmp_path / "a.wav")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ensemble runs xattn's own speech models" in err and len(err.strip().splitlines()) == 1


def test_a_pickled_whisper_checkpoint_is_refused(whisper, tmp_path):
    _, _, folder, _ = whisper
    shutil.copytree(folder, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(ValueError, match="only a pickled pytorch_model.bin"):
        xattn.EncoderDecoder.from_hf(tmp_path / "m")
