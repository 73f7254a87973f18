"""Small helpers shared across the package: shapes in messages, JSON files, folder swaps,
padded batches."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["format_shape", "pad_batch", "read_json", "replace_dir"]


def format_shape(shape) -> str:
    """A shape as Python writes a tuple, for error messages: (2, 7, 48), (7,), ()."""
    return str(tuple(int(s) for s in shape))


def read_json(path: Path) -> dict:
    """A JSON object from a file, or ValueError naming the file and what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def replace_dir(new: Path, target: Path) -> None:
    """Move folder `new` to `target`, replacing an existing folder only once `new` is whole."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def pad_batch(rows: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Token id rows right-padded into ids (B, S) and a mask (B, S), True = real token."""
    S = max(len(r) for r in rows)
    ids = torch.full((len(rows), S), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), S, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask
