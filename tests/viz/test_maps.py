"""Attention pictures: PNG files, the HTML page, the loss curve, and shape errors."""

import json

import pytest
import torch

from xattn.viz import attention_html, plot_attention, plot_attention_grid, plot_loss_curve

PNG = b"\x89PNG\r\n\x1a\n"
SRC, TGT = ["the", "red", "car", "</s>"], ["el", "coche", "rojo", "</s>"]


def weights(T=4, S=4):
    return torch.softmax(torch.randn(T, S), -1)


def test_heatmap_and_grid_are_pngs(tmp_path):
    path = plot_attention(weights(), SRC, TGT, tmp_path / "a.png", title="the red car")
    assert path.read_bytes().startswith(PNG)
    maps = [torch.softmax(torch.randn(4, 4, 4), -1) for _ in range(2)]  # 2 layers, 4 heads
    grid = plot_attention_grid(maps, SRC, TGT, tmp_path / "g.png")
    assert grid.read_bytes().startswith(PNG) and grid.stat().st_size > path.stat().st_size


def test_shape_errors_name_the_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"weights have shape \(3, 4\); expected \(T, S\) = "
                                         r"\(4, 4\)"):  # fmt: skip
        plot_attention(weights(3, 4), SRC, TGT, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"a layer map has shape \(4, 4, 3\)"):
        plot_attention_grid([torch.rand(4, 4, 3)], SRC, TGT, tmp_path / "g.png")


def test_html_page_is_self_contained_and_holds_the_weights(tmp_path):
    w = weights()
    page = attention_html([(SRC, TGT, w), (["a", "<b>"], ["x"], torch.tensor([[0.25, 0.75]]))],
                          tmp_path / "p.html")  # fmt: skip
    text = page.read_text()
    assert text.count('class="pair"') == 2
    assert "&lt;b&gt;" in text and "<b>" not in text.split("<body>")[1].split("<script>")[0]
    assert "http" not in text  # nothing to fetch
    assert "mouseenter" in text
    rows = json.loads(text.split('data-weights="')[1].split('"')[0].replace("&quot;", '"'))
    assert rows == [[round(float(x), 4) for x in r] for r in w]


def test_loss_curve(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [{"step": i, "split": "train", "loss": 3.0 / i} for i in range(1, 20)]
    records.append({"step": 10, "split": "valid", "loss": 0.5})
    metrics.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert plot_loss_curve(metrics, tmp_path / "loss.png").read_bytes().startswith(PNG)


def test_passage_picture_takes_one_row_per_answer_word(tmp_path):
    from xattn.viz import plot_passage_attention

    sentences = ["mary took the apple .", "john went to the park .", "mary went to the hall ."]
    two = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8]])  # "mary", then "hall"
    path = plot_passage_attention(sentences, two, "where is the apple ?", ["mary", "hall"],
                                  tmp_path / "p.png")  # fmt: skip
    assert path.read_bytes().startswith(PNG)
    one = plot_passage_attention(sentences, two[1], "where is mary ?", "hall", tmp_path / "o.png")
    assert one.read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match=r"weights have shape \(2, 3\); expected \(A=1, N=3\)"):
        plot_passage_attention(sentences, two, "where is mary ?", "hall", tmp_path / "x.png")
