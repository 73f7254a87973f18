"""The attention explorer in a real browser (Playwright driving Debian's Chromium): it loads
with every network request blocked and no console errors, colours each source cell by the
weights it was given for the chosen token and map, switches maps from the menu and the model
view, works from the keyboard, draws images, spectrograms and audio, and two explorers on
one page keep to themselves."""

import numpy as np
import pytest
import torch

from tests.browser import Page, save_screenshot
from xattn.viz.explorer import (
    ExplorerExample,
    audio_source,
    explorer,
    image_source,
    quantize_rows,
    text_source,
)


def screenshot_pixels(png: bytes) -> np.ndarray:
    """(height, width, channels) floats in [0, 1] of a PNG screenshot."""
    import io

    from matplotlib import image

    return image.imread(io.BytesIO(png), format="png")


def maps(L=2, H=2, T=4, S=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(L, H, T, S, generator=g) * 2, -1)


def expected_alphas(weights, t, factor=1.0):
    """The alpha of each source cell for token t: its 8-bit level over 255 (Chromium keeps
    alpha in 8 bits and prints it to 2-3 decimals, hence the tests' 0.005 tolerance)."""
    levels, _ = quantize_rows(weights)
    return [round(factor * lv / 255, 3) for lv in levels[t]]


def text_example(seed=0):
    src = ["the", "red", "car", "</s>"]
    tgt = ["el", "coche", "rojo", "</s>"]
    return ExplorerExample(
        text_source(src),
        tgt,
        maps(T=4, S=4, seed=seed),
        name="the red car",
        generated=[("el", 0.97), ("coche", 0.88), ("azul", 0.41), ("</s>", 0.99)],
        reference=["el", "coche", "rojo", "</s>"],
    )


def test_quantized_rows_keep_each_rows_shape():
    w = maps(T=3, S=7)
    levels, peaks = quantize_rows(w)
    assert levels.dtype == np.uint8 and levels.shape == (2, 2, 3, 7)
    assert (levels.max(-1) == 255).all()
    restored = torch.from_numpy(levels / 255 * peaks[..., None])
    assert (restored - w).abs().max() < w.amax() / 255


def test_text_page_offline_hover_maps_model_view_keyboard(browser, tmp_path):
    example = text_example()
    heads = [(0, 1), (1, 0)]
    path = explorer([example], title="What each Spanish word looked at", alignment_heads=heads)
    path = path.save(tmp_path / "page.html")
    assert "http" not in path.read_text().replace("http-equiv", "")  # nothing to fetch
    page = Page(browser, path)
    p = page.page
    aligned = torch.stack([example.maps[a, b] for a, b in heads]).mean(0)
    assert (
        p.eval_on_selector(".xae-map", "s => s.selectedOptions[0].textContent") == "alignment heads"
    )
    for k in range(4):
        p.hover(f".xae-tok[data-index='{k}']")
        assert page.alphas() == pytest.approx(expected_alphas(aligned, k), abs=0.005)
    # another map from the menu: the colours are that head's
    p.select_option(".xae-map", label="layer 2 head 1")
    p.hover(".xae-tok[data-index='2']")
    assert page.alphas() == pytest.approx(expected_alphas(example.maps[1, 0], 2), abs=0.005)
    # the model view: click layer 1 head 2
    p.click(".xae-models summary")
    p.click(".xae-thumb[data-map='1']")
    assert p.eval_on_selector(".xae-map", "s => s.value") == "1"
    assert page.alphas() == pytest.approx(expected_alphas(example.maps[0, 1], 2), abs=0.005)
    # the keyboard: focus the first token, then arrow right twice
    p.focus(".xae-tok[data-index='0']")
    p.keyboard.press("ArrowRight")
    p.keyboard.press("ArrowRight")
    pressed = p.eval_on_selector_all(
        ".xae-tok", "ts => ts.map(t => t.getAttribute('aria-pressed'))"
    )
    assert pressed == ["false", "false", "true", "false"]
    assert page.alphas() == pytest.approx(expected_alphas(example.maps[0, 1], 2), abs=0.005)
    # the hard alignment of the map shown: each Spanish word's peak among the English words
    peaks = [int(example.maps[0, 1][t, :3].argmax()) for t in range(3)]
    links = " ".join(f"{s}-{t}" for s, t in sorted((s, t) for t, s in enumerate(peaks)))
    assert p.inner_text(".xae-pharaoh") == links
    assert "azul 41%" in p.inner_text(".xae-info")  # what the model produced, and how sure
    assert p.eval_on_selector_all(".xae-diff", "d => d.length") == 1  # where it differs
    assert page.requests == [] and page.errors == []
    page.close()


def test_image_and_audio_sources(browser, tmp_path):
    rng = np.random.default_rng(0)
    image = np.zeros((12, 48), np.float32)
    image[2:10, 4:12] = 1.0  # one glyph
    rows, cols = 3, 12
    caption = ExplorerExample(
        image_source(image, rows, cols) | {"labels": [f"r{k % 3}c{k // 3}" for k in range(36)]},
        ["seven", "</s>"],
        maps(T=2, S=36, seed=1),
    )
    rate, seconds = 8000, 1.2
    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(
        np.float32
    )
    mel = rng.normal(size=(120, 40)).astype(np.float32)
    speech = ExplorerExample(
        audio_source(
            mel,
            0.04,
            0.01,
            samples=samples,
            sample_rate=rate,
            spans=[(0.2, 0.5), (0.7, 1.0)],
            words=[("one", 0.2, 0.5), ("two", 0.7, 1.0)],
        )
        | {"labels": [f"{0.04 * k:.2f}s" for k in range(30)]},
        ["one", "two", "</s>"],
        maps(T=3, S=30, seed=2),
    )
    for name, example, factor in (("caption", caption, 0.8), ("speech", speech, 1.0)):
        path = explorer([example], title=name).save(tmp_path / f"{name}.html")
        page = Page(browser, path)
        p = page.page
        p.hover(".xae-tok[data-index='1']")
        mean = example.maps.mean((0, 1))
        assert page.alphas() == pytest.approx(expected_alphas(mean, 1, factor), abs=0.005)
        canvas = p.locator(".xae-source canvas")
        assert canvas.count() == 1
        pixels = screenshot_pixels(canvas.screenshot())
        assert pixels.std() > 0.05 and pixels.shape[0] > 40  # drawn, not blank
        if name == "speech":
            src = p.eval_on_selector("audio", "a => a.src")
            assert src.startswith("data:audio/wav;base64,") and len(src) > 10000
            assert p.eval_on_selector("audio", "a => a.controls")
            left = p.eval_on_selector(".xae-span", "s => s.style.left")
            assert float(left.rstrip("%")) == pytest.approx(100 * 0.7 / 1.2, abs=0.1)
            assert "one" in p.inner_text(".xae-words")
        save_screenshot(page, f"explorer-unit-{name}")
        assert page.requests == [] and page.errors == []
        page.close()


def test_two_explorers_on_one_page_keep_to_themselves(browser, tmp_path):
    one, two = explorer([text_example(0)]), explorer([text_example(1)])
    path = tmp_path / "both.html"
    path.write_text(f"<!doctype html><html><body>{one.html}{two.html}</body></html>")
    page = Page(browser, path)
    p = page.page
    roots = p.eval_on_selector_all(".xae", "rs => rs.map(r => r.id)")
    assert len(roots) == 2 and roots[0] != roots[1]
    before = page.alphas(f"#{roots[1]}")
    p.hover(f"#{roots[0]} .xae-tok[data-index='2']")
    assert page.alphas(f"#{roots[1]}") == before  # the other explorer did not move
    mean = text_example(0).maps.mean((0, 1))
    assert page.alphas(f"#{roots[0]}") == pytest.approx(expected_alphas(mean, 2), abs=0.005)
    assert page.errors == []
    page.close()


def test_a_512_by_512_map_opens_and_answers_hover(browser, tmp_path):
    S = T = 512
    example = ExplorerExample(
        text_source([f"s{i}" for i in range(S)]), [f"t{i}" for i in range(T)], maps(1, 2, T, S)
    )
    path = explorer([example]).save(tmp_path / "big.html")
    assert path.stat().st_size < 2 * 4 * T * S  # levels stored once, 8 bits each
    page = Page(browser, path)
    page.page.hover(".xae-tok[data-index='300']")
    mean = example.maps.mean((0, 1))
    assert page.alphas()[:50] == pytest.approx(expected_alphas(mean, 300)[:50], abs=0.005)
    assert page.errors == []
    page.close()


def test_bad_inputs_are_named():
    with pytest.raises(
        ValueError, match=r"maps have shape \(2, 2, 3, 4\); expected \(L, H, T, S\)"
    ):
        explorer([ExplorerExample(text_source(list("abcd")), ["x", "y"], maps(T=3, S=4))])
    with pytest.raises(ValueError, match="3 source labels for 4 memory positions"):
        explorer([ExplorerExample(text_source(list("abc")), list("xyz"), maps(T=3, S=4))])
    with pytest.raises(ValueError, match="at least one example"):
        explorer([])
