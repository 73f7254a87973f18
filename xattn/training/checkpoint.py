"""Training checkpoints that survive crashes: written to a temporary folder, then renamed.

A checkpoint folder holds the model folder files (config.json, model.safetensors,
generation_config.json, tokenizer files) plus training_state.safetensors (optimizer
tensors and the torch RNG state) and training_state.json (step, data position, scheduler,
Python RNG state, the rest of the optimizer state). No pickle anywhere.
"""

from __future__ import annotations

import json
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from ..utils import replace_dir

__all__ = ["latest_checkpoint", "load_training_state", "save_checkpoint"]

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def _optimizer_to_flat(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().contiguous()
            else:
                plain[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["plain"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(folder: Path, model, optimizer, scheduler, extra: dict[str, Any]) -> Path:
    """Write a complete checkpoint to `folder` atomically (temporary folder + rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save(tmp)  # itself atomic into tmp
        tensors, optim_meta = _optimizer_to_flat(optimizer.state_dict())
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(tmp / STATE_TENSORS))
        meta = {
            **extra,
            "optimizer": optim_meta,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "python_random": random.getstate(),
        }
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1))
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_training_state(folder: Path, optimizer, scheduler) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states from a checkpoint; returns its extras."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
        meta = json.loads((folder / STATE_JSON).read_text())
    except Exception as err:  # safetensors and json raise their own types
        raise ValueError(f"{folder}: unreadable checkpoint ({err})") from err
    optimizer.load_state_dict(_optimizer_from_flat(tensors, meta.pop("optimizer")))
    sched = meta.pop("scheduler")
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    torch.set_rng_state(tensors["rng.torch"])
    state = meta.pop("python_random")
    random.setstate((state[0], tuple(state[1]), state[2]))
    return meta


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The complete checkpoint with the highest step under `checkpoints`, if any."""
    checkpoints = Path(checkpoints)
    if not checkpoints.is_dir():
        return None
    done = [p for p in checkpoints.glob("step-*") if (p / STATE_JSON).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)
