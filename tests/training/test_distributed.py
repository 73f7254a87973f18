"""`torchrun --nproc_per_node=2 -m xattn train`: 2 CPU processes (gloo) follow the same loss
trajectory as one process training on the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch.distributed as dist

from tests.test_cli_translation import write_tsv

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--steps",
    "10",
    "--batch-size",
    "16",
    "--eval-every",
    "10",
    "--checkpoint-every",
    "10",
    "--warmup",
    "2",
    "--dropout",
    "0",
    "--no-progress",
]


def losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def test_two_processes_match_one(tmp_path):
    assert dist.is_available() and dist.is_gloo_available()
    write_tsv(tmp_path / "corpus.tsv", 80)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    common = ["--data", str(tmp_path / "corpus.tsv"), *ARGS]
    single = subprocess.run(
        [sys.executable, "-m", "xattn", "train", *common, "--out", str(tmp_path / "single")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "xattn",
            "train",
            *common,
            "--out",
            str(tmp_path / "multi"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    one, two = losses(tmp_path / "single"), losses(tmp_path / "multi")
    assert len(one) == len(two) == 10
    for a, b in zip(one, two, strict=True):
        assert abs(a - b) <= 1e-5 * abs(a)
    assert one[-1] < one[0]
    # only the first process wrote files: one metrics file, one set of checkpoints
    assert (tmp_path / "multi" / "model" / "model.safetensors").is_file()
    assert [p.name for p in (tmp_path / "multi" / "checkpoints").iterdir()] == ["step-0000010"]
