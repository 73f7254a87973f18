"""The command line: runs as `xattn` and `python -m xattn`, bad input exits 2 with one line."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xattn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_tour_runs_and_shows_the_contract(capsys):
    assert main(["tour", "--length", "128", "--steps", "20"]) == 0
    out = capsys.readouterr().out
    assert "x (2, 5, 64) + context (2, 9, 48) -> y (2, 5, 64)" in out
    assert "nn.MultiheadAttention: NaN in output = True" in out
    assert "xattn.CrossAttention:  NaN in output = False" in out
    assert "auto picks 'sdpa'" in out
    assert "held-out exact match (beam search, 2 beams):" in out
    for line in out.splitlines():
        if "max |difference|" in line:
            assert float(line.split("=")[1]) < 1e-5


def test_python_dash_m_works_the_same():
    result = subprocess.run(
        [sys.executable, "-m", "xattn", "tour", "--length", "16", "--steps", "4"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Exact attention at T = S = 16" in result.stdout


@pytest.mark.parametrize(
    "argv,message",
    [
        (["tour", "--length", "0"], "xattn tour: error: --length=0; expected a positive number"),
        (["tour", "--steps", "-3"], "xattn tour: error: --steps=-3; expected a positive number"),
        (["demo", "--steps", "0"], "xattn demo: error: --steps=0; expected a positive number"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == err.strip().splitlines()[0]  # one line, no traceback
    assert message in err


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--steps", "0"], "--steps=0; expected a positive number"),
        (["--batch-size", "-2"], "--batch-size=-2; expected a positive number"),
        (["--lr", "nan"], "--lr=nan; expected a positive number"),
        (["--warmup", "-1"], "--warmup=-1; expected a number >= 0"),
        (["--label-smoothing", "1"], "--label-smoothing=1.0; expected 0 <= value < 1"),
        (["--dropout", "-0.1"], "--dropout=-0.1; expected 0 <= value < 1"),
        (["--eval-every", "0"], "--eval-every=0; expected a positive number"),
        (["--train-size", "0", "--task", "qa"], "--train-size=0; expected a positive number"),
        (["--hold-out", "george"], "--hold-out picks the speech task's test speaker; --task is"),
        (["--task", "speech", "--hold-out", "bob"], "--hold-out=bob; expected one of george"),
    ],
)
def test_bad_train_flags_are_named_as_flags(capsys, tmp_path, flags, message):
    """A bad value is reported under the flag the user typed, before anything is written."""
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith(f"xattn train: error: {message}")
    assert "TrainConfig" not in err
    assert not out.exists()


def test_unknown_command_exits_2():
    with pytest.raises(SystemExit) as info:
        main(["translate-everything"])
    assert info.value.code == 2


def test_bench_quick_runs_side_by_side():
    result = subprocess.run(
        [sys.executable, "-m", "xattn", "bench", "attention", "--quick", "--no-memory"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "| B8 H8 T32 S256 | torch SDPA" in result.stdout
    assert "xattn.CrossAttention" in result.stdout
    assert 'CrossAttention(return_weights="mean")' in result.stdout


def test_bench_generation_quick_runs_and_matches_transformers():
    result = subprocess.run(
        [sys.executable, "-m", "xattn", "bench", "generation", "--quick"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| B1 greedy")]
    # transformers, xattn, xattn compiled, xattn int8 eager and compiled, nn.Transformer
    # loop, minimal eager step, the compiled floor, matmuls
    assert len(rows) == 9
    assert "a minimal eager step" in rows[6]
    assert "floor: no search" in rows[7]
    assert "| yes" in rows[1]  # xattn produced the same tokens as transformers
    assert "compile=True" in rows[2] and "| yes" in rows[2]  # and so did its compiled steps
    assert "% of tokens" in rows[3]  # int8 agreement with transformers is reported
    assert "int8 (quantize, compile=True)" in rows[4] and "% of tokens" in rows[4]
    tables = result.stdout.split("Training step (forward, loss, backward, AdamW)")[1:]
    assert len(tables) == 2  # malloc as it started, then keeping freed memory (glibc)
    assert "malloc as the process started" in tables[0]
    assert "malloc keeping freed memory" in tables[1]
    for table in tables:
        assert "page faults a step" in table
        names = ["| nn.Transformer ", "| xattn EncoderDecoder ", "| the linear layers alone "]
        assert all(name in table for name in names)


KEEP_FREED_PROBE = """
import ctypes, resource, sys
sys.path.insert(0, "benchmarks")
from bench_generation import keep_freed_memory

libc = ctypes.CDLL(None)  # malloc and free by hand: nothing else lands on the heap between
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "keep":
    assert keep_freed_memory()
size, faults = 8 << 20, []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(size) for _ in range(8)]  # 64 MB, written, then freed together
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in reversed(blocks):
        libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(" ".join(map(str, faults)))
"""


def test_the_benchmarks_malloc_setting_keeps_freed_memory_mapped():
    """At glibc's defaults 8 MB blocks come from mmap (and each free gives them back)
    until the first is freed, then from the heap, whose top glibc gives back when more
    than twice the largest block freed lies free there: each round maps the 64 MB again
    (16,384 pages). keep_freed_memory keeps them mapped. (With tensors in place of the
    blocks, what else lands on the heap decides whether glibc trims.)"""

    def faults(mode):
        result = subprocess.run(
            [sys.executable, "-c", KEEP_FREED_PROBE, mode],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return [int(n) for n in result.stdout.split()]

    as_started, kept = faults("default"), faults("keep")
    assert min(as_started[2:]) > 10_000, as_started
    assert max(kept[2:]) < 100, kept  # kept: the same pages serve every round


def test_train_flags_left_out_keep_the_task_recipe():
    from xattn.cli import build_parser, train_config
    from xattn.tasks import TASKS

    recipe = TASKS["caption"].recipe
    args = build_parser().parse_args(["train", "--task", "caption", "--out", "x"])
    assert train_config(recipe, args) == recipe
    args = build_parser().parse_args(
        [
            "train",
            "--task",
            "caption",
            "--out",
            "x",
            "--steps",
            "400",
            "--lr",
            "1e-3",
            "--eval-every",
            "1000",
        ]
    )
    config = train_config(recipe, args)
    assert (config.steps, config.warmup_steps, config.schedule) == (400, 120, "cosine")
    assert (config.lr, config.eval_every, config.label_smoothing) == (1e-3, 400, 0.1)
    translation = TASKS["translate"].recipe
    args = build_parser().parse_args(["train", "--out", "x", "--warmup", "5"])
    assert train_config(translation, args) == dataclasses.replace(translation, warmup_steps=5)
    args = build_parser().parse_args(["train", "--out", "x", "--warmup", "0"])  # 0 is a value
    assert train_config(translation, args).warmup_steps == 0


@pytest.mark.parametrize("hold_out,tested", [(None, {"george"}), ("jackson", {"jackson"})])
def test_train_hold_out_picks_the_speech_test_speaker(monkeypatch, hold_out, tested):
    """`xattn train --task speech --hold-out SPEAKER` trains without that FSDD speaker and
    tests on them; `none` trains on all four (their takes 45-49 test)."""
    from xattn.cli import build_parser, training_splits
    from xattn.data.speech import REAL_SPEAKERS
    from xattn.tasks.speech import SpeechTask

    monkeypatch.setattr(SpeechTask, "demo_sizes", {"train": 60, "valid": 4, "test": 40})
    argv = ["train", "--task", "speech", "--out", "x"]
    argv += [] if hold_out is None else ["--hold-out", hold_out]
    splits = training_splits(build_parser().parse_args(argv))
    heard = {u.voice.split(":")[1] for u in splits["train"] if u.voice.startswith("fsdd:")}
    test = {u.voice.split(":")[1] for u in splits["test"] if u.voice.startswith("fsdd:")}
    assert test == tested and heard == set(REAL_SPEAKERS) - tested
    splits = training_splits(build_parser().parse_args([*argv[:5], "--hold-out", "none"]))
    heard = {u.voice.split(":")[1] for u in splits["train"] if u.voice.startswith("fsdd:")}
    test = {u.voice.split(":")[1] for u in splits["test"] if u.voice.startswith("fsdd:")}
    assert heard == set(REAL_SPEAKERS) and test and test <= heard
