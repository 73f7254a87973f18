"""`xattn train`, `xattn translate` and `xattn demo` through the command line: results,
files, and every bad-input path (one line on stderr, exit code 2, nothing overwritten)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xattn.cli import main
from xattn.model import EncoderDecoder

ROOT = Path(__file__).resolve().parents[1]


def write_tsv(path, n=40):
    from xattn.data.en_es import generate_corpus

    lines = [f"{e.source}\t{e.target}" for e in generate_corpus(n, seed=5)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


TRAIN_ARGS = [
    "--steps",
    "30",
    "--batch-size",
    "8",
    "--eval-every",
    "15",
    "--checkpoint-every",
    "15",
    "--warmup",
    "3",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    write_tsv(folder / "corpus.tsv")
    assert (
        main(
            [
                "train",
                "--data",
                str(folder / "corpus.tsv"),
                "--out",
                str(folder / "out"),
                *TRAIN_ARGS,
            ]
        )
        == 0
    )
    return folder


def test_train_writes_a_run_folder(trained):
    out = trained / "out"
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "model" / "source_tokenizer.json").is_file()
    assert (out / "best" / "config.json").is_file()
    assert (out / "loss.png").stat().st_size > 0
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == [
        "step-0000015",
        "step-0000030",
    ]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "valid"}


def test_train_resume_continues_and_refuses_to_overwrite(trained, capsys):
    out = str(trained / "out")
    assert main(["train", "--data", str(trained / "corpus.tsv"), "--out", out, *TRAIN_ARGS]) == 2
    assert "exists and is not empty; pass --resume" in capsys.readouterr().err
    args = [a if a != "30" else "45" for a in TRAIN_ARGS]
    assert (
        main(["train", "--data", str(trained / "corpus.tsv"), "--out", out, "--resume", *args]) == 0
    )
    assert (trained / "out" / "checkpoints" / "step-0000045").is_dir()


def test_translate_arguments_and_stdin(trained, capsys):
    model = str(trained / "out" / "model")
    assert main(["translate", "--model", model, "the red car", "a house"]) == 0
    lines = capsys.readouterr().out.split("\n")[:-1]  # one line per input (maybe empty)
    assert len(lines) == 2
    result = subprocess.run(
        [sys.executable, "-m", "xattn", "translate", "--model", model],
        input="the red car\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout == lines[0] + "\n"


def test_translate_with_an_ensemble(trained, capsys):
    """--model twice: the Ensemble of the folders (here the last and the best weights)."""
    from xattn import EncoderDecoder, Ensemble
    from xattn.tasks import translate

    folders = [str(trained / "out" / "model"), str(trained / "out" / "best")]
    models = [EncoderDecoder.load(folder) for folder in folders]
    texts = ["the red car", "a house", "the old dog sees a cat"]
    expected = translate(Ensemble(models), texts, num_beams=3)
    assert (
        main(["translate", "--model", folders[0], "--model", folders[1], *texts, "--beams", "3"])
        == 0
    )
    assert capsys.readouterr().out == "\n".join(expected) + "\n"
    assert translate(Ensemble(models[:1]), texts) == translate(models[0], texts)


def test_translate_int8(trained, capsys):
    from xattn import EncoderDecoder
    from xattn.tasks import translate

    model = str(trained / "out" / "model")
    int8 = EncoderDecoder.load(model).quantize("int8")
    expected = translate(int8, ["the red car", "a house"])
    assert main(["translate", "--model", model, "--int8", "the red car", "a house"]) == 0
    assert capsys.readouterr().out == "\n".join(expected) + "\n"


def test_translate_a_transformers_marian_folder(tmp_path, capsys):
    import transformers

    hf_tok_dir = tmp_path / "m"
    hf_tok_dir.mkdir()
    from tests.test_hf import TEXTS, train_spm

    train_spm(hf_tok_dir / "source.spm")
    (hf_tok_dir / "target.spm").write_bytes((hf_tok_dir / "source.spm").read_bytes())
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(hf_tok_dir / "source.spm"))
    vocab = {"</s>": 0, "<unk>": 1}
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if piece not in vocab and piece not in ("<s>", "</s>", "<unk>"):
            vocab[piece] = len(vocab)
    vocab["<pad>"] = len(vocab)
    (hf_tok_dir / "vocab.json").write_text(json.dumps(vocab))
    V = len(vocab)
    config = transformers.MarianConfig(
        vocab_size=V,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
        pad_token_id=V - 1,
        eos_token_id=0,
        decoder_start_token_id=V - 1,
    )
    transformers.MarianMTModel(config).save_pretrained(hf_tok_dir)
    assert main(["translate", "--model", str(hf_tok_dir), TEXTS[0]]) == 0
    assert capsys.readouterr().out.endswith("\n")


@pytest.mark.parametrize(
    "content,flags,message",
    [
        (
            b"the cat\tel gato\nno tab here\n",
            [],
            "corpus.tsv:2: expected source<TAB>target, found 0 tabs",
        ),
        (b"the cat\tel gato\n\tel perro\n", [], "corpus.tsv:2: empty source side"),
        (b"the cat\tel gato\nthe \xff dog\tel perro\n", [], "corpus.tsv:2: not valid UTF-8"),
        (b"a\tb\tc\n", [], "corpus.tsv:1: expected source<TAB>target, found 2 tabs"),
        (b"", [], "corpus.tsv: no usable sentence pairs"),
    ],
)
def test_bad_corpus_lines_exit_2_naming_file_and_line(tmp_path, capsys, content, flags, message):
    (tmp_path / "corpus.tsv").write_bytes(content)
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "corpus.tsv"),
            "--out",
            str(tmp_path / "out"),
            *TRAIN_ARGS,
            *flags,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "model").exists()


def test_skip_bad_lines_counts_them(tmp_path, capsys):
    lines = write_tsv(tmp_path / "corpus.tsv", 30)
    with (tmp_path / "corpus.tsv").open("ab") as f:
        f.write(b"brokenline\nthe \xff\tzzzword\n")
    args = [a if a != "30" else "2" for a in TRAIN_ARGS]
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "corpus.tsv"),
                "--out",
                str(tmp_path / "out"),
                "--skip-bad-lines",
                *args,
            ]
        )
        == 0
    )
    assert "skipped 2 bad lines" in capsys.readouterr().err
    tokenizer = EncoderDecoder.load(tmp_path / "out" / "model").tokenizer
    assert tokenizer.source.token_to_id("brokenline") is None  # never trained on
    assert tokenizer.target.token_to_id("zzzword") is None
    last = tokenizer.source_tokens(lines[-1].split("\t")[0])  # a training pair's words
    assert all(tokenizer.source.token_to_id(word) is not None for word in last)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["translate", "--model", "no/such/folder", "x"], "no/such/folder: no such model folder"),
        (["translate", "--model", "{tmp}", "x"], "config.json is missing"),
    ],
)
def test_translate_bad_model_folders(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_translate_bad_inputs(trained, tmp_path, capsys):
    model = str(trained / "out" / "model")
    assert main(["translate", "--model", model, "   "]) == 2
    assert "input line 1 is empty" in capsys.readouterr().err
    long = " ".join(["the red car"] * 100)
    assert main(["translate", "--model", model, long]) == 2
    err = capsys.readouterr().err
    assert (
        "input 1 has 301 tokens; the model reads at most 256 (truncate=True, or --truncate" in err
    )
    assert main(["translate", "--model", model, "--truncate", long]) == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (trained / "out" / "model").iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["translate", "--model", str(broken), "the car"]) == 2
    assert "unreadable weights" in capsys.readouterr().err


def test_demo_with_few_steps_writes_its_files(tmp_path, capsys, browser):
    from xattn.alignment import alignment_error_rate, read_pharaoh
    from xattn.tasks import TranslationTask

    run = tmp_path / "demo"
    argv = ["demo", "--steps", "8", "--test-size", "50", "--run-dir", str(run), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Test set (50 held-out examples): exact match" in out
    assert "Cross-attention peak on the input that produced the word" in out
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= {"exact", "bleu", "chrf", "alignment_hit_rate", "seconds"}
    per_head = summary["alignment_hit_rate_per_head"]
    config = EncoderDecoder.load(run / "model").config
    assert (len(per_head), len(per_head[0])) == (config.decoder_layers, config.num_heads)
    assert summary["alignment_heads"]  # chosen on the validation split, reported on test
    assert f"{summary['alignment_heads_hit_rate']:.1%} of test words" in out
    saved = EncoderDecoder.load(run / "model").generation_config.alignment_heads
    assert [list(h) for h in saved] == summary["alignment_heads"]  # drawn from them
    # the hard word alignments: one Pharaoh line per test sentence, scored as printed
    lines = (run / "test-alignments.txt").read_text().splitlines()
    assert len(lines) == 50
    test = TranslationTask.held_out(50)
    links = [read_pharaoh(line, where=f"line {i + 1}") for i, line in enumerate(lines)]
    assert all(
        t < len(e.target_tokens) for e, line in zip(test, links, strict=True) for _, t in line
    )
    gold = [[(s, t) for t, sources in enumerate(e.alignment) for s in sources] for e in test]
    scores = alignment_error_rate(links, gold)
    assert summary["word_alignment"]["aer"] == pytest.approx(scores.aer)
    assert f"AER {scores.aer:.1%}" in out
    assert (run / "model" / "model.safetensors").is_file()
    assert (run / "loss.png").is_file() and (run / "attention" / "index.html").is_file()
    assert len(list((run / "attention").glob("example-*-grid.png"))) == 8
    from tests.browser import Page, save_screenshot

    shown = Page(browser, run / "attention" / "index.html")  # the explorer, offline
    shown.page.hover(".xae-tok[data-index='1']")
    assert shown.page.locator(".xae-pharaoh").inner_text()  # the hard alignment is shown
    assert shown.requests == [] and shown.errors == []
    save_screenshot(shown, "explorer-translate")
    shown.close()
    assert main(["demo", "--steps", "8", "--run-dir", str(run)]) == 2  # never overwritten


def test_attention_command_draws_one_pair(trained, tmp_path, capsys):
    model = str(trained / "out" / "model")
    assert main(["attention", "--model", model, "the red car", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "word alignment (Pharaoh source-target): " in out
    assert "(the mean attention of every layer and head)" in out  # no alignment heads yet
    for name in ("attention.png", "attention-grid.png", "attention.html"):
        assert (tmp_path / name).stat().st_size > 0
    source, target = (trained / "corpus.tsv").read_text().splitlines()[-1].split("\t")
    assert (
        main(["attention", "--model", model, source, target, "--out", str(tmp_path / "forced")])
        == 0
    )
    out = capsys.readouterr().out
    words = [line.split()[0] for line in out.splitlines()[1:] if "<-" in line]
    assert words == [*target.split(), "</s>"]  # teacher-forced on the given target
    assert main(["attention", "--model", model, " ", "--out", str(tmp_path)]) == 2
    assert "give the (non-empty) source sentence" in capsys.readouterr().err
    # alignment heads in generation_config.json (Whisper's field): drawn, and checked
    copy = tmp_path / "heads"
    shutil.copytree(model, copy)
    settings = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(
        json.dumps({**settings, "alignment_heads": [[0, 1]]})
    )
    assert main(["attention", "--model", str(copy), "the red car", "--out", str(tmp_path)]) == 0
    assert "(the mean attention of the alignment heads layer 1 head 2)" in capsys.readouterr().out
    (copy / "generation_config.json").write_text(
        json.dumps({**settings, "alignment_heads": [[0, 9]]})
    )
    assert main(["attention", "--model", str(copy), "the red car", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "generation_config.json: alignment_heads [[0, 9]]: expected (layer, head) pairs" in err


def test_train_on_the_bible_corpus(tmp_path, capsys):
    from tests.data.test_parallel import make_bible

    make_bible(tmp_path / "bible.db")
    args = [a if a != "30" else "3" for a in TRAIN_ARGS]
    assert (
        main(
            [
                "train",
                "--corpus",
                "bible",
                "--src",
                "en",
                "--tgt",
                "es",
                "--bible-db",
                str(tmp_path / "bible.db"),
                "--tokenizer",
                "bpe",
                "--vocab-size",
                "120",
                "--out",
                str(tmp_path / "out"),
                *args,
            ]
        )
        == 0
    )
    assert "Bible en->es:" in capsys.readouterr().err
    assert (tmp_path / "out" / "model" / "source_tokenizer.json").is_file()
    assert (
        main(
            [
                "train",
                "--corpus",
                "bible",
                "--src",
                "xx",
                "--bible-db",
                str(tmp_path / "bible.db"),
                "--out",
                str(tmp_path / "o2"),
                *args,
            ]
        )
        == 2
    )
    assert "unknown Bible language 'xx'" in capsys.readouterr().err


def test_tokenizer_that_does_not_match_the_model_is_refused(trained, tmp_path, capsys):
    other = tmp_path / "other"
    write_tsv(tmp_path / "small.tsv", 10)
    args = [a if a != "30" else "2" for a in TRAIN_ARGS]
    assert main(["train", "--data", str(tmp_path / "small.tsv"), "--out", str(other), *args]) == 0
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in (trained / "out" / "model").iterdir():
        (mixed / f.name).write_bytes(f.read_bytes())
    for name in ("source_tokenizer.json", "target_tokenizer.json"):
        (mixed / name).write_bytes((other / "model" / name).read_bytes())
    capsys.readouterr()
    assert main(["translate", "--model", str(mixed), "the car"]) == 2
    assert "tokenizer and model do not match" in capsys.readouterr().err
