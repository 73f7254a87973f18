"""Training: batches, schedule, a tiny model overfitting the default corpus, gradient
accumulation, checkpoints and their pruning, and exact resume after a real SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from xattn import EncoderDecoder, ModelConfig
from xattn.data.en_es import generate_corpus
from xattn.data.tokenizers import PairTokenizer
from xattn.tasks import TranslationTask, translate
from xattn.training import TrainConfig, loop, train
from xattn.training.batching import IGNORE, bucket_batches, collate, collate_items
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
    """(sentence pairs, a translation task with a tokenizer trained on them, a tiny config)."""
    pairs = generate_corpus(n, seed=seed)
    tokenizer = PairTokenizer.train([(e.source, e.target) for e in pairs])
    config = ModelConfig.preset(
        "tiny",
        vocab_size=tokenizer.source_vocab_size,
        target_vocab_size=tokenizer.target_vocab_size,
        share_embeddings=False,
        d_model=64,
        ffn_dim=128,
        dropout=0.1,
    )
    return pairs, TranslationTask(tokenizer), config


def test_a_tiny_model_overfits_the_default_corpus(tmp_path):
    pairs, task, config = tiny_setup(48)
    torch.manual_seed(0)
    model = EncoderDecoder(config.replace(dropout=0.0))
    result = train(
        model,
        task,
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
    assert translate(model, [pairs[0].source]) == [pairs[0].target]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "valid"] == [150, 300]
    assert records[0]["loss"] > records[-2]["loss"]
    best = EncoderDecoder.load(tmp_path / "best")  # the best model, with its tokenizer
    assert translate(best, [pairs[1].source]) == [pairs[1].target]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-0000150",
        "step-0000300",
    ]


def test_the_fused_optimizer_takes_the_reference_steps(tmp_path, monkeypatch):
    """On CPU the loop asks for PyTorch's fused AdamW; its first step moves the weights as
    the per-tensor AdamW does from the same start (later steps drift apart at float noise
    amplified by the model, as any change of summation order does)."""
    pairs, task, config = tiny_setup(32)
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
            task,
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
    _, task, config = tiny_setup(16)
    model = EncoderDecoder(config)
    model.tokenizer = task.tokenizer
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


def test_accumulated_micro_batches_give_the_gradient_of_one_batch():
    """Two micro-batches with different numbers of target tokens: the accumulated gradient
    is that of the mean loss over all their tokens, as one batch of both gives (normalizing
    each micro-batch by its own tokens would weight the shorter one's tokens more)."""
    pairs, task, config = tiny_setup(32)
    items = sorted((task.encode(e) for e in pairs), key=lambda item: len(item.target))
    short, long = items[:4], items[-4:]
    pad = task.tokenizer.pad_token_id
    micro = [collate_items(short, pad), collate_items(long, pad)]
    assert micro[0].target_tokens != micro[1].target_tokens
    torch.manual_seed(0)
    model = EncoderDecoder(config.replace(dropout=0.0))
    train_config = TrainConfig(label_smoothing=0.1)
    grads, losses = [], []
    for batches in (micro, [collate_items(short + long, pad)]):
        model.zero_grad(set_to_none=True)
        loss, tokens = loop.accumulate_gradients(model, batches, train_config, 1, False)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        assert tokens == micro[0].target_tokens + micro[1].target_tokens
        losses.append(loss)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_a_step_takes_accumulation_micro_batches_and_old_checkpoints_are_pruned(tmp_path):
    pairs, task, config = tiny_setup(40)
    batches = loop.EpochBatches(
        [task.encode(e) for e in pairs],
        TrainConfig(batch_size=8, accumulation=3),
        task.tokenizer.pad_token_id,
        1,
        0,
    )
    state = loop.Progress()
    assert len(batches.next_step(state)) == 3 and (state.epoch, state.position) == (0, 3)
    assert len(batches.next_step(state)) == 3 and (state.epoch, state.position) == (1, 1)
    for step in (2, 10, 9, 100):  # numeric order, not the names' order
        (tmp_path / "c" / f"step-{step:07d}").mkdir(parents=True)
    loop.prune_checkpoints(tmp_path / "c", 2)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["step-0000010", "step-0000100"]
    torch.manual_seed(0)
    model = EncoderDecoder(config)
    train(
        model,
        task,
        pairs,
        pairs[:4],
        TrainConfig(
            steps=8, batch_size=8, eval_every=8, checkpoint_every=2, keep_checkpoints=2, eval_size=4
        ),
        tmp_path / "run",
        progress=False,
    )
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["step-0000006", "step-0000008"]


TRAIN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from xattn import EncoderDecoder
    from tests.training.test_training import tiny_setup
    from xattn.training import TrainConfig, checkpoint, train
    pairs, task, config = tiny_setup(64)
    torch.manual_seed(0)
    model = EncoderDecoder(config)
    steps, resume, kill_at = int(sys.argv[2]), sys.argv[3] == "resume", sys.argv[4]
    if kill_at:  # SIGKILL ourselves halfway through writing that checkpoint: a known point
        real = checkpoint.replace_dir
        def dying_replace(new, target):
            if target.name == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            real(new, target)
        checkpoint.replace_dir = dying_replace
    train(model, task, pairs, pairs[:8],
          TrainConfig(steps=steps, batch_size=8, lr=2e-3, warmup_steps=5, eval_every=1000,
                      checkpoint_every=6, keep_checkpoints=5, eval_size=4, seed=3),
          sys.argv[1], resume=resume, progress=False)
    """
)


def run_training(run_dir, steps, resume=False, kill_at=""):
    mode = "resume" if resume else "fresh"
    cmd = [sys.executable, "-c", TRAIN_SCRIPT, str(run_dir), str(steps), mode, kill_at]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300)


def final_weights(run_dir):
    return EncoderDecoder.load(latest_checkpoint(Path(run_dir) / "checkpoints")).state_dict()


def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path):
    done = run_training(tmp_path / "straight", 24)
    assert done.returncode == 0, done.stderr.decode()
    # killed while writing the step-18 checkpoint: steps 13-18 are lost, step 12 is whole
    killed = run_training(tmp_path / "killed", 24, kill_at="step-0000018")
    assert killed.returncode == -signal.SIGKILL
    checkpoints = tmp_path / "killed" / "checkpoints"
    assert latest_checkpoint(checkpoints).name == "step-0000012"
    assert any(p.name.startswith(".step-0000018.tmp") for p in checkpoints.iterdir())  # half
    resumed = run_training(tmp_path / "killed", 24, resume=True)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert latest_checkpoint(checkpoints).name == "step-0000024"
    straight, again = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    for name in straight:
        assert torch.equal(straight[name], again[name]), name


def test_batches_carry_the_gold_alignment_of_answer_rows():
    from xattn.training.batching import Item

    items = [
        Item([5, 6, 2], [1, 7, 8, 2], 1, [[0], [1, 2]]),
        Item([9, 2], [1, 3, 4, 2], 2, [[], [0]]),
    ]
    links, weights = collate_items(items, pad=0).alignment
    # row t of example b predicts answer word k = t - (prompt - 1); empty gold is skipped
    assert links.tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 2], [1, 2, 0]]
    assert weights.tolist() == [1.0, 0.5, 0.5, 1.0]
    assert collate_items([Item([5, 2], [1, 7, 2])], pad=0).alignment is None


def test_supervised_attention_teaches_one_head_the_gold_alignment(tmp_path):
    """alignment_loss pulls the chosen head's cross-attention onto the grammar's links: its
    peaks land on the gold English word far more often than the same head's without it."""
    from xattn.alignment import HitRates

    pairs, task, config = tiny_setup(64, seed=1)
    rates = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = EncoderDecoder(config.replace(dropout=0.0))
        recipe = TrainConfig(
            steps=300,
            batch_size=16,
            lr=3e-3,
            warmup_steps=10,
            eval_every=300,
            checkpoint_every=300,
            eval_size=8,
            alignment_loss=weight,
            alignment_head=(-1, 1),
        )
        train(model, task, pairs, pairs[:8], recipe, tmp_path / str(weight), progress=False)
        rates[weight] = HitRates(model, task, pairs)(range(64), [(1, 1)])  # the last layer's
    assert rates[1.0] > 0.9 and rates[1.0] > rates[0.0] + 0.2
