"""Attention pictures: PNG files, what each picture draws (the weights, peaks, shading and
spans it is given), the HTML page, the loss curve, and shape errors."""

import json

import pytest
import torch

from xattn.viz import plot_attention, plot_attention_grid, plot_loss_curve

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
    with pytest.raises(
        ValueError,
        match=r"weights have shape \(3, 4\); expected \(T, S\) = "
        r"\(4, 4\)",
    ):
        plot_attention(weights(3, 4), SRC, TGT, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"a layer map has shape \(4, 4, 3\)"):
        plot_attention_grid([torch.rand(4, 4, 3)], SRC, TGT, tmp_path / "g.png")


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
    path = plot_passage_attention(
        sentences, two, "where is the apple ?", ["mary", "hall"], tmp_path / "p.png"
    )
    assert path.read_bytes().startswith(PNG)
    one = plot_passage_attention(sentences, two[1], "where is mary ?", "hall", tmp_path / "o.png")
    assert one.read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match=r"weights have shape \(2, 3\); expected \(A=1, N=3\)"):
        plot_passage_attention(sentences, two, "where is mary ?", "hall", tmp_path / "x.png")


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions draw and save, kept open where they would be freed."""
    import matplotlib.pyplot as plt

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)
    yield figures
    monkeypatch.undo()
    for fig in figures:
        close(fig)


def test_heatmap_draws_the_weights_and_marks_each_rows_peak(tmp_path, drawn):
    w = torch.tensor(
        [[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6], [0.2, 0.5, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]]
    )
    plot_attention(w, SRC, TGT, tmp_path / "a.png")
    (ax,) = drawn[0].axes
    image = ax.images[0]
    assert torch.equal(torch.as_tensor(image.get_array().data), w)
    assert image.norm.vmin == 0 and image.norm.vmax == pytest.approx(0.7)  # darkest = peak
    peaks = ax.collections[0].get_offsets()
    assert peaks[:, 0].tolist() == [0, 3, 1, 0] and peaks[:, 1].tolist() == [0, 1, 2, 3]
    assert [t.get_text() for t in ax.get_xticklabels()] == SRC


def test_grid_draws_every_head_and_the_mean_and_labels_the_source_twice(tmp_path, drawn):
    maps = [torch.softmax(torch.randn(3, 4, 4), -1) for _ in range(2)]  # 2 layers, 3 heads
    plot_attention_grid(maps, SRC, TGT, tmp_path / "g.png")
    axes = drawn[0].axes
    assert len(axes) == 2 * 4  # layers x (heads + mean), row by row
    for index, ax in enumerate(axes):
        layer, head = divmod(index, 4)
        expected = maps[layer][head] if head < 3 else maps[layer].mean(0)
        torch.testing.assert_close(torch.as_tensor(ax.images[0].get_array().data), expected)
        labels = [t.get_text() for t in ax.get_xticklabels()]
        # the bottom row's first and head-mean columns name the source; the rest share them
        assert labels == (SRC if layer == 1 and head in (0, 3) else [])
        assert [t.get_text() for t in ax.get_yticklabels()] == (TGT if head == 0 else [])
    assert len(axes[3].collections) == 1 and not axes[2].collections  # peaks on the mean


def test_image_picture_overlays_each_words_heat_on_the_image(tmp_path, drawn):
    from xattn.viz import plot_image_attention

    image = torch.zeros(4, 8)
    image[:, 1:3] = 1.0  # a "glyph" in columns 1-2
    heat = torch.zeros(2, 4, 8)
    heat[0, :, 1:3] = 0.2  # word 0 reads the glyph, word 1 the empty right side
    heat[1, :, 6:] = 0.5
    plot_image_attention(image, heat, ["one", "none"], tmp_path / "i.png")
    axes = drawn[0].axes
    assert len(axes) == 3  # the input, then one row per word
    assert [ax.get_ylabel() for ax in axes] == ["input", "one", "none"]
    for ax, h in zip(axes[1:], heat, strict=True):
        under, over = ax.images
        assert torch.equal(torch.as_tensor(under.get_array().data), image)
        assert torch.equal(torch.as_tensor(over.get_array().data), h)
        assert over.norm.vmax == pytest.approx(float(h.max()))  # each word at its own scale


def test_passage_picture_shades_each_sentence_by_the_word_that_reads_it(tmp_path, drawn):
    import matplotlib

    from xattn.viz import plot_passage_attention

    sentences = ["mary took the apple .", "john went to the park .", "mary went to the hall ."]
    two = torch.tensor([[0.8, 0.15, 0.05], [0.1, 0.3, 0.6]])  # "mary", then "hall"
    plot_passage_attention(
        sentences, two, "where is the apple ?", ["mary", "hall"], tmp_path / "p.png"
    )
    texts = {t.get_text(): t for t in drawn[0].axes[0].texts}
    colours = [tuple(c[:3]) for c in matplotlib.colormaps["tab10"].colors]
    # sentence 0: word 0 at its peak; sentence 1: word 1 at half its peak; sentence 2: word 1
    expected = [(colours[0], 1.0), (colours[1], 0.5), (colours[1], 1.0)]
    for sentence, (colour, alpha) in zip(sentences, expected, strict=True):
        face = texts[sentence].get_bbox_patch().get_facecolor()
        assert face[:3] == pytest.approx(colour) and face[3] == pytest.approx(alpha)
    assert {"80.0%", "15.0%", "5.0%", "10.0%", "30.0%", "60.0%"} <= {k.strip() for k in texts}
    assert "Q: where is the apple ?   A: mary hall" in texts


def test_spectrogram_picture_puts_each_words_attention_under_its_time_span(tmp_path, drawn):
    from xattn.viz import plot_spectrogram_attention

    mel = torch.randn(40, 16)  # 40 frames of 10 ms: 0.4 s
    w = torch.tensor(
        [
            [0.6, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.2, 0.4, 0.1],
        ]
    )
    plot_spectrogram_attention(
        mel, w, ["two", "five"], tmp_path / "s.png", spans=[(0, 12), (20, 40)]
    )
    top, bottom = drawn[0].axes
    assert torch.equal(torch.as_tensor(top.images[0].get_array().data), mel.T)
    shown = torch.as_tensor(bottom.images[0].get_array().data)
    assert torch.allclose(shown, w / w.max(1, keepdim=True).values)  # each row peaks at 1
    assert bottom.images[0].get_extent()[:2] == [0, pytest.approx(0.4)]  # 10 x 4 frames
    assert [t.get_text() for t in bottom.get_yticklabels()] == ["two", "five"]
    spans = [line.get_xdata().tolist() for line in bottom.lines]
    assert spans == [[0, pytest.approx(0.12)], [pytest.approx(0.2), pytest.approx(0.4)]]
    with pytest.raises(
        ValueError,
        match=r"weights \(3, 10\) do not fit: expected mel "
        r"\(frames, F\) and weights \(T=2, S\)",
    ):
        plot_spectrogram_attention(mel, torch.rand(3, 10), ["two", "five"], tmp_path / "x.png")
