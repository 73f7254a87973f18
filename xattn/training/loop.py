"""The training loop: AdamW, warmup then decay, label smoothing, gradient clipping and
accumulation, length-bucketed batches, periodic evaluation, the best model kept, metrics as
JSONL, atomic checkpoints and exact resume; data-parallel under torchrun.

`train` reads top to bottom as the steps of a run: build the optimizer, restore the latest
checkpoint, then per step take the step's micro-batches, accumulate gradients over them,
update, log, and (on the first process) evaluate and save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .batching import IGNORE, Batch, Item, bucket_batches, collate_items
from .checkpoint import latest_checkpoint, load_training_state, save_checkpoint
from .config import TrainConfig
from .distributed import all_reduce_sum, barrier, setup
from .evaluation import evaluate, model_device
from .losses import alignment_nll, token_cross_entropy

__all__ = ["train"]


@dataclass
class Progress:
    """Where a run stands: optimizer steps done, the epoch and the position in its batches
    (what exact resume restores), the best validation score so far, the last evaluation."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    best: dict | None = None
    last_eval: dict[str, Any] = field(default_factory=dict)


def build_optimizer(model, config: TrainConfig):
    """AdamW (no weight decay on biases and norms) and the warmup-then-decay schedule.
    PyTorch's fused AdamW runs one kernel per step on CPU and CUDA, 3x faster than the
    per-tensor loops on CPU."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or "norm" in name else decay).append(p)
    fused = model_device(model).type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-9,
        fused=fused or None,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)


def restore(latest: Path | None, model, optimizer, scheduler, config: TrainConfig) -> Progress:
    """A checkpoint's weights, optimizer, scheduler and RNG states, and where it stood; with
    no checkpoint, a fresh Progress (and the config's seed)."""
    if latest is None:
        torch.manual_seed(config.seed)
        return Progress()
    from ..model import EncoderDecoder

    model.load_state_dict(EncoderDecoder.load(latest).state_dict())
    meta = load_training_state(latest, optimizer, scheduler)
    return Progress(
        meta["step"], meta["epoch"], meta["position"], meta.get("best"), meta.get("last_eval", {})
    )


class EpochBatches:
    """The batches of every epoch (bucketed by length, reproducible by seed and epoch), and
    this process's share of each: the micro-batches of one optimizer step at a time."""

    def __init__(self, items: Sequence[Item], config: TrainConfig, pad: int, world: int, rank):
        self.items, self.config, self.pad = items, config, pad
        self.world, self.rank = world, rank
        self.lengths = [item.length for item in items]
        self.epoch, self.batches = -1, []

    def _of_epoch(self, epoch: int) -> list[list[int]]:
        if epoch != self.epoch:
            found = bucket_batches(self.lengths, self.config.batch_size, self.config.seed, epoch)
            self.epoch, self.batches = epoch, [b for b in found if len(b) >= self.world]
        return self.batches  # every process gets a share of each batch

    def next_step(self, progress: Progress) -> list[Batch]:
        """config.accumulation micro-batches, advancing progress.epoch and .position."""
        micro = []
        for _ in range(self.config.accumulation):
            if progress.position >= len(self._of_epoch(progress.epoch)):
                progress.epoch, progress.position = progress.epoch + 1, 0
            shard = self._of_epoch(progress.epoch)[progress.position][self.rank :: self.world]
            micro.append(collate_items([self.items[i] for i in shard], self.pad))
            progress.position += 1
        return micro


def accumulate_gradients(
    forward, micro: Sequence[Batch], config: TrainConfig, world: int, use_bf16: bool
) -> tuple[float, int]:
    """Gradients of the mean loss over every target token of the step: all micro-batches of
    all processes, as one batch that size would give (plus config.alignment_loss times the
    mean cross-entropy of the supervised head's attention against the gold alignment, over
    the step's supervised rows). Returns (the token loss, its tokens)."""
    device = model_device(forward)
    supervise = config.alignment_loss > 0
    local = [float(sum(b.target_tokens for b in micro)), float(_supervised_rows(micro))]
    tokens, rows = all_reduce_sum(torch.tensor(local), world).tolist()
    total = torch.zeros((), device=device)
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        sync = contextlib.nullcontext() if last or world == 1 else forward.no_sync()
        with sync, torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = forward(
                batch.src.to(device),
                batch.tgt_in.to(device),
                src_mask=batch.src_mask.to(device),
                return_weights=supervise,
            )
        logits = out[0] if supervise else out
        loss_sum = token_cross_entropy(
            logits.flatten(0, 1).float(),
            batch.tgt_out.to(device).flatten(),
            ignore_index=IGNORE,
            label_smoothing=config.label_smoothing,
        )
        # DDP averages gradients over processes: scaling by world makes the update that of
        # the mean loss over all target tokens of the global batch
        objective = loss_sum * (world / tokens)
        if supervise and batch.alignment is not None and rows:
            layer, head = config.alignment_head
            weights = out[1][layer][:, head].float()  # (B, T, S')
            objective = objective + config.alignment_loss * (world / rows) * alignment_nll(
                weights, batch.alignment
            )
        with sync:
            objective.backward()
        total = total + loss_sum.detach()
    return float(all_reduce_sum(total.reshape(1).cpu(), world)[0]) / tokens, int(tokens)


def _supervised_rows(micro: Sequence[Batch]) -> int:
    """Decoder rows with a gold alignment in these micro-batches."""
    return sum(len(set(map(tuple, b.alignment[0][:, :2].tolist()))) for b in micro if b.alignment)


class MetricsLog:
    """metrics.jsonl, one JSON record a line, flushed at once (None: a process that does
    not write)."""

    def __init__(self, path: Path | None) -> None:
        self.file = path.open("a") if path is not None else None

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def evaluate_and_keep_best(model, task, valid, config, progress, run_dir, log) -> dict:
    """Evaluate on the validation examples; save the model to run_dir/best when the task's
    best_score improves."""
    progress.last_eval = {"step": progress.step, **evaluate(model, task, valid, config)}
    log.write({**progress.last_eval, "split": "valid"})
    score = task.best_score(progress.last_eval)
    if progress.best is None or score > list(progress.best["score"]):
        progress.best = {"step": progress.step, "score": score}
        model.save(run_dir / "best")
    return progress.last_eval


def save_training_checkpoint(run_dir, model, optimizer, scheduler, progress, config) -> None:
    """checkpoints/step-N (atomic), keeping the newest config.keep_checkpoints."""
    extra = {
        "step": progress.step,
        "epoch": progress.epoch,
        "position": progress.position,
        "best": progress.best,
        "last_eval": progress.last_eval,
        "config": dataclasses.asdict(config),
    }
    checkpoints = run_dir / "checkpoints"
    save_checkpoint(checkpoints / f"step-{progress.step:07d}", model, optimizer, scheduler, extra)
    prune_checkpoints(checkpoints, config.keep_checkpoints)


def prune_checkpoints(checkpoints: Path, keep: int) -> None:
    """Delete all but the `keep` checkpoints with the highest steps."""
    done = sorted(checkpoints.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def place(model, config: TrainConfig, world: int) -> tuple[Any, bool]:
    """(what the step calls: the model, or DDP around it under torchrun; whether to run in
    bfloat16 autocast). Under torchrun with CUDA each process takes its own device."""
    if world > 1 and torch.cuda.is_available():
        model.to(torch.device("cuda", torch.cuda.current_device()))
    device = model_device(model)
    use_bf16 = config.bf16
    if use_bf16 is None:
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if world == 1:
        return model, use_bf16
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model), use_bf16  # also broadcasts rank 0's weights


def train(
    model,
    task,
    train_examples: Sequence[Any],
    valid_examples: Sequence[Any],
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_eval: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Train `model` (an EncoderDecoder) on a task's examples, in place; returns the last
    evaluation.

    run_dir gets metrics.jsonl, checkpoints/step-N/ (complete, atomic) and best/ (the model
    folder with the task's best validation score). With resume=True the latest checkpoint
    in run_dir is restored (weights, optimizer, scheduler, RNG, data position) and training
    continues exactly where it stopped. Under torchrun every process runs this function;
    the first one evaluates and writes files (see training.distributed).
    """
    from tqdm.auto import tqdm

    world, rank = setup()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.tokenizer = task.tokenizer
    items = [task.encode(e) for e in train_examples]
    if not items:
        raise ValueError("no training examples")
    forward, use_bf16 = place(model, config, world)
    optimizer, scheduler = build_optimizer(model, config)
    latest = latest_checkpoint(run_dir / "checkpoints") if resume else None
    state = restore(latest, model, optimizer, scheduler, config)
    batches = EpochBatches(items, config, task.tokenizer.pad_token_id, world, rank)
    main = rank == 0  # only the first process evaluates and writes files
    log = MetricsLog(run_dir / "metrics.jsonl" if main else None)
    bar = tqdm(
        total=config.steps,
        initial=state.step,
        disable=not (progress and main),
        unit="step",
        dynamic_ncols=True,
    )
    speed = TokenRate()
    model.train()
    try:
        while state.step < config.steps:
            optimizer.zero_grad(set_to_none=True)
            micro = batches.next_step(state)
            loss, tokens = accumulate_gradients(forward, micro, config, world, use_bf16)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            scheduler.step()
            state.step += 1
            rate = speed.add(tokens, state.step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}")
            lr = scheduler.get_last_lr()[0]
            log.write(
                {"step": state.step, "split": "train", "loss": loss, "lr": lr, "tokens_per_s": rate}
            )
            last = state.step == config.steps
            evaluating = state.step % config.eval_every == 0 or last
            saving = state.step % config.checkpoint_every == 0 or last
            if evaluating and main:
                scores = evaluate_and_keep_best(
                    model, task, valid_examples, config, state, run_dir, log
                )
                if on_eval is not None:
                    on_eval(state.step, scores)
            if saving and main:
                save_training_checkpoint(run_dir, model, optimizer, scheduler, state, config)
            if evaluating or saving:
                barrier(world)  # the others wait while the first process writes
    finally:
        bar.close()
        log.close()
    return state.last_eval


class TokenRate:
    """Target tokens per second over a window that restarts every 50 steps."""

    def __init__(self) -> None:
        self.tokens, self.start = 0, time.perf_counter()

    def add(self, tokens: int, step: int) -> float:
        self.tokens += tokens
        rate = self.tokens / max(1e-9, time.perf_counter() - self.start)
        if step % 50 == 0:
            self.tokens, self.start = 0, time.perf_counter()
        return rate
