"""The README and docs/api.md: their Python examples run as written, the README starts with
the two set-up commands, and it stays a user's guide (short, one number a table cell)."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def run_blocks(path: Path) -> list[dict]:
    """Run every ```python block of a file (but those that need a downloaded model)."""
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    namespaces = []
    for code in blocks:
        if "needs a downloaded model folder" in code:
            continue
        namespace: dict = {}
        exec(compile(code, str(path), "exec"), namespace)
        namespaces.append(namespace)
    return namespaces


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples may save files
    (quickstart,) = run_blocks(README)
    assert quickstart["y"].shape == (2, 5, 512) and quickstart["weights"].shape == (2, 5, 9)
    assert quickstart["weights"][1, :, 6:].abs().max() == 0  # padding gets no attention
    out, maps = quickstart["out"], quickstart["maps"]
    assert out.shape[0] == 2 and out.shape[1] <= 11
    assert len(maps) == 2 and maps[0].shape[0] == 2 and maps[0].shape[2] == 12  # (B, N, S)


def test_api_guide_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    attention, model, tasks, loss, explorer = run_blocks(ROOT / "docs" / "api.md")
    assert explorer["page"].html.count('class="xae"') == 1
    assert (tmp_path / "explorer.html").read_text().startswith("<!doctype html>")
    assert attention["y"].shape == (2, 1, 512)  # the last decoding step's output
    assert model["logits"].shape == (2, 7, 1000)
    logits, targets = loss["logits"].flatten(0, 1), loss["tgt"][:, 1:].flatten()
    expected = torch.nn.functional.cross_entropy(logits, targets, ignore_index=0, reduction="sum")
    torch.testing.assert_close(loss["loss"], expected)
    assert loss["model"].lm_head.weight.grad is not None
    maps, gold, heads = tasks["maps"], tasks["gold"], tasks["heads"]
    assert len(maps) == 30 and maps[0].dim() == 4 and heads
    hits = total = 0  # the printed rate, counted by hand over the chosen heads' mean
    for m, links in zip(maps, gold, strict=True):
        mean = sum(m[layer, head] for layer, head in heads) / len(heads)
        for row, link in zip(mean, links or [], strict=False):
            total, hits = total + bool(link), hits + (bool(link) and int(row.argmax()) in link)
    assert tasks["rate"] == hits / total


def test_readme_starts_with_the_two_commands_and_stays_a_guide():
    text = README.read_text()
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].startswith("make demo")
    assert first_block.splitlines()[1].startswith("make test")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert len(text) < 12000
    cells = [c for line in text.splitlines() if line.startswith("|") for c in line.split("|")]
    assert max(len(c) for c in cells) <= 300
    assert "RESULT" not in text  # every figure filled in
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
