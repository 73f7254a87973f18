"""Every task through the one train and demo driver: data, front end, training, evaluation,
attention maps, alignment hit rates, pictures, and the command line (demo, train,
attention)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.browser import Page, save_screenshot
from xattn import alignment
from xattn.alignment import HitRates, attention_maps, head_hit_rates, hit_rate
from xattn.cli import main
from xattn.data.speech import Utterance
from xattn.model import EncoderDecoder, Ensemble, ModelConfig
from xattn.tasks import TASKS, draw_example, train_task
from xattn.tasks.run import example_attention
from xattn.training import TrainConfig, evaluate
from xattn.training.batching import pad_sources

TINY = TrainConfig(
    steps=3,
    batch_size=8,
    warmup_steps=1,
    eval_every=3,
    eval_size=4,
    checkpoint_every=3,
    max_new_tokens=5,
)
SIZES = {"train": 24, "valid": 4, "test": 4}
SMALL = {"d_model": 32, "ffn_dim": 64}


def expected_hit_rate(maps, gold) -> float:
    """The hit rate counted by hand: argmax of each gold-linked row, inside its gold."""
    hits = total = 0
    for m, links in zip(maps, gold, strict=True):
        for row, link in zip(m, links or [], strict=False):
            if link:
                total, hits = total + 1, hits + (int(row.argmax()) in link)
    return hits / max(1, total)


@pytest.fixture(scope="module", params=list(TASKS))
def tiny_run(request, tmp_path_factory):
    name = request.param
    task_cls = TASKS[name]
    splits = task_cls.generate(**SIZES, seed=0)
    run = tmp_path_factory.mktemp(name) / "run"
    model, task, result = train_task(
        task_cls, splits, run, TINY, progress=False, model_overrides=SMALL
    )
    return name, splits, run, model, task, result


def test_tiny_run_trains_and_saves(tiny_run):
    name, splits, run, model, task, result = tiny_run
    keys = {"bleu", "chrf"} if name == "translate" else {"wer", "cer"}
    assert {"loss", "exact"} | keys <= set(result)
    assert (run / "model" / "model.safetensors").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    hyps: list[str] = []
    scores = evaluate(model, task, splits["test"], TINY, hypotheses=hyps)
    refs = [task.reference(e) for e in splits["test"]]
    assert len(hyps) == len(refs)
    assert scores["exact"] == sum(map(str.__eq__, hyps, refs)) / len(refs)


def test_maps_gold_and_hit_rates(tiny_run, monkeypatch):
    name, splits, _, model, task, _ = tiny_run
    test = splits["test"]
    example = test[0]
    words, maps = example_attention(model, task, example)
    assert words[-1] == "</s>" and len(words) == len(task.reference(example).split()) + 1
    assert maps.shape[:3] == (model.config.decoder_layers, model.config.num_heads, len(words))
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:3]))
    gold = task.gold(example)
    length = maps.shape[-1]
    assert len(gold) == len(words) - 1 and all(0 <= k < length for g in gold for k in g)
    if name != "translate":  # a translated word may have no source word ("a" before a person)
        assert all(gold)
    # the hit rate of every head's mean, as counted by hand
    rates = HitRates(model, task, test)
    every = [example_attention(model, task, e)[1].mean((0, 1)) for e in test]
    golds = [task.gold(e) for e in test]
    assert rates(range(len(test))) == pytest.approx(expected_hit_rate(every, golds))
    # the demo's overall and per-kind rates: overlapping subsets, each map computed once
    one = rates([0, 2])
    assert one == pytest.approx(expected_hit_rate([every[0], every[2]], [golds[0], golds[2]]))
    looked = []
    real = alignment.attention_maps
    monkeypatch.setattr(
        alignment, "attention_maps", lambda m, t, ex: looked.extend(ex) or real(m, t, ex)
    )
    assert rates([1, 3]) == pytest.approx(expected_hit_rate(every[1::2], golds[1::2]))
    assert looked == []  # every map was already there
    HitRates(model, task, test)([1, 3, 1])
    assert list(map(id, looked)) == [id(test[1]), id(test[3])]  # each example once
    monkeypatch.undo()
    # every head on its own, from the same maps
    all_maps, all_gold = rates.maps(range(len(test)))
    assert all_gold == golds
    table = head_hit_rates(all_maps, all_gold)
    assert table.shape == (model.config.decoder_layers, model.config.num_heads)
    last = [m[-1, -1] for m in all_maps]  # last layer, last head
    assert table[-1, -1] == pytest.approx(expected_hit_rate(last, golds))
    assert table[-1, -1] == hit_rate(last, golds)


def test_batched_maps_equal_the_decoders_own_attention(tiny_run):
    name, splits, _, model, task, _ = tiny_run
    test = splits["test"]
    batched = attention_maps(model, task, test, batch_size=3)
    for e, m in zip(test, batched, strict=True):
        torch.testing.assert_close(m, attention_maps(model, task, [e])[0], atol=1e-5, rtol=0)
        ids, prompt = task.target_ids(e)
        src, mask = pad_sources([task.source(e)], task.tokenizer.pad_token_id)
        memory, memory_mask = model.encode(src, mask, return_mask=True)
        _, layers = model.decode(
            torch.tensor([ids[:-1]]), memory, src_mask=memory_mask, return_weights=True
        )
        direct = torch.stack([a[0, :, prompt - 1 : len(ids) - 1] for a in layers])
        torch.testing.assert_close(m, direct, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="1 texts for 4 examples"):
        attention_maps(model, task, test, texts=["one"])
    if name in ("speech", "translate"):  # sources of different lengths: padding exercised
        assert len({m.shape[-1] for m in batched}) > 1


def test_pictures_draw_the_alignment_heads_mean(tiny_run, tmp_path):
    _, splits, _, model, task, _ = tiny_run
    example = splits["test"][0]
    drawn = draw_example(model, task, example, tmp_path, "pic")
    assert drawn["picture"].stat().st_size > 1000 and drawn["grid"].is_file()
    # a hypothesis decoded elsewhere (the demo's test pass) is drawn as given
    reference = task.reference(example)
    given = draw_example(model, task, example, tmp_path, "given", reference)
    assert given["hypothesis"] == reference
    ids, prompt = task.target_ids(example)
    assert given["tokens"][1] == [*task.tokenizer.target_tokens(ids[prompt:]), "</s>"]
    assert len(given["tokens"][1]) == len(reference.split()) + 1
    # the picture is the mean of every head, or of the model's alignment heads once it has them
    _, maps = example_attention(model, task, example, reference)  # (L, H, T, S')
    torch.testing.assert_close(given["tokens"][2], maps.mean((0, 1)))
    saved = model.generation_config
    model.set_alignment_heads([(0, 1), (1, 0)])
    aligned = draw_example(model, task, example, tmp_path, "aligned", reference)
    torch.testing.assert_close(aligned["tokens"][2], (maps[0, 1] + maps[1, 0]) / 2)
    model.generation_config = saved
    n, h = model.config.decoder_layers, model.config.num_heads
    with pytest.raises(ValueError, match=rf"heads \[\[{n}, 0\]\]: .* {n} layers x {h} heads"):
        model.set_alignment_heads([(n, 0)])  # one layer too far


def test_gold_positions_of_captions_and_speech():
    task_cls = TASKS["caption"]
    for strip in task_cls.generate(20, 0, 0)["train"]:
        gold = task_cls(None).gold(strip)
        for (x0, x1), patches in zip(strip.spans, gold, strict=True):
            # patch k = column k // 3, row k % 3, centered on pixel column 4 * (k // 3)
            assert all(x0 <= 4 * (k // 3) < x1 for k in patches)
            assert len(patches) == 6  # 2 columns x 3 rows inside an 8-pixel glyph
    # speech: position k covers frames [4k, 4k + 4); a word owns the positions starting in it
    said = Utterance(np.zeros((100, 40), np.float32), ("one", "two"), ((4, 20), (30, 41)), "v")
    assert TASKS["speech"](None).gold(said) == [[1, 2, 3, 4], [8, 9, 10]]


def test_qa_answers_write_the_hop_out():
    task_cls = TASKS["qa"]
    stories = task_cls.generate(300, 0, 0)["train"]
    task, place_only = task_cls(None), type("PlaceOnly", (task_cls,), {"name_holder": False})(None)
    objects = [s for s in stories if s.kind == "object"]
    assert objects and len(objects) < len(stories)
    for story in stories:
        words = task.reference(story).split()
        gold = task.gold(story)
        # one gold sentence per answer word, and that sentence names the word
        assert len(gold) == len(words) and all(len(g) == 1 for g in gold)
        assert all(w in story.sentences[g[0]].split() for w, g in zip(words, gold, strict=True))
        assert words[-1] == story.answer == place_only.reference(story)
        assert place_only.gold(story) == [list(story.support)]
    assert all(len(task.reference(s).split()) == 2 for s in objects)


def test_the_speech_demo_also_tests_the_people_from_outside_fsdd():
    from xattn.data.speech import OUTSIDE_VOICES

    speech = TASKS["speech"]
    sizes = {**speech.demo_sizes, "train": 0, "valid": 0, "test": 3, "outside": 2}
    test = speech.generate(**sizes, seed=0)["test"]  # the demo's sizes, made small
    plain = speech.generate(**{**sizes, "outside": 0}, seed=0)["test"]
    assert [u.text for u in test[:3]] == [u.text for u in plain]  # the test split as it was
    assert [u.voice for u in test[3:]] == [f"outside:{v}" for v in OUTSIDE_VOICES for _ in "ab"]
    assert speech.demo_sizes["outside"] > 0  # scored and printed as a kind of their own


@pytest.mark.parametrize("name", ["caption", "qa", "speech"])
def test_cli_demo_train_and_attention(tmp_path, capsys, browser, name):
    run = tmp_path / "demo"
    flags = f"--task {name} --steps 2 --train-size 16 --test-size 3 --no-progress".split()
    code = main(["demo", *flags, "--run-dir", str(run)])
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == name and "alignment_hit_rate" in summary
    chosen, per_head = summary["alignment_heads"], summary["alignment_hit_rate_per_head"]
    assert chosen and all(0 <= a < len(per_head) and 0 <= b < len(per_head[a]) for a, b in chosen)
    if len(chosen) == 1:  # chosen on the validation split, reported on test
        assert summary["alignment_heads_hit_rate"] == per_head[chosen[0][0]][chosen[0][1]]
    trained = name == "speech"  # its recipe trains the last layer's first head to align
    assert summary["alignment_heads_trained"] is trained
    if trained:
        assert chosen == [[len(per_head) - 1, 0]]
    assert (run / "attention" / "index.html").is_file()
    assert (run / "attention" / "example-01.png").is_file()
    out = capsys.readouterr().out
    assert "Cross-attention peak on the input that produced the word" in out
    assert f"{summary['alignment_heads_hit_rate']:.1%} of test words" in out
    assert ("alignment heads trained to align" in out) is trained
    # kept with the model as Whisper keeps them (generation_config.json, counting from 0)
    saved = json.loads((run / "model" / "generation_config.json").read_text())
    assert saved["alignment_heads"] == chosen  # the same pairs, counting from 0
    names = " + ".join(f"layer {layer + 1} head {head + 1}" for layer, head in chosen)
    page = (run / "attention" / "index.html").read_text()
    shown = Page(browser, run / "attention" / "index.html")  # the demo's page, offline
    shown.page.hover(".xae-tok[data-index='0']")
    assert shown.page.locator(".xae-source .xae-src").count() > 0
    assert shown.requests == [] and shown.errors == []
    save_screenshot(shown, f"explorer-{name}")
    shown.close()
    assert f"the mean of the alignment heads {names}" in page  # the page says what it shows
    if name == "speech":  # the explorer page plays the audio and shows the word times
        import re

        raw = re.search(r'class="xae-data">(.*?)</script>', page, re.S).group(1)
        source = json.loads(raw.replace("<\\/", "</"))["examples"][0]
        audio, target = source["source"], source["target"]
        assert audio["kind"] == "audio" and audio["wav"].startswith("data:audio/wav;base64,")
        assert len(audio["words"]) == len(target) - 1  # every word but </s> gets its time
    if name == "speech":  # word times from the alignment heads, against the gold spans
        timing = summary["word_timing"]
        assert set(timing) >= {"start_error", "end_error", "f1_50ms", "f1_100ms", "iou"}
        assert f"start error {1000 * timing['start_error']:.0f} ms" in out
        settings = summary["word_timing_settings"]  # chosen on validation, kept with the model
        assert saved["pause_log_weight"] == settings["pause_log_weight"]
        assert saved["median_filter_width"] == settings["median_filter_width"]
        assert f"pause level {settings['pause_log_weight']} (chosen on validation)" in out
        for kind in ("real", "synthetic"):
            if f"exact_{kind}" in summary:
                assert f"  {kind} examples (" in out and f"word_timing_{kind}" in summary
    if name == "qa":  # per kind of question: exact match and hit rate, printed as recorded
        kinds = [k.removeprefix("exact_") for k in summary if k.startswith("exact_")]
        assert kinds
        for k in kinds:
            line = next(x for x in out.splitlines() if x.startswith(f"  {k} examples ("))
            assert f"exact {summary[f'exact_{k}']:.1%}, WER {summary[f'wer_{k}']:.1%}" in line
            assert f"supporting input {summary[f'alignment_hit_rate_{k}']:.1%}" in line
            assert line.endswith(f"heads {summary[f'alignment_heads_hit_rate_{k}']:.1%})")
    at = ["attention", "--model", str(run / "model"), "--task", name, "--example", "1"]
    code = main([*at, "--out", str(tmp_path / "att")])
    assert code == 0
    assert (tmp_path / "att" / "attention.png").is_file()
    out = capsys.readouterr().out
    assert "where each output word's attention peaks" in out
    names = " + ".join(f"layer {layer + 1} head {head + 1}" for layer, head in chosen)
    assert f"(the mean attention of the alignment heads {names})" in out
    code = main(["attention", "--model", str(run / "model"), "--task", "translate"])
    assert code == 2
    assert f"is a {name} model, not translate" in capsys.readouterr().err
    flags = f"--task {name} --steps 2 --train-size 16 --no-progress --eval-every 2".split()
    code = main(["train", *flags, "--out", str(tmp_path / "train")])
    assert code == 0
    assert (tmp_path / "train" / "model" / "config.json").is_file()
    kept = EncoderDecoder.load(tmp_path / "train" / "model").generation_config.alignment_heads
    names = " + ".join(f"layer {a + 1} head {b + 1}" for a, b in kept)
    out = capsys.readouterr().out
    assert f"(kept in the model's generation_config.json): {names}" in out
    assert ("alignment heads trained to align" in out) is trained  # xattn train as the demo
    if trained:
        assert [list(h) for h in kept] == chosen


def test_cli_task_errors(tmp_path, capsys):
    assert main(["train", "--task", "qa", "--data", "x.tsv", "--out", str(tmp_path / "o")]) == 2
    assert "trains on generated data" in capsys.readouterr().err
    assert main(["demo", "--task", "caption", "--test-size", "0"]) == 2
    assert "--test-size=0" in capsys.readouterr().err
    assert main(["train", "--task", "qa", "--train-size", "0", "--out", str(tmp_path / "z")]) == 2
    assert "--train-size=0; expected a positive number" in capsys.readouterr().err


def test_cli_task_training_resumes(tmp_path, capsys):
    out = tmp_path / "qa"
    flags = ["--task", "qa", "--train-size", "16", "--no-progress", "--out", str(out)]
    assert main(["train", *flags, "--steps", "2", "--checkpoint-every", "2"]) == 0
    assert main(["train", *flags, "--steps", "4", "--checkpoint-every", "2"]) == 2
    assert "exists and is not empty; pass --resume" in capsys.readouterr().err
    assert main(["train", *flags, "--steps", "4", "--checkpoint-every", "2", "--resume"]) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]  # continued
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-0000002",
        "step-0000004",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    fresh = ["train", "--task", "qa", "--out", str(empty), "--resume", "--steps", "2"]
    assert main(fresh) == 2
    assert "--resume given but no checkpoint found" in capsys.readouterr().err


def _tone(seconds, level):
    """A word-like tone: 440 Hz, rising from and falling to silence over 30 ms."""
    from xattn.data.speech import SAMPLE_RATE

    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.03)
    return (np.sin(2 * np.pi * 440 * t) * envelope * level).astype(np.float32)


def test_a_trimmed_quiet_word_gets_the_level_and_edge_silence_of_training():
    from xattn.data.speech import EDGE_SILENCE, NOISE, SAMPLE_RATE, WORD_PEAK
    from xattn.transcription import _as_trained

    clip = _tone(0.1, 0.05)  # a quiet word, trimmed: 10 ms of near silence at each end
    out, edits = _as_trained(clip, SAMPLE_RATE)
    pad = round(sum(EDGE_SILENCE) / 2 * SAMPLE_RATE)
    added = np.round(-edits[:, 1] * SAMPLE_RATE).astype(int)  # both ends: silence added
    assert len(edits) == 2 and (added > pad - EDGE_SILENCE[0] * SAMPLE_RATE).all()
    assert (added <= pad).all() and len(out) == len(clip) + added.sum()
    np.testing.assert_allclose(edits[:, 0], [0, (added[0] + len(clip)) / SAMPLE_RATE])
    scale = sum(WORD_PEAK) / 2 / np.abs(clip).max()
    word = out[added[0] : added[0] + len(clip)]
    np.testing.assert_allclose(word, clip * scale, atol=1e-6)  # levelled, nothing else
    noise = np.concatenate([out[: added[0]], out[-added[1] :]])  # silence as training has it
    frames = word[: len(word) // 80 * 80].reshape(-1, 80)  # at the level of its quietest 10 ms
    quietest = max(np.sqrt((frames**2).mean(axis=1)).min(), NOISE[0])
    np.testing.assert_allclose(noise.std(), quietest, rtol=0.1)
    silent, edits = _as_trained(np.zeros(100, np.float32), SAMPLE_RATE)  # no division by zero
    assert not silent.any() and len(edits) == 0


def test_silence_longer_than_training_is_cut_and_times_go_back_to_the_recording():
    from xattn.data.speech import EDGE_SILENCE, NOISE, SAMPLE_RATE, WORD_PEAK
    from xattn.transcription import BESIDE, _as_trained, _on_recording_clock

    rng = np.random.default_rng(0)
    quiet = lambda s: rng.normal(0, 0.002, round(s * SAMPLE_RATE)).astype(np.float32)  # noqa: E731
    words = [_tone(0.3, 0.5), _tone(0.2, 0.3)]
    recording = np.concatenate([quiet(0.8), words[0], quiet(1.0), words[1], quiet(0.2)])
    out, edits = _as_trained(recording, SAMPLE_RATE)
    edge = EDGE_SILENCE[1]  # the 0.8 s lead cut to its top, the 0.2 s tail kept (in range)
    expected = edge + 0.3 + 2 * BESIDE + 0.2 + 0.2
    assert abs(len(out) / SAMPLE_RATE - expected) < 0.02
    np.testing.assert_allclose(edits[:, 1], [0.8 - edge, 1.0 - 2 * BESIDE], atol=0.02)
    scale = sum(WORD_PEAK) / 2 / 0.5
    at = round(edge * SAMPLE_RATE)  # the first word starts here on the new clock, unchanged
    np.testing.assert_allclose(out[at : at + 2400], words[0] * scale, atol=1e-6)
    second = edge + 0.3 + 2 * BESIDE  # the second word's start, new clock and recording's
    starts = _on_recording_clock([edge, second], edits)
    assert abs(starts[0] - 0.8) < 0.011 and abs(starts[1] - 2.1) < 0.011
    assert np.abs(out).max() <= sum(WORD_PEAK) / 2 + 5 * NOISE[0]


def test_a_recording_within_training_range_is_only_levelled():
    from xattn.data.speech import SAMPLE_RATE, WORD_PEAK
    from xattn.transcription import _as_trained

    rng = np.random.default_rng(1)
    quiet = lambda s: rng.normal(0, 0.003, round(s * SAMPLE_RATE)).astype(np.float32)  # noqa: E731
    recording = np.concatenate(
        [quiet(0.1), _tone(0.3, 0.4), quiet(0.2), _tone(0.3, 0.2), quiet(0.15)]
    )
    out, edits = _as_trained(recording, SAMPLE_RATE)
    assert len(edits) == 0
    np.testing.assert_allclose(out, recording * (sum(WORD_PEAK) / 2 / np.abs(recording).max()))


def test_a_quiet_onset_keeps_silence_before_it_when_a_long_lead_is_cut():
    """The /s/ of "six" can lie under the level rules (here 1-2 dB over the noise), so the
    silence before the first word seems longer than it is: it is cut to the top of
    training's range, not the middle, which leaves an onset of up to 0.25 s whole with
    silence still before it; a long pause is cut to the top of training's pauses."""
    from xattn.data.speech import EDGE_SILENCE, PAUSE, SAMPLE_RATE, WORD_PEAK
    from xattn.transcription import _as_trained

    rng = np.random.default_rng(6)
    noise = lambda s, level=0.01: rng.normal(0, level, round(s * SAMPLE_RATE))  # noqa: E731
    gap = lambda s: np.zeros(round(s * SAMPLE_RATE))  # noqa: E731
    onset = noise(0.15, 0.006)  # with the background: 1.3 dB over it
    words = [gap(0.5), onset, _tone(0.25, 0.6), gap(0.6), _tone(0.25, 0.5), gap(0.2)]
    recording = np.concatenate(words)
    recording = recording + noise(len(recording) / SAMPLE_RATE)
    out, edits = _as_trained(recording.astype(np.float32), SAMPLE_RATE)
    np.testing.assert_allclose(edits[0], [0.0, 0.65 - EDGE_SILENCE[1]], atol=0.011)
    assert 0.5 - edits[0, 1] >= EDGE_SILENCE[0]  # silence before the onset, as in training
    at, scale = (
        round((0.5 - edits[0, 1]) * SAMPLE_RATE),
        sum(WORD_PEAK) / 2 / np.abs(recording).max(),
    )
    np.testing.assert_allclose(out[at : at + 1200], recording[4000:5200] * scale, atol=1e-6)
    np.testing.assert_allclose(edits[1, 1], 0.6 - PAUSE[1], atol=0.011)  # to training's longest


def test_a_dc_offset_is_removed_and_a_steady_sound_is_all_sound():
    """A microphone's DC offset changes nothing; a recording with no quieter part (a
    steady tone, only noise) is heard whole, with training's edge silence around it."""
    from xattn.data.speech import EDGE_SILENCE, SAMPLE_RATE
    from xattn.transcription import _as_trained

    rng = np.random.default_rng(4)
    quiet = lambda s: rng.normal(0, 0.003, round(s * SAMPLE_RATE)).astype(np.float32)  # noqa: E731
    recording = np.concatenate([quiet(0.1), _tone(0.3, 0.4), quiet(0.15)])
    expected, expected_edits = _as_trained(recording, SAMPLE_RATE)
    out, edits = _as_trained(recording + 0.3, SAMPLE_RATE)
    np.testing.assert_allclose(edits, expected_edits)
    np.testing.assert_allclose(out, expected, atol=1e-4)  # less its own tiny mean too
    edge = sum(EDGE_SILENCE) / 2
    for steady in (0.2 * np.sin(np.arange(4000) / 3), quiet(0.5)):  # 0.5 s each
        out, edits = _as_trained(steady.astype(np.float32), SAMPLE_RATE)
        np.testing.assert_allclose(edits, [[0, -edge], [edge + 0.5, -edge]])
    assert not _as_trained(np.full(800, 0.5, np.float32), SAMPLE_RATE)[0].any()  # only DC


def test_a_noisy_recording_keeps_the_silence_it_has():
    """Noise 17 dB under the words is loud by the level rules alone; as loud as the
    quietest 10 ms it is background, so the 0.2 s before the word is silence enough."""
    from xattn.data.speech import SAMPLE_RATE
    from xattn.transcription import _as_trained

    word = _tone(0.4, 0.3)
    recording = np.concatenate([np.zeros(1600, np.float32), word, np.zeros(1600, np.float32)])
    recording += np.random.default_rng(2).normal(0, 0.03, recording.shape).astype(np.float32)
    out, edits = _as_trained(recording, SAMPLE_RATE)
    assert len(edits) == 0 and len(out) == len(recording)


def test_digital_silence_at_the_edges_is_heard_as_the_recordings_background():
    """A codec's priming and padding (AAC: tens of ms of zeros) before and after a noisy
    recording: filled with its background, never taken for the silence it breaks, and the
    rest only levelled."""
    from xattn.data.speech import SAMPLE_RATE, WORD_PEAK
    from xattn.transcription import _as_trained

    word = _tone(0.4, 0.3)
    recording = np.concatenate([np.zeros(1600, np.float32), word, np.zeros(1600, np.float32)])
    recording += np.random.default_rng(2).normal(0, 0.03, recording.shape).astype(np.float32)
    primed = np.concatenate([np.zeros(184, np.float32), recording, np.zeros(360, np.float32)])
    out, edits = _as_trained(primed, SAMPLE_RATE)
    assert len(edits) == 0 and len(out) == len(primed)  # 0.22 and 0.25 s of edge: in range
    scale = sum(WORD_PEAK) / 2 / np.abs(recording).max()
    np.testing.assert_allclose(out[184:-360], recording * scale, atol=1e-6)
    frames = recording[: len(recording) // 80 * 80].reshape(-1, 80)  # the quietest 10 ms
    quietest = np.sqrt((frames**2).mean(axis=1)).min() * scale
    for filled in (out[:184], out[-360:]):
        assert filled.std() == pytest.approx(quietest, rel=0.15)
    primed[184:-360] += 0.2  # a microphone's DC offset, not the codec's zeros
    offset, offset_edits = _as_trained(primed, SAMPLE_RATE)
    assert len(offset_edits) == 0
    np.testing.assert_allclose(offset[184:-360], out[184:-360], atol=2e-3)  # less its mean


def test_a_tap_on_the_record_button_is_heard_as_background():
    """A click 0.25 s before the first word and after the last (louder than the words) is
    made background; a burst 50 ms after a word (a stop's release) stays."""
    from xattn.data.speech import SAMPLE_RATE, WORD_PEAK
    from xattn.transcription import _as_trained

    rng = np.random.default_rng(3)
    quiet = lambda s: rng.normal(0, 0.002, round(s * SAMPLE_RATE)).astype(np.float32)  # noqa: E731
    click = (rng.normal(0, 1, 32) * np.exp(-np.arange(32) / 8)).astype(np.float32)
    words = [_tone(0.3, 0.4), _tone(0.25, 0.3)]
    recording = np.concatenate([quiet(0.4), words[0], quiet(0.15), words[1], quiet(0.4)])
    expected, expected_edits = _as_trained(recording, SAMPLE_RATE)
    tapped = recording.copy()
    for at in (0.15, len(recording) / SAMPLE_RATE - 0.15):
        start = round(at * SAMPLE_RATE)
        tapped[start : start + 32] += click
    out, edits = _as_trained(tapped, SAMPLE_RATE)
    np.testing.assert_allclose(edits, expected_edits)  # the words' edges, as without clicks
    lead = round((0.4 - expected_edits[0, 1]) * SAMPLE_RATE)  # where the first word starts
    span = slice(lead, lead + round(0.7 * SAMPLE_RATE))  # the words and the pause between
    np.testing.assert_allclose(out[span], expected[span], atol=1e-6)  # the same level
    assert np.abs(out[:lead]).max() < 5 * 0.002 * (sum(WORD_PEAK) / 2 / 0.4)  # no click
    released = recording.copy()  # a burst 50 ms after the second word: part of it
    end = round((0.4 + 0.3 + 0.15 + 0.25 + 0.05) * SAMPLE_RATE)
    released[end : end + 32] += 0.2 * click
    out, _ = _as_trained(released, SAMPLE_RATE)
    burst = slice(span.stop + round(0.04 * SAMPLE_RATE), span.stop + round(0.06 * SAMPLE_RATE))
    assert np.abs(out[burst]).max() > 10 * np.abs(expected[burst]).max()


def _speech_model_stand_in():
    """What transcribe reads of an xattn speech model, when _window is replaced."""
    from types import SimpleNamespace

    from xattn.data.speech import N_MELS

    config = SimpleNamespace(front_end="audio", source_features=N_MELS, max_positions=256)
    return SimpleNamespace(config=config, tokenizer=None, eval=lambda: None)


def test_transcribe_hears_the_recording_as_trained_and_times_it_on_its_own_clock(monkeypatch):
    """transcribe hands an xattn speech model the recording brought within its training
    (level, edge silence), and reports the model's times on the recording's clock."""

    from xattn import transcription
    from xattn.data.speech import EDGE_SILENCE, NOISE, SAMPLE_RATE, WORD_PEAK

    clip = _tone(0.5, 0.02)  # a quiet word, trimmed
    _, edits = transcription._as_trained(clip, SAMPLE_RATE)
    lead = -edits[0, 1]  # the silence added before it
    assert lead > sum(EDGE_SILENCE) / 2 - EDGE_SILENCE[0]
    heard = []

    def window(model, samples, spec, **kwargs):  # one token at 0.1 s and 0.3 s of the input
        heard.append(samples)
        return [7, 8], [lead + 0.1, lead + 0.3], [lead + 0.2, lead + 9.0], None

    monkeypatch.setattr(transcription, "_window", window)
    model = _speech_model_stand_in()
    result = transcription.transcribe(model, clip, SAMPLE_RATE, word_timestamps=True)
    (samples,) = heard
    added = round(lead * SAMPLE_RATE)
    assert len(samples) == len(clip) - round(edits[:, 1].sum() * SAMPLE_RATE)
    assert samples[:added].std() < samples[added:-added].std() / 2  # quieter than the word
    assert samples[:added].std() >= NOISE[0] / 2  # and noise, not digital silence
    np.testing.assert_allclose(np.abs(samples).max(), sum(WORD_PEAK) / 2, rtol=0.01)
    assert result.tokens == [7, 8]
    np.testing.assert_allclose(result.token_times, [0.1, 0.3])  # on the recording's clock


def test_a_phone_number_is_transcribed_in_parts_of_at_most_four_words(monkeypatch):
    """Ten words apart by pauses are cut in the middle of pauses into parts of at most
    MAX_WORDS, each transcribed on its own, times on the recording's clock; a word with a
    short gap inside (a stop's closure) is one word; four words are one part."""

    from xattn import transcription
    from xattn.data.speech import MAX_WORDS, SAMPLE_RATE

    rng = np.random.default_rng(5)
    quiet = lambda s: rng.normal(0, 0.002, round(s * SAMPLE_RATE)).astype(np.float32)  # noqa: E731
    word = np.concatenate([_tone(0.2, 0.4), quiet(0.08), _tone(0.1, 0.3)])  # 0.38 s
    pauses = [0.2, 0.25, 0.2, 0.2, 0.28, 0.2, 0.2, 0.25, 0.2]
    number = np.concatenate([quiet(0.2), *[p for g in pauses for p in (word, quiet(g))]])
    number = np.concatenate([number, word, quiet(0.2)])
    parts = transcription._parts(number, SAMPLE_RATE)
    starts = 0.2 + np.arange(10) * 0.38 + np.concatenate([[0], np.cumsum(pauses)])
    cuts = [(starts[i] - pauses[i - 1] / 2) * SAMPLE_RATE for i in (2, 5, 8)]  # longest
    assert [p[0] for p in parts[1:]] == pytest.approx(cuts, abs=SAMPLE_RATE // 100)
    assert parts[0][0] == 0 and parts[-1][1] == len(number)
    assert all(parts[i][1] == parts[i + 1][0] for i in range(len(parts) - 1))
    four = number[: round((starts[4] - 0.1) * SAMPLE_RATE)]
    assert transcription._parts(four, SAMPLE_RATE) == [(0, len(four))]
    heard = []

    def window(model, samples, spec, **kwargs):  # one token a word heard, at its start
        heard.append(len(samples) / SAMPLE_RATE)
        found = transcription._parts(samples, SAMPLE_RATE)  # as one part: its words
        assert len(found) == 1
        return [7], [0.2], [0.3], None

    monkeypatch.setattr(transcription, "_window", window)
    model = _speech_model_stand_in()
    result = transcription.transcribe(model, number, SAMPLE_RATE, word_timestamps=True)
    assert len(heard) == 4 and max(heard) < 2.5  # 2 + 3 + 3 + 2 words
    expected = [(0.2 + p[0] / SAMPLE_RATE) for p in parts]
    np.testing.assert_allclose(result.token_times, expected, atol=0.02)
    assert MAX_WORDS == 4


def test_transcribe_with_an_xattn_speech_model(tmp_path, capsys):
    """A speech model trained here reads WAV files at any rate, and its words get times."""
    from scipy.io import wavfile

    from xattn.data.audio import read_wav, resample
    from xattn.data.speech import SAMPLE_RATE, make_utterances

    run = tmp_path / "speech"
    flags = [
        "--task",
        "speech",
        "--steps",
        "2",
        "--train-size",
        "16",
        "--no-progress",
        "--eval-every",
        "2",
    ]
    assert main(["train", *flags, "--out", str(run)]) == 0
    capsys.readouterr()  # what training printed
    model = EncoderDecoder.load(run / "model")
    utterance = make_utterances(0, 0, 1, seed=0)["test"][0]
    wide = resample(utterance.audio, SAMPLE_RATE, 44100)  # a phone's rate
    wavfile.write(tmp_path / "clip.wav", 44100, (wide * 32767).astype("int16"))
    samples, rate = read_wav(tmp_path / "clip.wav")
    expected = model.transcribe(samples, rate, word_timestamps=True)
    assert expected.words is not None and len(expected.words) == len(expected.tokens)
    assert all(0 <= s <= e <= len(samples) / rate for _, s, e in expected.words)
    # the level is made the training level: 1/16 of the loudness reads the same
    assert model.transcribe(samples / 16, rate, word_timestamps=True) == expected
    assert main(["transcribe", "--model", str(run / "model"), str(tmp_path / "clip.wav")]) == 0
    assert capsys.readouterr().out == expected.text + "\n"
    # an ensemble of one is the model; of two copies, the same words at the same times (both
    # members' alignment heads read together)
    assert Ensemble([model]).transcribe(samples, rate, word_timestamps=True) == expected
    both = Ensemble([model, EncoderDecoder.load(run / "model")])
    twice = both.transcribe(samples, rate, word_timestamps=True)
    assert twice.tokens == expected.tokens
    np.testing.assert_allclose(twice.token_times, expected.token_times, atol=1e-6)
    folder = str(run / "model")
    argv = ["transcribe", "--model", folder, "--model", folder, str(tmp_path / "clip.wav")]
    assert main(argv) == 0
    assert capsys.readouterr().out == expected.text + "\n"
    other = EncoderDecoder(ModelConfig.preset("tiny"))  # reads tokens, not speech
    other.save(tmp_path / "text")
    assert main([*argv[:3], "--model", str(tmp_path / "text"), argv[-1]]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'text'} has config.front_end = None but {folder} has 'audio'" in err
    argv = ["transcribe", "--model", str(run / "model"), str(tmp_path / "clip.wav"), "--json"]
    assert main([*argv, "--word-timestamps"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["tokens"] == expected.tokens
    assert [w["word"] for w in record["words"]] == [w for w, _, _ in expected.words]
    # scripts/transcribe_eval.py measures such a model on the voices from outside FSDD
    spec = importlib.util.spec_from_file_location(
        "transcribe_eval", Path(__file__).parents[2] / "scripts" / "transcribe_eval.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = [folder, folder, "--speakers", "--utterances", "2", "--voices", "allison"]  # ensemble
    argv += ["arundel", "--files", "george", "--file-utterances", "2", "--interference", "george"]
    assert script.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{folder} + {folder}: one transcribe call")
    voices = [line.split(",")[0].strip() for line in lines[1:7]]
    assert voices == ["allison", "arundel", "all 2 voices"] * 2  # as recorded, then trimmed
    assert all("exact" in line and "within 100 ms" in line for line in lines[1:7])
    assert "2 utterances" in lines[1] and "4 utterances" in lines[3]  # pooled over voices
    files = [line for line in lines[7:] if "as files" in line]
    hum = [line for line in lines[7:] if "with interference" in line]
    assert 1 <= len(files) <= 2 and len(files) == len(hum) and len(lines) == 7 + 2 * len(files)
    assert all("test utterances: as made" in line and "M4A" in line for line in files)
    assert all("clean" in line and "hum 10 dB under" in line and "rumble" in line for line in hum)
