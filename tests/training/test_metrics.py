"""Alignment metrics: the peak hit rate, every head's own rate, the chosen alignment head."""

import pytest
import torch

from xattn.training.metrics import (
    alignment_heads,
    alignment_hit_rate,
    describe_alignment_head,
    head_hit_rates,
)


def one_hot_rows(peaks: list[int], sources: int) -> torch.Tensor:
    """(N, S) attention rows peaking at the given source positions."""
    rows = torch.full((len(peaks), sources), 0.1)
    rows[torch.arange(len(peaks)), torch.tensor(peaks)] = 1.0
    return rows.softmax(-1)


def test_hit_rate_counts_peaks_on_gold_and_skips_words_without_gold():
    maps = [one_hot_rows([0, 2, 1], 4), one_hot_rows([3], 4)]
    gold = [[[0], [1, 2], []], [[2]]]  # hit, hit, skipped; miss
    assert alignment_hit_rate(maps, gold) == pytest.approx(2 / 3)
    assert alignment_hit_rate([], []) == 0.0


def test_every_head_is_scored_on_its_own():
    gold = [[[0], [1], [2]], [[1], [0]]]
    words = [3, 2]
    # layer 1: head 1 follows the gold, head 2 always looks at position 0;
    # layer 2: head 1 is one position late, head 2 follows the gold on the first example only
    maps = []
    for i, n in enumerate(words):
        right = [g[0] for g in gold[i]]
        heads = [[right, [0] * n], [[min(3, p + 1) for p in right], right if i == 0 else [3] * n]]
        maps.append(torch.stack([torch.stack([one_hot_rows(p, 4) for p in layer])
                                 for layer in heads]))  # fmt: skip
    assert maps[0].shape == (2, 2, 3, 4)
    table = head_hit_rates(maps, gold)
    assert table.shape == (2, 2)
    expected = torch.tensor([[1.0, 2 / 5], [0.0, 3 / 5]])
    torch.testing.assert_close(table, expected, check_dtype=False)
    # each entry is alignment_hit_rate of that head's maps alone
    assert table[1, 1] == pytest.approx(alignment_hit_rate([m[1, 1] for m in maps], gold))


def test_the_alignment_head_is_chosen_on_validation_and_reported_on_test():
    valid = torch.tensor([[0.2, 0.9], [0.5, 0.4]])
    test = torch.tensor([[0.3, 0.7], [0.99, 0.1]])  # the best test head is not the one chosen
    heads = alignment_heads(valid, test)
    assert heads["alignment_head"] == [1, 2]  # layer 1, head 2, counting from 1
    assert heads["alignment_head_hit_rate"] == pytest.approx(0.7)
    assert heads["alignment_hit_rate_per_head"] == test.tolist()
    line = describe_alignment_head(heads)
    assert "(layer 1, head 2): 70.0%" in line
    with pytest.raises(ValueError, match=r"head tables of shapes \(2, 2\) and \(1, 2\)"):
        alignment_heads(valid, test[:1])
