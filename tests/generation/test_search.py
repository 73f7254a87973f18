"""Search on hand-made log-probabilities (no model): greedy, sampling, beam search."""

import math

import pytest
import torch

from xattn.generation import GenerationConfig, beam_search, greedy_search
from xattn.generation.search import beam_advance

START, EOS, PAD = 3, 0, 3


class TableStepper:
    """Log-probabilities looked up by prefix: the search under test sees only these."""

    def __init__(self, table, rows, default):
        self.table, self.default = table, default
        self.prefixes = [() for _ in range(rows)]
        self.calls = 0

    def step(self, tokens):
        self.calls += 1
        self.prefixes = [(*p, int(t)) for p, t in zip(self.prefixes, tokens[:, 0], strict=True)]
        probs = [self.table.get(p, self.default) for p in self.prefixes]
        return torch.tensor(probs).log(), None

    def reorder(self, indices):
        self.prefixes = [self.prefixes[int(i)] for i in indices]


class WholeSteps:
    """A search.BeamStepper over a table stepper: each beam_steps call takes the step and
    the search's arithmetic of that step together (what a compiled model's graph does),
    here in eager arithmetic; single steps (the search's fallback) go to the table."""

    def __init__(self, stepper, vocabulary=4):
        self.stepper, self.vocabulary, self.whole_steps = stepper, vocabulary, 0

    def step(self, tokens):
        return self.stepper.step(tokens)

    def reorder(self, indices):
        self.stepper.reorder(indices)

    def beam_steps(self, beams, bans, rule):
        at = rule.prompt - 1 + self.whole_steps  # the position of the tokens fed
        rows = beams.running.view(-1, beams.running.shape[-1])
        logits, _ = self.stepper.step(rows.index_select(1, at))
        log_probs = bans.apply(torch.log_softmax(logits.float(), -1), at + 1)
        new, indices, done = beam_advance(beams, log_probs, at + 1, rule)
        beams.copy_(new)
        self.stepper.reorder(indices)
        self.whole_steps += 1
        return done


@pytest.fixture(params=[False, True], ids=["steps", "whole-steps"])
def whole(request):
    """Beam search one step per call, and with the step and its search in one call."""
    return request.param


# V = 4: token 0 ends, 3 starts/pads. Greedy takes 1 (0.6) first; the best ending is 2 then end.
TABLE = {
    (3,): [0.0, 0.6, 0.4, 0.0],
    (3, 1): [0.1, 0.45, 0.45, 0.0],
    (3, 2): [0.9, 0.05, 0.05, 0.0],
    (3, 1, 1): [0.5, 0.3, 0.2, 0.0],
    (3, 1, 2): [0.4, 0.3, 0.3, 0.0],
}
DEFAULT = [0.5, 0.25, 0.25, 0.0]


def run_beams(num_beams=2, batch=1, whole=False, **kw):
    config = GenerationConfig(
        num_beams=num_beams, max_new_tokens=4, eos_token_id=EOS, pad_token_id=PAD, **kw
    )
    stepper = TableStepper(TABLE, batch * num_beams, DEFAULT)
    start = torch.full((batch * num_beams, 1), START)
    searched = WholeSteps(stepper) if whole else stepper
    result = beam_search(searched, start, config, batch_size=batch)
    if whole:
        assert searched.whole_steps == stepper.calls > 0
    return result, stepper


def test_beam_search_finds_the_better_ending_greedy_misses(whole):
    result, _ = run_beams(num_beams=2, whole=whole)
    assert result.sequences.tolist() == [[3, 2, 0]]
    assert result.scores.item() == pytest.approx(math.log(0.4 * 0.9) / 2, rel=1e-5)
    config = GenerationConfig(max_new_tokens=4, eos_token_id=EOS, pad_token_id=PAD)
    greedy = greedy_search(TableStepper(TABLE, 1, DEFAULT), torch.tensor([[START]]), config)
    assert greedy.sequences.tolist() == [[3, 1, 1, 0]]  # 0.45 ties go to the lower id


def test_return_sequences_are_ranked_by_length_normalized_score(whole):
    result, _ = run_beams(num_beams=2, num_return_sequences=2, early_stopping=True, whole=whole)
    assert result.sequences.tolist() == [[3, 2, 0, 3], [3, 1, 1, 0]]  # padded to one length
    expected = [math.log(0.36) / 2, math.log(0.6 * 0.45 * 0.5) / 3]
    assert result.scores.tolist() == pytest.approx(expected, rel=1e-5)


def path_log_prob(seq):
    """Sum of the table's log-probabilities along seq (start token first)."""
    return sum(math.log(TABLE.get(tuple(seq[:i]), DEFAULT)[seq[i]]) for i in range(1, len(seq)))


@pytest.mark.parametrize("early_stopping", [True, False])
def test_a_strong_length_penalty_prefers_the_longer_hypothesis(early_stopping, whole):
    result, _ = run_beams(
        num_beams=2, length_penalty=3.0, early_stopping=early_stopping, whole=whole
    )
    assert result.sequences.tolist() == [[3, 1, 1, 0]]
    assert result.scores.item() == pytest.approx(math.log(0.135) / 27, rel=1e-5)


def test_never_stopping_early_keeps_searching_for_longer_hypotheses(whole):
    result, _ = run_beams(num_beams=2, length_penalty=3.0, early_stopping="never", whole=whole)
    seq = result.sequences[0].tolist()
    assert len(seq) == 5 and seq[-1] == EOS  # longer than what the other modes return
    assert result.scores.item() == pytest.approx(path_log_prob(seq) / 4**3, rel=1e-5)
    assert result.scores.item() > math.log(0.135) / 27


def test_early_stopping_true_stops_once_enough_hypotheses_end(whole):
    _, eager = run_beams(num_beams=2, early_stopping=True, whole=whole)
    _, canonical = run_beams(num_beams=2, early_stopping="never", length_penalty=1.0, whole=whole)
    assert eager.calls == 3  # both top candidates of step 3 ended: done
    assert canonical.calls == 4  # "never" with a positive penalty runs to max length


class PerSourceStepper(TableStepper):
    """Each source has its own table: row i belongs to source i // beams, so a row that was
    handed another source's prefix by a wrong reorder would score with the wrong table."""

    def __init__(self, tables, beams):
        super().__init__(None, len(tables) * beams, DEFAULT)
        self.tables, self.beams = tables, beams

    def step(self, tokens):
        self.calls += 1
        self.prefixes = [(*p, int(t)) for p, t in zip(self.prefixes, tokens[:, 0], strict=True)]
        probs = [self.tables[i // self.beams].get(p, DEFAULT) for i, p in enumerate(self.prefixes)]
        return torch.tensor(probs).log(), None


SOURCE_TABLES = [
    TABLE,  # best: 2, end
    {(3,): [0.0, 0.9, 0.1, 0.0], (3, 1): [0.8, 0.1, 0.1, 0.0]},  # best: 1, end
    {(3,): [0.1, 0.2, 0.7, 0.0], (3, 2): [0.05, 0.05, 0.9, 0.0], (3, 2, 2): [0.9, 0.05, 0.05, 0.0]},
]


def test_sources_are_searched_independently(whole):
    config = GenerationConfig(num_beams=2, max_new_tokens=4, eos_token_id=EOS, pad_token_id=PAD)
    start = torch.full((3 * 2, 1), START)
    stepper = PerSourceStepper(SOURCE_TABLES, 2)
    together = beam_search(WholeSteps(stepper) if whole else stepper, start, config, 3)
    # each source's best, padded to the longest: what each source gives searched alone
    assert together.sequences.tolist() == [[3, 2, 0, 3], [3, 1, 0, 3], [3, 2, 2, 0]]
    for b, table in enumerate(SOURCE_TABLES):
        alone = beam_search(PerSourceStepper([table], 2), start[:2], config, batch_size=1)
        width = alone.sequences.shape[1]
        assert together.sequences[b, :width].tolist() == alone.sequences[0].tolist()
        assert together.scores[b].item() == pytest.approx(alone.scores[0].item())


@pytest.mark.parametrize("seed", range(4))
def test_whole_beam_steps_equal_single_steps_on_random_tables(seed):
    """With random tables over sources that end at different steps, a prompt, bans and a
    forced end, each length penalty and stopping mode: the same beams and scores from the
    search taken one step per call and with each step in one call; processors other than
    bans and forced tokens (a repetition penalty) take single steps."""
    g = torch.Generator().manual_seed(seed)
    V, B, K = 7, 3, 3
    table = {}

    class Lazy(TableStepper):
        def step(self, tokens):
            self.calls += 1
            self.prefixes = [(*p, int(t)) for p, t in zip(self.prefixes, tokens[:, 0], strict=True)]
            for p in self.prefixes:
                if p not in table:  # the source (its first token) sets how likely 0 (end) is
                    weights = torch.rand(V, generator=g) + torch.eye(V)[0] * p[0] / 2
                    table[p] = (weights / weights.sum()).tolist()
            return torch.tensor([table[p] for p in self.prefixes]).log(), None

    start = torch.tensor([[6, b] for b in range(1, B + 1) for _ in range(K)])
    base = dict(num_beams=K, max_new_tokens=6, eos_token_id=0, pad_token_id=6)
    settings = [
        dict(length_penalty=0.5, early_stopping=True, num_return_sequences=2),
        dict(length_penalty=1.5, early_stopping="never"),
        dict(early_stopping=False, min_new_tokens=3, suppress_tokens=[4]),
        dict(forced_eos_token_id=0, bad_words_ids=[[5]], length_penalty=-0.5),
        dict(repetition_penalty=1.3),
    ]
    for kw in settings:
        config = GenerationConfig(**base, **kw)
        single = beam_search(Lazy({}, B * K, None), start, config, B)
        whole = WholeSteps(Lazy({}, B * K, None), V)
        got = beam_search(whole, start, config, B)
        assert torch.equal(got.sequences, single.sequences), kw
        assert torch.equal(got.scores, single.scores), kw
        assert (whole.whole_steps == 0) == ("repetition_penalty" in kw)
    assert len({len(p) for p in table}) >= 4  # hypotheses of several lengths were searched


@pytest.mark.parametrize("seed", range(5))
def test_one_beam_equals_greedy_on_random_tables(seed):
    g = torch.Generator().manual_seed(seed)
    V = 6
    table = {}

    def dist(prefix):
        if prefix not in table:
            table[prefix] = torch.rand(V, generator=g).softmax(-1).tolist()
        return table[prefix]

    class Lazy(TableStepper):
        def step(self, tokens):
            self.prefixes = [(*p, int(t)) for p, t in zip(self.prefixes, tokens[:, 0], strict=True)]
            return torch.tensor([dist(p) for p in self.prefixes]).log(), None

    config = GenerationConfig(max_new_tokens=6, eos_token_id=0, pad_token_id=5)
    start = torch.full((2, 1), 5)
    greedy = greedy_search(Lazy({}, 2, None), start, config).sequences
    beams = beam_search(Lazy({}, 2, None), start, config.replace(num_beams=1), 2).sequences
    assert torch.equal(beams, greedy[:, : beams.shape[1]])


def test_greedy_pads_finished_rows_and_forces_the_end():
    table = {(3,): [0.9, 0.1, 0.0, 0.0]}
    config = GenerationConfig(
        max_new_tokens=3, eos_token_id=EOS, pad_token_id=PAD, forced_eos_token_id=EOS
    )
    stepper = TableStepper(table, 2, [0.1, 0.5, 0.4, 0.0])
    stepper.table[(3,)] = [0.9, 0.1, 0.0, 0.0]
    out = greedy_search(stepper, torch.full((2, 1), START), config).sequences
    assert out.tolist() == [[3, 0], [3, 0]]
    assert out.is_contiguous()  # the rows stopped early: a copy of the filled columns
    config = config.replace(min_new_tokens=1)
    out = greedy_search(
        TableStepper(table, 1, [0.1, 0.5, 0.4, 0.0]), torch.tensor([[3]]), config
    ).sequences
    assert out.tolist() == [[3, 1, 1, 0]]  # the end is forced at the last position


@pytest.mark.parametrize("n", [40, 8000, 32000, 51865 * 3])
@pytest.mark.parametrize("k", [2, 8, 16])
def test_top_candidates_equal_torch_topk(n, k):
    """Beam search's top-k over beams x vocabulary (chunked) gives torch.topk's values and
    indices on distinct values, padded vocabularies and small ones included."""
    from xattn.generation.search import _top

    torch.manual_seed(n + k)
    x = torch.randn(5, n)
    x[1, : n // 2] = -math.inf  # banned tokens, as processors leave them
    values, indices = _top(x, k)
    expected = torch.topk(x, k)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)


def test_top_candidates_with_ties_keep_the_tied_values():
    from xattn.generation.search import _top

    x = torch.randint(0, 3, (4, 32000)).float()  # thousands of entries tie at the top
    values, indices = _top(x, 16)
    assert torch.equal(values, torch.topk(x, 16).values)
    assert torch.equal(x.gather(1, indices), values)
    assert all(len(set(row.tolist())) == 16 for row in indices)


class ChunkSteps:
    """A search.GreedyStepper over a table stepper: each greedy_steps call takes k steps
    with their picks, bans and padding (what a compiled model's graph does), here in eager
    arithmetic, reading the rows' tokens from ids at its own length."""

    def __init__(self, stepper, k, vocabulary):
        self.stepper, self.steps_per_call, self.vocabulary = stepper, k, vocabulary
        self.length, self.ended_on_the_last_step = 0, False

    def step(self, tokens):
        return self.stepper.step(tokens)

    def reorder(self, indices):
        self.stepper.reorder(indices)

    def greedy_steps(self, ids, unfinished, bans, eos, pad):
        tokens, ended = ids[:, self.length], self.steps_per_call + 1
        for i in range(self.steps_per_call):
            at = torch.tensor([self.length + i])
            logits, _ = self.stepper.step(tokens[:, None])
            best = bans.apply(logits.float(), at + 1).argmax(-1)
            tokens = torch.where(unfinished, best, pad)
            unfinished &= ~eos[best]
            ids[:, self.length + i + 1] = tokens
            if ended > self.steps_per_call and not unfinished.any():
                ended = i + 1
        self.ended_on_the_last_step |= ended == self.steps_per_call
        self.length += self.steps_per_call
        return torch.tensor(ended)


def test_greedy_steps_several_per_call_equal_single_steps_on_random_tables():
    """Rows that end inside a call, all rows ending on a call's last step, steps past
    max_new_tokens and the bans: the same sequences as one step per call."""
    V, last_step_seen = 6, False
    for seed in range(40):
        for k in (1, 2, 3, 4):
            g = torch.Generator().manual_seed(seed)
            table = {}

            def dist(prefix, g=g, table=table):
                if prefix not in table:
                    logits = torch.randn(V, generator=g) * 2
                    table[prefix] = logits.softmax(-1).tolist()
                return table[prefix]

            class Lazy(TableStepper):
                def step(self, tokens, dist=dist):
                    self.prefixes = [
                        (*p, int(t)) for p, t in zip(self.prefixes, tokens[:, 0], strict=True)
                    ]
                    return torch.tensor([dist(p) for p in self.prefixes]).log(), None

            config = GenerationConfig(
                max_new_tokens=1 + seed % 7, eos_token_id=0, pad_token_id=5, min_new_tokens=1
            )
            start = torch.full((2, 1), 5)
            single = greedy_search(Lazy({}, 2, None), start, config).sequences
            chunks = ChunkSteps(Lazy({}, 2, None), k, V)
            assert torch.equal(greedy_search(chunks, start, config).sequences, single)
            last_step_seen |= k > 1 and chunks.ended_on_the_last_step
    assert last_step_seen
