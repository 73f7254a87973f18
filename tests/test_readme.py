"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples may save files
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    runnable = [b for b in blocks if "needs a downloaded model folder" not in b]
    assert len(runnable) >= 2, "the README has runnable Python examples"
    results = []
    for code in runnable:
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)
        results.append(namespace)
    assert results[0]["y"].shape == (2, 1, 512)  # attention API: the last step's output
    out, res = results[1]["out"], results[1]["res"]  # model API
    assert out.shape[0] == 2 and out.shape[1] <= 11
    assert len(res.cross_attention) == 2
    assert res.cross_attention[0].shape[::2] == (2, 12)  # (B, N, S)


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].startswith("make demo")
    assert first_block.splitlines()[1].startswith("make test")
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
