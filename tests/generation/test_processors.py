"""Logits processors against transformers' implementations on random cases."""

import pytest
import torch
from transformers.generation import logits_process as lp

from xattn.generation import GenerationConfig
from xattn.generation import processors as P


def random_case(seed, N=6, L=7, V=11):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (N, L), generator=g), torch.randn(N, V, generator=g) * 3


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "ours,theirs",
    [
        (lambda: P.repetition_penalty(1.7), lambda: lp.RepetitionPenaltyLogitsProcessor(1.7)),
        (lambda: P.no_repeat_ngram(2), lambda: lp.NoRepeatNGramLogitsProcessor(2)),
        (lambda: P.no_repeat_ngram(3), lambda: lp.NoRepeatNGramLogitsProcessor(3)),
        (
            lambda: P.bad_words([[4], [1, 2], [5, 6, 7], [0]], [0]),
            lambda: lp.NoBadWordsLogitsProcessor([[4], [1, 2], [5, 6, 7], [0]], 0),
        ),
        (lambda: P.min_length(9, [0, 3]), lambda: lp.MinLengthLogitsProcessor(9, [0, 3])),
        (
            lambda: P.min_length(2, [0], skip=1),
            lambda: lp.MinNewTokensLengthLogitsProcessor(1, 2, [0]),
        ),
        (lambda: P.forced_eos(8, [2]), lambda: lp.ForcedEOSTokenLogitsProcessor(8, 2)),
        (lambda: P.temperature(0.6), lambda: lp.TemperatureLogitsWarper(0.6)),
        (lambda: P.top_k(4), lambda: lp.TopKLogitsWarper(4)),
        (lambda: P.top_k(1, min_keep=2), lambda: lp.TopKLogitsWarper(1, min_tokens_to_keep=2)),
        (lambda: P.top_p(0.8), lambda: lp.TopPLogitsWarper(0.8)),
        (lambda: P.top_p(0.3, min_keep=3), lambda: lp.TopPLogitsWarper(0.3, min_tokens_to_keep=3)),
    ],
)
def test_processor_matches_transformers(seed, ours, theirs):
    ids, scores = random_case(seed)
    expected = theirs()(ids, scores.clone())
    got = ours()(ids, scores.clone())
    assert torch.equal(got, expected)


def test_forced_bos_only_on_the_first_step():
    ids, scores = random_case(0, L=1)
    out = P.forced_bos(5)(ids, scores)
    assert (out[:, 5] == 0).all() and torch.isinf(out[:, :5]).all()
    ids2, _ = random_case(0, L=2)
    assert torch.equal(P.forced_bos(5)(ids2, scores), scores)


def test_generation_config_validates_and_reads_transformers_json(tmp_path):
    with pytest.raises(ValueError, match="GenerationConfig.num_beams=0: expected a positive int"):
        GenerationConfig(num_beams=0)
    with pytest.raises(ValueError, match="num_return_sequences=3: cannot exceed num_beams=2"):
        GenerationConfig(num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="early_stopping='sometimes'"):
        GenerationConfig(early_stopping="sometimes")
    with pytest.raises(ValueError, match="top_p=1.5"):
        GenerationConfig(top_p=1.5)
    path = tmp_path / "generation_config.json"
    path.write_text(
        '{"num_beams": 4, "bad_words_ids": [[7]], "eos_token_id": [0, 1], '
        '"transformers_version": "5.0", "max_length": 512}'
    )
    config = GenerationConfig.load(path)
    assert config.num_beams == 4 and config.bad_words_ids == ((7,),)
    assert config.eos_token_id == (0, 1) and config.max_length == 512
    config.save(tmp_path / "again.json")
    assert GenerationConfig.load(tmp_path / "again.json") == config
    # alignment heads (Whisper's generation-config field): (layer, head) pairs from 0
    assert GenerationConfig(alignment_heads=[[0, 1], [2, 3]]).alignment_heads == ((0, 1), (2, 3))
    for bad in ([], [[0]], [[0, -1]], [[1, 0.5]]):
        with pytest.raises(ValueError, match="alignment_heads=.*: expected a non-empty list of"):
            GenerationConfig(alignment_heads=bad)
    path.write_text('{"alignment_heads": [[0, 1, 2]]}')
    with pytest.raises(ValueError, match=r"generation_config.json: GenerationConfig.alignment_"):
        GenerationConfig.load(path)  # the file is named


def test_generation_config_save_is_whole_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "generation_config.json"
    GenerationConfig(num_beams=4).save(path)
    before = path.read_text()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken)
    with pytest.raises(OSError, match="disk full"):
        GenerationConfig(num_beams=2).save(path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


BANS_ONLY = [
    dict(suppress_tokens=[3, 9], begin_suppress_tokens=[4, 0], min_new_tokens=3),
    dict(min_length=6, min_new_tokens=2, bad_words_ids=[[7], [8]], eos_token_id=[0, 2]),
    dict(bad_words_ids=[[0]], eos_token_id=[0]),  # an end token as a bad word: ignored
    dict(),
    dict(forced_bos_token_id=4, forced_eos_token_id=[0, 5], min_length=11, suppress_tokens=[5]),
    dict(forced_eos_token_id=[0], bad_words_ids=[[3]], min_new_tokens=4, suppress_tokens=[2, 3]),
]


@pytest.mark.parametrize("settings", BANS_ONLY)
def test_ban_table_applies_the_bans_at_every_length(settings):
    """Where every processor is a ban, the table applies the same bans at a length held in
    a tensor (as a compiled greedy graph does) as the processors at that length."""
    config = GenerationConfig(**{"eos_token_id": [0], **settings})
    procs = P.build_processors(config, max_length=12, prompt_length=2)
    table = P.ban_table(procs, 11, torch.device("cpu"))
    assert table is not None
    banned_somewhere = False
    for n in range(1, 13):
        ids, scores = random_case(n, L=n)
        expected = P.apply_processors(procs, ids, scores.clone())
        got = table.apply(scores.clone(), torch.tensor([n]))
        assert torch.equal(got, expected), n
        banned_somewhere |= bool(torch.isinf(got).any())
    assert banned_somewhere == bool(settings and settings.get("bad_words_ids") != [[0]])
    if "forced_eos_token_id" in settings:  # forced tokens, then a ban of one of them
        ids, scores = random_case(0, L=11)
        got = table.apply(scores, torch.tensor([11]))
        assert torch.equal(got, P.apply_processors(procs, ids, scores))
        assert (torch.isfinite(got).sum(-1) == 1).all()  # one end token left


@pytest.mark.parametrize(
    "settings",
    [
        dict(repetition_penalty=1.3),
        dict(no_repeat_ngram_size=2),
        dict(bad_words_ids=[[5], [6, 7]]),
        dict(do_sample=True, top_k=3),
    ],
)
def test_ban_table_refuses_what_is_not_a_ban(settings):
    procs = P.build_processors(GenerationConfig(eos_token_id=[0], **settings), 12)
    assert P.ban_table(procs, 11, torch.device("cpu")) is None


def test_bans_name_a_token_outside_the_vocabulary():
    procs = P.build_processors(GenerationConfig(eos_token_id=[0], suppress_tokens=[3, 11]), 12)
    with pytest.raises(ValueError, match=r"suppress_tokens name tokens \[11\] outside the vocab"):
        P.ban_table(procs, 11, torch.device("cpu"))
    ids, scores = random_case(0)
    with pytest.raises(ValueError, match=r"suppress_tokens name tokens \[11\] outside the vocab"):
        P.apply_processors(procs, ids, scores)
    assert P.ban_table(procs[:0], 11, torch.device("cpu")).mask.shape == (4, 11)
    with pytest.raises(ValueError, match=r"forced_bos_token_id name tokens \[12\] outside"):
        P.forced_bos(12)(*random_case(0, L=1))
