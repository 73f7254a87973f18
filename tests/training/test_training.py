"""Training: batches, schedule, a tiny model overfitting the default corpus, checkpoints, and
exact resume after a real SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from xattn import EncoderDecoder, ModelConfig
from xattn.data.en_es import generate_corpus
from xattn.data.text_tokenizer import TranslationTokenizer
from xattn.training import TrainConfig, train, translate
from xattn.training.batching import IGNORE, bucket_batches, collate
from xattn.training.checkpoint import latest_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_collate_pads_and_shifts_targets():
    batch = collate([([5, 6, 2], [1, 7, 8, 2]), ([9, 2], [1, 4, 2])], pad=0)
    assert batch.src.tolist() == [[5, 6, 2], [9, 2, 0]]
    assert batch.src_mask.tolist() == [[True, True, True], [True, True, False]]
    assert batch.tgt_in.tolist() == [[1, 7, 8], [1, 4, 0]]
    assert batch.tgt_out.tolist() == [[7, 8, 2], [4, 2, IGNORE]]
    assert batch.target_tokens == 5


def test_bucketed_batches_cover_everything_once_and_repeat_by_epoch():
    lengths = [(i * 7) % 23 + 1 for i in range(1000)]
    batches = bucket_batches(lengths, 32, seed=1, epoch=0, bucket_factor=4)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert batches == bucket_batches(lengths, 32, seed=1, epoch=0, bucket_factor=4)
    assert batches != bucket_batches(lengths, 32, seed=1, epoch=1, bucket_factor=4)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread / len(batches) < 8  # sorted within pools: little padding


def test_schedule_warms_up_then_decays():
    config = TrainConfig(steps=100, warmup_steps=10)
    assert config.lr_factor(0) == pytest.approx(0.1)
    assert config.lr_factor(9) == pytest.approx(1.0)
    assert config.lr_factor(55) == pytest.approx(0.5)
    assert config.lr_factor(100) == 0.0
    assert TrainConfig(steps=100, warmup_steps=0, schedule="cosine").lr_factor(50) == (
        pytest.approx(0.5)
    )
    with pytest.raises(ValueError, match="TrainConfig.schedule='step': expected linear"):
        TrainConfig(schedule="step")


def test_a_recipe_over_other_steps_keeps_its_share_of_warmup():
    recipe = TrainConfig(
        steps=800, warmup_steps=240, schedule="cosine", eval_every=200, checkpoint_every=400
    )
    assert recipe.for_steps(None) is recipe
    longer = recipe.for_steps(1400)
    assert (longer.steps, longer.warmup_steps, longer.schedule) == (1400, 420, "cosine")
    assert (longer.eval_every, longer.checkpoint_every) == (200, 400)
    short = recipe.for_steps(3)
    assert (short.warmup_steps, short.eval_every, short.checkpoint_every) == (1, 3, 3)
    # the learning rate peaks at the same fraction of the run
    assert [longer.lr_factor(s) for s in (419, 910)] == pytest.approx(
        [recipe.lr_factor(s) for s in (239, 520)]
    )


def tiny_setup(n=64, seed=0):
    pairs = [(e.source, e.target) for e in generate_corpus(n, seed=seed)]
    tokenizer = TranslationTokenizer.train(pairs)
    config = ModelConfig.preset(
        "tiny",
        vocab_size=tokenizer.source_vocab_size,
        target_vocab_size=tokenizer.target_vocab_size,
        share_embeddings=False,
        d_model=64,
        ffn_dim=128,
        dropout=0.1,
    )
    return pairs, tokenizer, config


def test_a_tiny_model_overfits_the_default_corpus(tmp_path):
    pairs, tokenizer, config = tiny_setup(48)
    torch.manual_seed(0)
    model = EncoderDecoder(config.replace(dropout=0.0))
    result = train(
        model,
        tokenizer,
        pairs,
        pairs,
        TrainConfig(
            steps=300,
            batch_size=16,
            lr=5e-3,
            warmup_steps=20,
            label_smoothing=0.0,
            eval_every=150,
            checkpoint_every=150,
            eval_size=48,
        ),
        tmp_path,
        progress=False,
    )
    assert result["exact"] == 1.0
    assert translate(model, tokenizer, [pairs[0][0]]) == [pairs[0][1]]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "valid"] == [150, 300]
    assert records[0]["loss"] > records[-2]["loss"]
    best = EncoderDecoder.load(tmp_path / "best")  # the best model, with its tokenizer
    assert translate(best, best.tokenizer, [pairs[1][0]]) == [pairs[1][1]]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-0000150",
        "step-0000300",
    ]


def test_the_fused_optimizer_takes_the_reference_steps(tmp_path, monkeypatch):
    """On CPU the loop asks for PyTorch's fused AdamW; its first step moves the weights as
    the per-tensor AdamW does from the same start (later steps drift apart at float noise
    amplified by the model, as any change of summation order does)."""
    pairs, tokenizer, config = tiny_setup(32)
    flags, reference = [], {"on": False}

    class Recording(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            if reference["on"]:
                kwargs["fused"] = None
            super().__init__(params, **kwargs)
            flags.append(self.defaults["fused"])

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    start, weights = None, []
    for run in ("fused", "reference"):
        reference["on"] = run == "reference"
        torch.manual_seed(0)
        model = EncoderDecoder(config)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        train(
            model,
            tokenizer,
            pairs,
            pairs[:8],
            TrainConfig(
                steps=1,
                batch_size=8,
                lr=5e-3,
                warmup_steps=0,
                eval_every=1,
                checkpoint_every=1,
                eval_size=8,
            ),
            tmp_path / run,
            progress=False,
        )
        weights.append(model.state_dict())
    assert flags == [True, None]  # fused in the loop; the reference really was per-tensor
    fused, per_tensor = weights
    assert not torch.allclose(
        fused["decoder_layers.0.ffn.fc1.weight"], start["decoder_layers.0.ffn.fc1.weight"]
    )
    for k in fused:
        torch.testing.assert_close(fused[k], per_tensor[k], atol=1e-6, rtol=1e-5)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    _, tokenizer, config = tiny_setup(16)
    model = EncoderDecoder(config)
    model.tokenizer = tokenizer
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path / "step-0000010", model, opt, None, {"step": 10})
    import safetensors.torch

    monkeypatch.setattr(
        safetensors.torch, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
    )
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "step-0000020", model, opt, None, {"step": 20})
    assert latest_checkpoint(tmp_path).name == "step-0000010"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000010"]


TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from xattn import EncoderDecoder
    from tests.training.test_training import tiny_setup
    from xattn.training import TrainConfig, train
    pairs, tokenizer, config = tiny_setup(64)
    torch.manual_seed(0)
    model = EncoderDecoder(config)
    steps, resume, slow = int(sys.argv[2]), sys.argv[3] == "resume", sys.argv[4] == "slow"
    if slow:  # give the test time to kill us after a checkpoint
        import time, xattn.training.loop as loop
        real = loop.save_checkpoint
        def slow_save(*a, **k):
            out = real(*a, **k)
            time.sleep(0.5)
            return out
        loop.save_checkpoint = slow_save
    train(model, tokenizer, pairs, pairs[:8],
          TrainConfig(steps=steps, batch_size=8, lr=2e-3, warmup_steps=5, eval_every=1000,
                      checkpoint_every=6, keep_checkpoints=5, eval_size=4, seed=3),
          sys.argv[1], resume=resume, progress=False)
    """
)


def run_training(run_dir, steps, resume=False, slow=False, wait=True):
    cmd = [
        sys.executable,
        "-c",
        TRAIN_SCRIPT,
        str(run_dir),
        str(steps),
        "resume" if resume else "fresh",
        "slow" if slow else "fast",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    if wait:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    return proc


def final_weights(run_dir):
    return EncoderDecoder.load(latest_checkpoint(Path(run_dir) / "checkpoints")).state_dict()


def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path):
    run_training(tmp_path / "straight", 24)
    proc = run_training(tmp_path / "killed", 24, slow=True, wait=False)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill right after the step-12 checkpoint lands
        latest = latest_checkpoint(tmp_path / "killed" / "checkpoints")
        if latest is not None and latest.name == "step-0000012":
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(tmp_path / "killed" / "checkpoints").name == "step-0000012"
    run_training(tmp_path / "killed", 24, resume=True)
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
