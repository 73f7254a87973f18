"""xattn.alignment: hit rates, every head's own rate, the alignment heads, hard alignments,
Pharaoh links and the word-alignment measures (precision, recall, AER)."""

import itertools

import numpy as np
import pytest
import torch

from xattn.alignment import (
    alignment_error_rate,
    alignment_heads,
    choose_alignment_heads,
    describe_alignment_heads,
    hard_alignment,
    head_hit_rates,
    head_mean,
    head_names,
    heads_hit_rate,
    hit_rate,
    pharaoh,
    read_pharaoh,
)


def one_hot_rows(peaks: list[int], sources: int) -> torch.Tensor:
    """(N, S) attention rows peaking at the given source positions."""
    rows = torch.full((len(peaks), sources), 0.1)
    rows[torch.arange(len(peaks)), torch.tensor(peaks)] = 1.0
    return rows.softmax(-1)


def test_hit_rate_counts_peaks_on_gold_and_skips_words_without_gold():
    maps = [one_hot_rows([0, 2, 1], 4), one_hot_rows([3], 4)]
    gold = [[[0], [1, 2], []], [[2]]]  # hit, hit, skipped; miss
    assert hit_rate(maps, gold) == pytest.approx(2 / 3)
    assert hit_rate([], []) == 0.0
    assert hit_rate([*maps, one_hot_rows([1], 4)], [*gold, None]) == pytest.approx(2 / 3)


def test_every_head_is_scored_on_its_own():
    gold = [[[0], [1], [2]], [[1], [0]]]
    words = [3, 2]
    # layer 1: head 1 follows the gold, head 2 always looks at position 0;
    # layer 2: head 1 is one position late, head 2 follows the gold on the first example only
    maps = []
    for i, n in enumerate(words):
        right = [g[0] for g in gold[i]]
        heads = [[right, [0] * n], [[min(3, p + 1) for p in right], right if i == 0 else [3] * n]]
        maps.append(
            torch.stack([torch.stack([one_hot_rows(p, 4) for p in layer]) for layer in heads])
        )
    assert maps[0].shape == (2, 2, 3, 4)
    table = head_hit_rates(maps, gold)
    assert table.shape == (2, 2)
    expected = torch.tensor([[1.0, 2 / 5], [0.0, 3 / 5]])
    torch.testing.assert_close(table, expected, check_dtype=False)
    # each entry is alignment_hit_rate of that head's maps alone
    assert table[1, 1] == pytest.approx(hit_rate([m[1, 1] for m in maps], gold))


def rows(weights: list[dict[int, float]], sources: int = 5) -> torch.Tensor:
    """(N, S) attention rows with the given weights; the rest spread over the other positions."""
    out = torch.zeros(len(weights), sources)
    for i, row in enumerate(weights):
        rest = [p for p in range(sources) if p not in row]
        out[i, rest] = (1 - sum(row.values())) / len(rest)
        for position, weight in row.items():
            out[i, position] = weight
    return out


def complementary_heads() -> tuple[list[torch.Tensor], list]:
    """One example of three words with gold 0, 1, 2 and four heads in two layers: head
    (0, 0) and head (0, 1) each hit one word alone, their mean hits all three; heads
    (1, 0) and (1, 1) always peak on position 4, and so does the mean of all four."""
    a = rows([{0: 0.40, 3: 0.45}, {1: 0.60, 3: 0.30}, {2: 0.40, 3: 0.45}])
    b = rows([{0: 0.60, 4: 0.30}, {1: 0.40, 4: 0.45}, {2: 0.40, 4: 0.45}])
    wrong = rows([{4: 0.9}] * 3)
    return [torch.stack([torch.stack([a, b]), torch.stack([wrong, wrong])])], [[[0], [1], [2]]]


def test_alignment_heads_are_grown_greedily_from_the_best_head():
    maps, gold = complementary_heads()
    assert maps[0].shape == (2, 2, 3, 5)
    assert heads_hit_rate(maps, gold, [(0, 0)]) == pytest.approx(1 / 3)
    assert heads_hit_rate(maps, gold, [(0, 1)]) == pytest.approx(1 / 3)
    assert heads_hit_rate(maps, gold, [(0, 0), (0, 1)]) == 1.0
    assert hit_rate([m.mean((0, 1)) for m in maps], gold) == 0.0  # all four: all miss
    assert choose_alignment_heads(maps, gold) == [(0, 0), (0, 1)]
    # a head joins only if it adds at least min_gain: here the pair's 2/3 is not enough
    assert choose_alignment_heads(maps, gold, min_gain=0.7) == [(0, 0)]
    with pytest.raises(ValueError, match=r"alignment heads \[\]: expected \(layer, head\) pairs"):
        heads_hit_rate(maps, gold, [])
    with pytest.raises(ValueError, match="no attention maps"):
        choose_alignment_heads([], [])


def test_all_heads_are_chosen_when_no_subset_does_better():
    maps, gold = complementary_heads()
    same = [m[:1, :1].expand(2, 2, -1, -1) for m in maps]  # four copies of head (0, 0)
    assert choose_alignment_heads(same, gold) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_alignment_heads_are_chosen_on_validation_and_reported_on_test():
    valid, gold = complementary_heads()
    test = [valid[0].flip(0)]  # on the test maps the chosen heads miss everything
    heads = alignment_heads((valid, gold), (test, gold))
    assert heads["alignment_heads"] == [[0, 0], [0, 1]]  # counting from 0, like the config
    assert heads["alignment_heads_trained"] is False
    assert heads["alignment_heads_valid_hit_rate"] == 1.0
    assert heads["alignment_heads_hit_rate"] == 0.0
    assert heads["alignment_hit_rate_per_head"] == [[0.0, 0.0], [1 / 3, 1 / 3]]
    line = describe_alignment_heads(heads)
    assert "validation split: layer 1 head 1 + layer 1 head 2: 0.0% of test words" in line
    every = dict(heads, alignment_heads=[[0, 0], [0, 1], [1, 0], [1, 1]])
    assert "all of them" in describe_alignment_heads(every)
    with pytest.raises(ValueError, match=r"different layers x heads: \[\(1, 2\), \(2, 2\)\]"):
        alignment_heads((valid, gold), ([test[0][:1]], gold))


def test_a_head_trained_to_align_is_the_choice_even_where_another_peaks_as_well():
    maps, gold = complementary_heads()
    # head (1, 1) misses every word here, yet training taught it the spans: it is read
    assert choose_alignment_heads(maps, gold, trained=(-1, 1)) == [(1, 1)]
    assert choose_alignment_heads(maps, gold, trained=(0, 1)) == [(0, 1)]
    heads = alignment_heads((maps, gold), (maps, gold), trained=(-1, 0))
    assert heads["alignment_heads"] == [[1, 0]] and heads["alignment_heads_hit_rate"] == 0.0
    assert heads["alignment_heads_trained"] is True
    assert "trained to align: layer 2 head 1" in describe_alignment_heads(heads)
    for wrong in ((2, 0), (-3, 0), (0, 2)):
        with pytest.raises(ValueError, match=r"trained alignment head .*2 layers x 2 heads"):
            choose_alignment_heads(maps, gold, trained=wrong)


def test_head_mean_of_chosen_or_all_heads():
    maps, _ = complementary_heads()
    layers = list(maps[0])  # two (H, N, S) maps, as the decoder returns them
    torch.testing.assert_close(head_mean(layers), maps[0].mean((0, 1)))
    torch.testing.assert_close(head_mean(maps[0], [(1, 1)]), maps[0][1, 1])
    torch.testing.assert_close(
        head_mean(layers, [(0, 0), (1, 0)]), (maps[0][0, 0] + maps[0][1, 0]) / 2
    )
    with pytest.raises(ValueError, match=r"\[\[0, 2\]\]: .* within 2 layers x 2 heads"):
        head_mean(layers, [(0, 2)])
    assert head_names([(0, 0), (1, 2)]) == "layer 1 head 1 + layer 2 head 3"  # from 0 to 1


def test_hard_alignment_takes_each_rows_peak_among_the_words():
    weights = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8]])  # (T, S)
    assert hard_alignment(weights) == [(1, 0), (0, 1), (2, 2)]  # (source, target)
    # the end token's row and column left out: the last row is dropped, and the peak of
    # row 2 among the first two columns is column 0
    assert hard_alignment(weights, sources=2, targets=2) == [(1, 0), (0, 1)]
    assert hard_alignment(weights[:, :0]) == []
    with pytest.raises(ValueError, match=r"shape \(3,\); expected \(T, S\)"):
        hard_alignment(weights[0])


def test_pharaoh_lines_round_trip():
    links = [(2, 1), (0, 0), (1, 2), (0, 0)]
    assert pharaoh(links) == "0-0 1-2 2-1"  # sorted, each link once
    assert read_pharaoh("0-0 1-2 2-1") == [(0, 0), (1, 2), (2, 1)]
    assert read_pharaoh("0-0 3?4") == [(0, 0), (3, 4)]  # a possible link reads as a link
    assert pharaoh([]) == "" and read_pharaoh("") == []
    with pytest.raises(ValueError, match="line 7: '1-x' is not a source-target link"):
        read_pharaoh("0-0 1-x", where="line 7")


def test_alignment_error_rate_against_sure_and_possible_links():
    predicted = [{(0, 0), (1, 1), (2, 1)}, {(0, 0)}]
    sure = [{(0, 0), (1, 1)}, {(1, 0)}]
    possible = [{(2, 1)}, set()]  # P = S plus these
    scores = alignment_error_rate(predicted, sure, possible)
    # |A| = 4, |S| = 3, |A & S| = 2, |A & P| = 3
    assert scores.precision == pytest.approx(3 / 4)
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.aer == pytest.approx(1 - (2 + 3) / (4 + 3))
    perfect = alignment_error_rate(sure, sure)
    assert (perfect.precision, perfect.recall, perfect.aer) == (1.0, 1.0, 0.0)
    without_possible = alignment_error_rate(predicted, sure)
    assert without_possible.precision == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match=r"different numbers of sentences: \[2, 1\]"):
        alignment_error_rate(predicted, sure[:1])
    with pytest.raises(ValueError, match="no links to score"):
        alignment_error_rate([set()], [set()])


def test_timing_scores_of_word_spans():
    from xattn.alignment import timing_scores

    gold = [[(0.10, 0.50), (0.70, 1.00)], [(0.20, 0.40)]]
    predicted = [[(0.12, 0.58), (0.70, 0.90)], [(0.36, 0.40)]]
    scores = timing_scores(predicted, gold)
    assert scores["start_error"] == pytest.approx((0.02 + 0.0 + 0.16) / 3)
    assert scores["end_error"] == pytest.approx((0.08 + 0.10 + 0.0) / 3)
    # boundaries off by 0.02, 0.08, 0, 0.10, 0.16, 0: within 50 ms 3 of 6, within 100 ms 5
    assert scores["f1_50ms"] == pytest.approx(3 / 6) and scores["f1_100ms"] == pytest.approx(5 / 6)
    ious = [0.38 / 0.48, 0.20 / 0.30, 0.04 / 0.20]
    assert scores["iou"] == pytest.approx(sum(ious) / 3)
    assert timing_scores(gold, gold)["boundary_error"] == 0.0
    with pytest.raises(ValueError, match="1 predicted spans for 2 gold words"):
        timing_scores([[(0.1, 0.2)]], [gold[0]])


class ShiftedTiming:
    """A task whose word times are off by an amount set by its timing settings: exact at
    pause level -3.5 with width 3; each step of width adds 10 ms, each half level 60 ms."""

    def __init__(self):
        self.timing = {"median_filter_width": 1, "pause_log_weight": -4.0, "other": "kept"}

    def word_spans(self, maps, heads, example):
        assert self.timing["other"] == "kept"
        off = 0.12 * abs(self.timing["pause_log_weight"] + 3.5)
        off += 0.005 * abs(self.timing["median_filter_width"] - 3)
        gold = [(example, example + 0.3), (example + 0.5, example + 0.6)]
        return [(a + off, b - off) for a, b in gold], gold


def test_choose_timing_picks_the_settings_that_time_validation_best():
    from xattn.alignment import choose_timing

    task = ShiftedTiming()
    chosen = choose_timing(task, [None] * 4, [(0, 0)], [0.0, 0.4, 1.0, 2.0])
    assert chosen == {"median_filter_width": 3, "pause_log_weight": -3.5, "other": "kept"}
    assert task.timing["pause_log_weight"] == -4.0  # the task is left as it was
    task.timing = {"median_filter_width": 3}  # no pause rows in the recipe: nothing to choose
    assert choose_timing(task, [None], [(0, 0)], [0.0]) is None


def test_token_times_with_pause_rows_find_spans_in_silence():
    """Heads that spread over each word: the pause rows take the silence before, between
    and after the words, so each word's span is its own (the last word does not stretch
    to the end). Whisper's recipe (no pause rows) gives the leading silence to the first
    word."""
    from xattn.alignment import token_times

    S, spans = 40, [(5, 12), (18, 25), (30, 36)]
    weights = torch.full((3, S), 1e-4)
    for t, (a, b) in enumerate(spans):
        weights[t, a:b] = 1.0 / (b - a)
    rows = torch.stack([weights, weights])  # two heads
    timed = token_times(rows, 0.04, median_filter_width=3, pause_log_weight=-4.0)
    found = [
        (round(s / 0.04), round(e / 0.04)) for s, e in zip(timed.starts, timed.ends, strict=True)
    ]
    assert found == spans
    whisper = token_times(rows, 0.04, median_filter_width=3)
    assert whisper.starts[0] == 0.0  # the first row must start the path
    assert whisper.starts[1:3] == pytest.approx([s * 0.04 for s, _ in spans[1:]], abs=0.13)


def _labellings(T: int, S: int):
    """Every labelling of S positions as pause (-1) or token 0..T-1: tokens in order, each
    on one run of at least one position."""
    for labels in itertools.product(range(-1, T), repeat=S):
        tokens = [k for k in labels if k >= 0]
        runs = [k for i, k in enumerate(tokens) if i == 0 or tokens[i - 1] != k]
        contiguous = (
            all(
                labels[j] == k
                for k in range(T)
                for j in range(labels.index(k), S - labels[::-1].index(k))
            )
            if runs == list(range(T))
            else False
        )
        if contiguous:
            yield labels


@pytest.mark.parametrize("seed", range(8))
def test_pause_alignment_is_the_best_labelling(seed):
    """pause_alignment against brute force on small matrices: its spans score the best of
    every labelling with pauses before, between and after the tokens."""
    from xattn.alignment import pause_alignment

    rng = np.random.default_rng(seed)
    T, S, pause = int(rng.integers(1, 4)), int(rng.integers(3, 8)), -0.3
    score = rng.normal(size=(T, S))

    def total(labels):
        return sum(pause if k < 0 else score[k, j] for j, k in enumerate(labels))

    best = max(total(labels) for labels in _labellings(T, S))
    labels = [-1] * S
    for t, (a, b) in enumerate(pause_alignment(score, pause)):
        assert 0 <= a < b <= S and all(k == -1 for k in labels[a:b])
        labels[a:b] = [t] * (b - a)
    assert total(labels) == pytest.approx(best)
    assert [k for k in labels if k >= 0] == sorted(k for k in labels if k >= 0)
