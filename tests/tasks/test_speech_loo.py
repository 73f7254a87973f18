"""scripts/speech_loo.py: leave-one-speaker-out trainings of the speech task, scored per kind
of voice."""

import importlib.util
import json
from pathlib import Path

import pytest

from xattn import EncoderDecoder
from xattn.data.speech import OUTSIDE_VOICES, make_utterances
from xattn.tasks.speech import SpeechTask


def load_script():
    path = Path(__file__).parents[2] / "scripts" / "speech_loo.py"
    spec = importlib.util.spec_from_file_location("speech_loo", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


TINY = ["--train", "24", "--valid", "6", "--test", "12", "--steps", "2", "--threads", "1"]
TINY += ["--outside", "2"]


def test_one_training_per_held_out_speaker_scored_per_kind(tmp_path, capsys):
    script = load_script()
    argv = [str(tmp_path), "--speakers", "lucas", "nicolas", "--jobs", "2", *TINY]
    data = {"recorded_share": 0.5, "test_voices": 0.3}  # test_voices: other held-out voices
    argv += ["--data", json.dumps(data), "--model", '{"d_model": 32, "ffn_dim": 64}']
    assert script.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "| held-out speaker | real: exact | real: WER | synthetic: exact | outside: exact "
        "| outside: WER | peak, real | peak, synthetic | peak, outside |"
    )
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| lucas", "| nicolas", "| mean"]
    rows = [[float(c.strip(" |%")) for c in line.split(" | ")[1:]] for line in lines[2:]]
    assert all(len(row) == 8 and all(0 <= v <= 100 for v in row) for row in rows)
    assert rows[2] == pytest.approx([(a + b) / 2 for a, b in zip(*rows[:2], strict=True)], abs=0.1)
    for speaker, row in zip(("lucas", "nicolas"), rows, strict=False):
        result = json.loads((tmp_path / speaker / "result.json").read_text())
        assert result["speaker"] == speaker and result["steps"] == 2 and result["threads"] == 1
        assert result["data"] == data
        assert result["real"]["utterances"] + result["synthetic"]["utterances"] == 12
        assert result["real"]["utterances"] > 0 and result["synthetic"]["utterances"] > 0
        assert result["real"]["voices"] == [f"fsdd:{speaker}"]  # the speaker held out
        assert result["outside"]["utterances"] == 2 * len(OUTSIDE_VOICES)  # 2 per voice
        assert result["outside"]["voices"] == sorted(f"outside:{v}" for v in OUTSIDE_VOICES)
        assert row[3] == pytest.approx(100 * result["outside"]["exact"], abs=0.051)
        # the --data change reached the utterances: the test voices it holds out, not the default's
        made = make_utterances(0, 0, 12, seed=0, test_speaker=speaker, test_voices=0.3)["test"]
        synthetic = sorted({u.voice for u in made if u.kind == "synthetic"})
        assert result["synthetic"]["voices"] == synthetic
        default = make_utterances(0, 0, 12, seed=0, test_speaker=speaker)["test"]
        assert synthetic != sorted({u.voice for u in default if u.kind == "synthetic"})
        assert row[0] == pytest.approx(100 * result["real"]["exact"], abs=0.051)
        assert row[2] == pytest.approx(100 * result["synthetic"]["exact"], abs=0.051)
        model = EncoderDecoder.load(tmp_path / speaker / "model")
        assert (model.config.d_model, model.config.ffn_dim) == (32, 64)
        # saved with the trained alignment head: word timestamps work on it as loaded
        layer, head = SpeechTask.recipe.trained_head  # the layer counted from the end
        heads = model.generation_config.alignment_heads
        assert [tuple(h) for h in heads or ()] == [(layer % model.config.decoder_layers, head)]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--data", '{"recorded_shares": 0.5}'], "--data: cannot change ['recorded_shares']"),
        (["--data", '{"test_speaker": "jackson"}'], "--data: cannot change ['test_speaker']"),
        (["--data", '{"outside": 5}'], "--data: cannot change ['outside']"),  # a flag
        (["--model", '{"width": 64}'], "--model: cannot change ['width']"),
        (["--recipe", '{"lr": -1}'], "--steps/--recipe: "),
        (["--recipe", "[1]"], "expected a JSON object"),
        (["--speakers", "theo"], "--speakers: ['theo'] not among"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        load_script().main([str(tmp_path), *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing trained


def test_the_table_leaves_out_the_outside_columns_when_not_measured():
    kinds = {"real": (0.5, 0.1, 0.9), "synthetic": (0.9, 0.01, 1.0)}  # --outside 0
    result = {k: dict(zip(("exact", "wer", "peak"), v, strict=True)) for k, v in kinds.items()}
    lines = load_script().table([{"speaker": "george", **result}])
    assert lines == [
        "| held-out speaker | real: exact | real: WER | synthetic: exact | peak, real "
        "| peak, synthetic |",
        "|---|---|---|---|---|---|",
        "| george | 50.0% | 10.0% | 90.0% | 90.0% | 100.0% |",
    ]
