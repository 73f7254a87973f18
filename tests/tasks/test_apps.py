"""A tiny end-to-end run per application: data, front end, training, evaluation, alignment
hit rate, pictures, and the command line (demo, train, attention)."""

import json

import numpy as np
import pytest
import torch

from xattn.cli import main
from xattn.data.speech import Utterance
from xattn.model import EncoderDecoder
from xattn.tasks import TASKS, common
from xattn.tasks.common import (
    _HitRates,
    app_attention,
    app_hit_rate,
    attention_maps,
    draw_example,
    train_app,
)
from xattn.training import TrainConfig, evaluate
from xattn.training.batching import pad_sources
from xattn.training.metrics import alignment_hit_rate, head_hit_rates

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


@pytest.mark.parametrize("name", ["caption", "qa", "speech"])
def test_tiny_run_end_to_end(tmp_path, monkeypatch, name):
    task_cls = TASKS[name]
    splits = task_cls.generate(**SIZES, seed=0)
    model, task, result = train_app(
        task_cls,
        splits,
        tmp_path / "run",
        TINY,
        progress=False,
        model_overrides={"d_model": 32, "ffn_dim": 64},
    )
    assert {"loss", "exact", "wer", "cer"} <= set(result)
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    example = splits["test"][0]
    words, layers, length = app_attention(model, task, example)
    assert words[-1] == "</s>" and len(words) == len(task.reference(example).split()) + 1
    assert len(layers) == model.config.decoder_layers
    assert layers[0].shape == (model.config.num_heads, len(words), length)
    torch.testing.assert_close(layers[0].sum(-1), torch.ones(layers[0].shape[:2]))
    gold = task.gold(example)
    assert len(gold) == len(words) - 1 and all(0 <= k < length for g in gold for k in g)
    assert all(gold)  # every word has positions that produced it
    assert 0.0 <= app_hit_rate(model, task, splits["test"]) <= 1.0
    # the demo's overall and per-kind rates: overlapping subsets, each map computed once
    rates, test = _HitRates(model, task, splits["test"]), splits["test"]
    one, both = rates([0, 2]), rates(range(len(test)))  # a subset, then all of them
    assert one == app_hit_rate(model, task, [test[0], test[2]])
    assert both == app_hit_rate(model, task, test)
    other = app_hit_rate(model, task, [test[1], test[3]])
    looked = []
    monkeypatch.setattr(
        common,
        "attention_maps",
        lambda m, t, examples: looked.extend(examples) or attention_maps(m, t, examples),
    )
    assert rates([1, 3]) == other and rates(range(len(test))) == both
    assert looked == []  # every map was already there
    _HitRates(model, task, test)([1, 3, 1])
    assert list(map(id, looked)) == [id(test[1]), id(test[3])]  # (counted; each example once)
    monkeypatch.undo()
    # the batched maps (padded sources and targets) equal the maps of one example at a time,
    # and those equal the decoder's own attention computed here
    batched = attention_maps(model, task, test, batch_size=3)
    for e, m in zip(test, batched, strict=True):
        torch.testing.assert_close(m, attention_maps(model, task, [e])[0], atol=1e-5, rtol=0)
        ids, prompt = task.target_ids(e)
        src, mask = pad_sources([task.source(e)], task.tokenizer.pad_token_id)
        memory, memory_mask = model.encode(src, mask, return_mask=True)
        _, layers = model.decode(
            torch.tensor([ids[:-1]]), memory, src_mask=memory_mask, return_attention="all"
        )
        direct = torch.stack([a[0, :, prompt - 1 : len(ids) - 1] for a in layers])
        torch.testing.assert_close(m, direct, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="1 texts for 4 examples"):
        attention_maps(model, task, test, texts=["one"])
    if name == "speech":  # utterances of different lengths: the padding was exercised
        assert len({m.shape[-1] for m in batched}) > 1
    # every head on its own, from the same maps (every layer's and head's, with the gold)
    maps, gold = rates.maps(range(len(test)))
    assert gold == [task.gold(e) for e in test]
    torch.testing.assert_close(maps[0], torch.stack(app_attention(model, task, test[0])[1]))
    table = head_hit_rates(maps, gold)
    assert table.shape == (model.config.decoder_layers, model.config.num_heads)
    last = [app_attention(model, task, e)[1][-1][-1] for e in test]  # last layer, last head
    assert table[-1, -1] == alignment_hit_rate(last, [task.gold(e) for e in test])
    drawn = draw_example(model, task, example, tmp_path, "pic")
    assert drawn["picture"].stat().st_size > 1000 and drawn["grid"].is_file()
    # a hypothesis decoded elsewhere (the demo's test pass) is drawn as given
    reference = task.reference(example)
    given = draw_example(model, task, example, tmp_path, "given", reference)
    assert given["hypothesis"] == reference
    assert given["tokens"][1] == [*reference.split(), "</s>"]
    # the picture is the mean of every head, or of the model's alignment heads once it has them
    layers = torch.stack(app_attention(model, task, example, reference)[1])  # (L, H, T, S')
    torch.testing.assert_close(given["tokens"][2], layers.mean((0, 1)))
    model.set_alignment_heads([(0, 1), (1, 0)])
    aligned = draw_example(model, task, example, tmp_path, "aligned", reference)
    torch.testing.assert_close(aligned["tokens"][2], (layers[0, 1] + layers[1, 0]) / 2)
    n, h = model.config.decoder_layers, model.config.num_heads
    with pytest.raises(ValueError, match=rf"heads \[\[{n}, 0\]\]: .* {n} layers x {h} heads"):
        model.set_alignment_heads([(n, 0)])  # one layer too far
    hyps: list[str] = []
    scores = evaluate(model, task.tokenizer, splits["test"], TINY, task=task, hypotheses=hyps)
    assert 0.0 <= scores["exact"] <= 1.0 and len(hyps) == len(splits["test"])
    refs = [task.reference(e) for e in splits["test"]]
    assert scores["exact"] == sum(map(str.__eq__, hyps, refs)) / len(refs)


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


@pytest.mark.parametrize("name", ["caption", "qa", "speech"])
def test_cli_demo_train_and_attention(tmp_path, capsys, name):
    run = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--task",
            name,
            "--steps",
            "2",
            "--train-size",
            "16",
            "--test-size",
            "3",
            "--run-dir",
            str(run),
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == name and "alignment_hit_rate" in summary
    chosen, per_head = summary["alignment_heads"], summary["alignment_hit_rate_per_head"]
    assert chosen and all(0 <= a < len(per_head) and 0 <= b < len(per_head[a]) for a, b in chosen)
    if len(chosen) == 1:  # chosen on the validation split, reported on test
        assert summary["alignment_heads_hit_rate"] == per_head[chosen[0][0]][chosen[0][1]]
    assert (run / "attention" / "index.html").is_file()
    assert (run / "attention" / "example-01.png").is_file()
    out = capsys.readouterr().out
    assert "Cross-attention peak on the input that produced the word" in out
    assert f"{summary['alignment_heads_hit_rate']:.1%} of test words" in out
    # kept with the model as Whisper keeps them (generation_config.json, counting from 0)
    saved = json.loads((run / "model" / "generation_config.json").read_text())
    assert saved["alignment_heads"] == chosen  # the same pairs, counting from 0
    if name == "qa":  # per kind of question: exact match and hit rate
        kinds = [k.removeprefix("exact_") for k in summary if k.startswith("exact_")]
        assert kinds and all(0 <= summary[f"alignment_hit_rate_{k}"] <= 1 for k in kinds)
        assert all(f"{k} questions (" in out for k in kinds)
    code = main(
        [
            "attention",
            "--model",
            str(run / "model"),
            "--task",
            name,
            "--example",
            "1",
            "--out",
            str(tmp_path / "att"),
        ]
    )
    assert code == 0
    assert (tmp_path / "att" / "attention.png").is_file()
    out = capsys.readouterr().out
    assert "where each output word's attention peaks" in out
    names = " + ".join(f"layer {layer + 1} head {head + 1}" for layer, head in chosen)
    assert f"(the mean attention of the alignment heads {names})" in out
    code = main(["attention", "--model", str(run / "model"), "--task", "translate"])
    assert code == 2
    assert f"is a {name} model, not translate" in capsys.readouterr().err
    code = main(
        [
            "train",
            "--task",
            name,
            "--steps",
            "2",
            "--train-size",
            "16",
            "--out",
            str(tmp_path / "train"),
            "--no-progress",
            "--eval-every",
            "2",
        ]
    )
    assert code == 0
    assert (tmp_path / "train" / "model" / "config.json").is_file()
    kept = EncoderDecoder.load(tmp_path / "train" / "model").generation_config.alignment_heads
    names = " + ".join(f"layer {a + 1} head {b + 1}" for a, b in kept)
    out = capsys.readouterr().out
    assert f"(kept in the model's generation_config.json): {names}" in out


def test_cli_task_errors(tmp_path, capsys):
    assert main(["train", "--task", "qa", "--data", "x.tsv", "--out", str(tmp_path / "o")]) == 2
    assert "trains on generated data" in capsys.readouterr().err
    assert main(["demo", "--task", "caption", "--test-size", "0"]) == 2
    assert "--test-size=0" in capsys.readouterr().err
    assert main(["train", "--task", "qa", "--train-size", "0", "--out", str(tmp_path / "z")]) == 2
    assert "--train-size=0; expected a positive number" in capsys.readouterr().err
