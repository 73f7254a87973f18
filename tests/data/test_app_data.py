"""The generated data of captioning, QA and speech: seeded, disjoint splits, gold alignment."""

import math
import re
from pathlib import Path

import numpy as np
import pytest

from xattn.data.digits import (
    DIGIT_WORDS,
    GLYPH,
    HEIGHT,
    WIDTH,
    load_digits,
    make_strips,
    warp_glyphs,
)
from xattn.data.speech import (
    FESTIVAL_VOICES,
    FLITE_VOICES,
    N_MELS,
    OUTSIDE_VOICES,
    PICO_VOICES,
    PIPER_VOICES,
    REAL_SPEAKERS,
    RHVOICE_VOICES,
    SAMPLE_RATE,
    SYNTH_RATE,
    VALID_TAKES,
    VARIANTS,
    Synthesizer,
    make_utterances,
    real_clips,
    recorded_clips,
)
from xattn.data.stories import PLACES, TAKES, make_stories

# ---- digit strips ------------------------------------------------------------------------


def test_embedded_digits_are_the_uci_set():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert images.min() == 0.0 and images.max() == 1.0
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_strips_are_seeded_and_split_by_source_image():
    a, b = make_strips(200, 50, 50, seed=3), make_strips(200, 50, 50, seed=3)
    pairs = zip(a["train"], b["train"], strict=True)
    assert all(np.array_equal(x.image, y.image) for x, y in pairs)
    used = {name: {k for s in strips for k in s.sources} for name, strips in a.items()}
    assert not used["train"] & used["test"] and not used["train"] & used["valid"]
    assert not used["valid"] & used["test"]
    c = make_strips(200, 50, 50, seed=4)
    assert not np.array_equal(a["train"][0].image, c["train"][0].image)


def test_strip_spans_hold_the_named_digit():
    images, labels = load_digits()
    for strip in make_strips(300, 0, 0, seed=1, noise=0.0, warp=False)["train"]:
        assert strip.image.shape == (HEIGHT, WIDTH)
        assert 1 <= len(strip.digits) <= 4
        assert strip.caption.split() == [DIGIT_WORDS[d] for d in strip.digits]
        starts = [x0 for x0, _ in strip.spans]
        assert starts == sorted(starts)
        for (x0, x1), digit, k in zip(strip.spans, strip.digits, strip.sources, strict=True):
            assert x1 - x0 == GLYPH and 0 <= x0 and x1 <= WIDTH
            assert labels[k] == digit
            window = strip.image[:, x0:x1]  # without noise: the glyph sits in its columns
            assert any(
                np.array_equal(window[y : y + GLYPH], images[k]) for y in range(HEIGHT - GLYPH + 1)
            )
        ink = np.flatnonzero(strip.image.sum(0) > 0)
        covered = {x for x0, x1 in strip.spans for x in range(x0, x1)}
        assert set(ink.tolist()) <= covered


def test_warps_change_training_glyphs_only():
    images, _ = load_digits()
    rng = np.random.default_rng(0)
    assert np.array_equal(warp_glyphs(images[:20], rng, rotation=0, scale=0, shear=0), images[:20])
    warped = warp_glyphs(images[:200], rng)
    assert warped.shape == (200, 8, 8) and warped.min() >= 0 and warped.max() <= 1
    change = np.abs(warped - images[:200]).mean((1, 2))
    assert (change > 0.01).mean() > 0.9  # nearly every glyph moves ...
    assert 0.9 < warped.sum() / images[:200].sum() < 1.05  # ... and keeps its ink
    plain = make_strips(100, 50, 50, seed=2, noise=0.0, warp=False)
    bent = make_strips(100, 50, 50, seed=2, noise=0.0)
    for name in ("valid", "test"):  # held-out handwriting is never warped
        assert all(
            np.array_equal(a.image, b.image) and a.spans == b.spans
            for a, b in zip(plain[name], bent[name], strict=True)
        )
    differ = 0
    for strip in bent["train"]:
        covered = {x for x0, x1 in strip.spans for x in range(x0, x1)}
        assert set(np.flatnonzero(strip.image.sum(0) > 0).tolist()) <= covered
        differ += not any(
            np.array_equal(strip.image[y : y + GLYPH, x0:x1], images[k])
            for (x0, x1), k in zip(strip.spans, strip.sources, strict=True)
            for y in range(HEIGHT - GLYPH + 1)
        )
    assert differ == len(bent["train"])  # no training glyph is pasted unchanged


# ---- stories -----------------------------------------------------------------------------


def _simulate(sentences):
    """An independent reading of a story: where everyone and everything is."""
    where, holder, lying = {}, {}, {}
    for i, s in enumerate(sentences):
        words = s.removesuffix(" .").split()
        person, place_or_thing = words[0], words[-1]
        verb = " ".join(words[1:-2])
        if verb in ("went to", "moved to", "journeyed to", "travelled to", "went back to"):
            where[person] = (place_or_thing, i)
        elif verb in ("picked up", "got", "grabbed", "took"):
            holder[place_or_thing] = (person, i)
            lying.pop(place_or_thing, None)
        else:
            holder.pop(place_or_thing)
            lying[place_or_thing] = (where[person][0], where[person][1], i)
    return where, holder, lying


def test_stories_answer_and_support_are_right():
    splits = make_stories(2000, 100, 300, seed=5)
    kinds = set()
    for story in splits["train"] + splits["test"]:
        where, holder, lying = _simulate(story.sentences)
        name = re.fullmatch(r"where is (the )?(\w+) \?", story.question).group(2)
        kinds.add(story.kind)
        if story.kind == "person":
            assert story.answer == where[name][0]
            assert story.support == story.chain == (where[name][1],)
            assert story.holder == "" and story.reply == story.answer
        elif name in holder:
            person, taken = holder[name]
            assert story.answer == where[person][0]
            assert set(story.support) == {taken, where[person][1]}
            assert story.holder == person and story.chain == (taken, where[person][1])
        else:
            assert story.answer == lying[name][0]
            assert story.support == lying[name][1:]
            dropper = story.sentences[lying[name][2]].split()[0]
            assert story.holder == dropper and story.chain == (lying[name][2], lying[name][1])
        if story.kind == "object":
            # the reply writes the hop out: the holder (named in the sentence that gave or
            # dropped the object), then the place (named in the holder's move)
            assert story.reply == f"{story.holder} {story.answer}"
            gave, moved = (story.sentences[i].split() for i in story.chain)
            assert gave[0] == story.holder and name in gave
            assert moved[0] == story.holder and moved[-2] == story.answer
        for i in story.support:
            words = story.sentences[i].split()
            if story.kind == "person":  # the person's own move
                assert words[0] == name and words[-2] == story.answer
            else:  # the sentence that gave or dropped the object, or the holder's move
                assert name in words or (words[0] == story.holder and words[-2] in PLACES)
    assert kinds == {"person", "object"}


def test_stories_are_seeded_and_splits_disjoint():
    a, b = make_stories(500, 100, 100, seed=1), make_stories(500, 100, 100, seed=1)
    assert a == b
    keys = {n: {(s.sentences, s.question) for s in v} for n, v in a.items()}
    assert not keys["train"] & keys["test"] and not keys["valid"] & keys["test"]
    people_only = make_stories(50, 0, 0, seed=1, objects=False)["train"]
    assert all(s.kind == "person" for s in people_only)
    # object_share: how often a story whose objects can be asked about asks about one
    never = make_stories(200, 0, 0, seed=1, object_share=0.0)["train"]
    assert all(s.kind == "person" for s in never)
    always = make_stories(200, 0, 0, seed=1, object_share=1.0)["train"]
    held = [s for s in always if any(t in " ".join(s.sentences) for t in TAKES)]
    assert held and all(s.kind == "object" for s in held)


# ---- speech ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def utterances():
    return make_utterances(300, 20, 60, seed=0)


def test_synthesizer_speaks():
    synth = Synthesizer()
    samples = synth("seven", "en-us+steph")
    assert samples.dtype == np.int16 and 0.2 * SYNTH_RATE < len(samples) < 2 * SYNTH_RATE
    assert np.abs(samples).max() > 1000
    with pytest.raises(ValueError, match="no voice"):
        synth("seven", "xx-nowhere")


def test_utterances_hold_out_voices_and_know_word_spans(utterances):
    train_voices = {u.voice for u in utterances["train"]}
    synthetic = {n: {u.voice for u in v if u.kind == "synthetic"} for n, v in utterances.items()}
    assert not synthetic["train"] & (synthetic["valid"] | synthetic["test"])
    real = {n: {u.voice for u in v if u.kind == "real"} for n, v in utterances.items()}
    assert real["test"] == {"fsdd:george"} and "fsdd:george" not in train_voices
    assert real["train"] == real["valid"] == {"fsdd:jackson", "fsdd:lucas", "fsdd:nicolas"}
    for name, split in utterances.items():
        share = sum(u.kind == "real" for u in split) / len(split)
        assert 0.25 < share < 0.75, name  # about half real, half synthetic
        assert all((u.audio is None) == (name == "train") for u in split)  # held-out audio
    speech, gaps = [], []
    for u in utterances["train"]:
        frames = u.features.shape[0]
        assert u.features.shape[1] == N_MELS and 1 <= len(u.words) <= 4
        inside = np.zeros(frames, bool)
        last = 0
        for a, b in u.spans:
            assert last <= a < b <= frames
            inside[a:b], last = True, b
        energy = u.features.max(1)
        speech.append(energy[inside].mean())
        gaps.append(energy[~inside].mean())
    assert np.mean(speech) > np.mean(gaps) + 0.3  # the spans are where the sound is


def test_real_recordings_are_split_by_speaker_and_take():
    clips = real_clips("lucas")
    assert sorted(clips) == sorted(DIGIT_WORDS) and all(len(c) == 50 for c in clips.values())
    assert all(c.dtype == np.float32 and np.abs(c).max() <= 1.0 for c in clips["seven"])
    splits = make_utterances(0, 40, 40, seed=3, real_share=1.0, test_speaker="jackson")
    assert {u.voice for u in splits["test"]} == {"fsdd:jackson"}
    # a validation utterance of a training speaker is made of the takes training never uses
    takes = {
        s: {w: [c[i] for i in VALID_TAKES] for w, c in real_clips(s).items()} for s in REAL_SPEAKERS
    }
    for u in splits["valid"]:
        speaker = u.voice.removeprefix("fsdd:")
        start = next(i for i, x in enumerate(u.audio) if abs(x) > 0.05)  # noise is < 0.02
        word = takes[speaker][u.words[0]]
        assert any(len(c) <= len(u.audio) - start + 2 for c in word)
    with pytest.raises(ValueError, match="unknown speaker 'theo'"):
        real_clips("theo")
    # no speaker held out: all four train, and the test split hears their unused takes
    everyone = make_utterances(200, 0, 40, seed=3, real_share=1.0, test_speaker=None)
    expected = {f"fsdd:{s}" for s in REAL_SPEAKERS}
    assert {u.voice for u in everyone["train"]} == {u.voice for u in everyone["test"]} == expected
    for u in everyone["test"]:
        speaker = u.voice.removeprefix("fsdd:")
        start = next(i for i, x in enumerate(u.audio) if abs(x) > 0.05)
        assert any(len(c) <= len(u.audio) - start + 2 for c in takes[speaker][u.words[0]])
    # the outside voices follow the test split, which stays as it was
    more = make_utterances(0, 0, 40, seed=3, real_share=1.0, test_speaker=None, outside=2)
    assert [u.text for u in more["test"][:40]] == [u.text for u in everyone["test"]]
    assert [u.voice for u in more["test"][40:]] == [
        f"outside:{v}" for v in OUTSIDE_VOICES for _ in range(2)
    ]


def test_voices_of_recorded_people_speak_in_training_only(utterances):
    bank = recorded_clips()
    expected = [f"flite:{v}" for v in FLITE_VOICES] + [f"festival:{v}" for v in FESTIVAL_VOICES]
    expected += [f"pico:{v}" for v in PICO_VOICES] + [f"rhvoice:{v}" for v in RHVOICE_VOICES]
    expected += [f"piper:{v}" for v in PIPER_VOICES]
    assert sorted(bank) == sorted(expected) and len(bank) == 22
    for words in bank.values():
        assert sorted(words) == sorted(DIGIT_WORDS) and all(len(c) == 9 for c in words.values())
        for clip in words["seven"]:
            assert clip.dtype == np.float32 and 0.1 < np.abs(clip).max() <= 1.0
            assert 0.1 * SAMPLE_RATE < len(clip) < 1.5 * SAMPLE_RATE
    nine_ways = ("flite:awb", "festival:krb", "festival:rab", "pico:gb", "rhvoice:clb", "piper:joe")
    for voice in nine_ways:  # nine ways, not copies
        assert len({c.tobytes() for c in bank[voice]["nine"]}) == 9
    for voice in ("festival:ona", "festival:nsh"):  # they ignore duration and F0 settings
        assert len({c.tobytes() for c in bank[voice]["nine"]}) == 1
    for words in bank.values():  # each word its own clip (Festival's: a voice saying its spelling)
        assert len({words[w][4].tobytes() for w in DIGIT_WORDS}) == 10
    assert sorted(recorded_clips(("flite",))) == sorted(f"flite:{v}" for v in FLITE_VOICES)
    with pytest.raises(ValueError, match="unknown synthesizer"):
        recorded_clips(("mbrola",))
    voices_of = {n: {u.voice for u in v} for n, v in utterances.items()}
    people = {v for v in voices_of["train"] if v in bank}
    assert len(people) >= 12  # about 0.5 x 0.3 of 300 training utterances, 22 voices
    assert any(v.startswith("flite:") for v in people)
    assert any(v.startswith("festival:") for v in people)
    assert not (voices_of["valid"] | voices_of["test"]) & set(bank)
    assert all(u.kind == "synthetic" for u in utterances["train"] if u.voice in people)
    without = make_utterances(300, 0, 0, seed=0, recorded_share=0.0)["train"]
    assert not {u.voice for u in without} & set(bank)
    flite = make_utterances(300, 0, 0, seed=0, recorded=("flite",))["train"]
    assert {u.voice for u in flite} & set(bank) == {f"flite:{v}" for v in FLITE_VOICES}


def test_training_utterances_are_augmented_and_held_out_ones_are_not():
    from xattn.data.speech import NO_AUGMENT, Augment

    plain = make_utterances(60, 0, 0, seed=2, augment=None)["train"]
    again = make_utterances(60, 0, 0, seed=2, augment=NO_AUGMENT)["train"]
    assert all(np.array_equal(a.features, b.features) for a, b in zip(plain, again, strict=True))
    rooms = make_utterances(60, 0, 0, seed=2, augment=Augment(reverb=1.0))["train"]
    assert (
        sum(not np.array_equal(a.features, b.features) for a, b in zip(plain, rooms, strict=True))
        == 60
    )
    # longer or shorter words: speed changes every span
    fast = make_utterances(60, 0, 0, seed=2, augment=Augment((1.3, 1.3), (1.3, 1.3), 0.0))["train"]
    length = [b - a for u in plain for a, b in u.spans]
    faster = [b - a for u in fast for a, b in u.spans]
    assert np.mean(faster) < 0.85 * np.mean(length)


def test_a_microphone_colours_every_frame_of_an_utterance_the_same_way():
    import dataclasses

    from xattn.data.speech import CHANNEL_KNOTS, DB_PER_UNIT, NO_AUGMENT

    plain = make_utterances(1, 0, 0, seed=2, augment=NO_AUGMENT)["train"][0]
    loud = dataclasses.replace(NO_AUGMENT, channel=6.0)
    coloured = make_utterances(1, 0, 0, seed=2, augment=loud)["train"][0]
    assert coloured.spans == plain.spans
    offset = coloured.features - plain.features  # (frames, bands)
    assert np.allclose(offset, offset[:1], atol=1e-6)  # one gain per band, in every frame
    curve = offset[0] * DB_PER_UNIT  # dB
    assert 0.5 < np.abs(curve).max() < 30
    # linear between the knots: the slope changes only around the inner knots, unlike
    # independent gains per band
    bends = np.abs(np.diff(curve, 2)) > 1e-3
    assert 0 < bends.sum() <= 2 * (CHANNEL_KNOTS - 2)
    # held-out utterances are never coloured, whatever training's plan
    held = make_utterances(0, 3, 3, seed=2, augment=loud)
    clean = make_utterances(0, 3, 3, seed=2, augment=NO_AUGMENT)
    for split in ("valid", "test"):
        for a, b in zip(held[split], clean[split], strict=True):
            assert np.array_equal(a.features, b.features)


def test_a_fresh_synthesizer_repeats_itself_whatever_was_said_before(monkeypatch):
    import tempfile

    folders = []  # only a fresh synthesizer copies the library into a temporary folder
    real = tempfile.TemporaryDirectory
    monkeypatch.setattr(tempfile, "TemporaryDirectory", lambda: folders.append(1) or real())
    shared = Synthesizer()
    assert folders == []
    first = [shared("seven", f"en+{v}") for v in VARIANTS]
    later = [shared("seven", f"en+{v}") for v in VARIANTS]
    # the shared library carries state from call to call: the same words come out otherwise
    assert sum(not np.array_equal(a, b) for a, b in zip(first, later, strict=True)) > 8
    # a fresh copy starts from scratch: the same calls, the same samples, every variant
    one = Synthesizer(fresh=True)
    assert folders == [1]
    said = [one("seven", f"en+{v}") for v in VARIANTS]
    shared("one two three", "en-us+m3")  # whatever the shared library says in between
    two = Synthesizer(fresh=True)
    for variant, samples in zip(VARIANTS, said, strict=True):
        assert np.array_equal(two("seven", f"en+{variant}"), samples)


def test_utterances_are_seeded(utterances):
    from xattn.data import speech

    speech._default_bank.cache_clear()  # speak the clip bank again, after other speech
    Synthesizer()("nine", "en+m1")
    again = make_utterances(5, 0, 0, seed=0)["train"]
    for a, b in zip(again, utterances["train"][:5], strict=True):
        assert a.words == b.words and a.voice == b.voice and a.spans == b.spans
        assert np.array_equal(a.features, b.features)
    other = make_utterances(5, 0, 0, seed=1)["train"]
    assert [u.text for u in other] != [u.text for u in again]


FAKE_ESPEAK = """#!{python}
import json, math, struct, sys, wave
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
rate = {rate}
samples = [int(8000 * math.sin(2 * math.pi * 440 * t / rate)) for t in range(rate // 10)]
out = wave.open(sys.stdout.buffer, "wb")
out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
out.writeframes(struct.pack("<%dh" % len(samples), *samples))
out.close()
"""


def fake_espeak(folder, rate):
    """An `espeak-ng` program on PATH that logs its arguments and writes 0.1 s of 440 Hz."""
    import sys

    log = folder / "calls.jsonl"
    program = folder / "espeak-ng"
    program.write_text(FAKE_ESPEAK.format(python=sys.executable, log=str(log), rate=rate))
    program.chmod(0o755)
    return log


def test_the_espeak_program_stands_in_for_the_library(tmp_path, monkeypatch):
    import json
    import sys

    from xattn.data.speech import SpeechUnavailable

    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # the wheel is not installed
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SpeechUnavailable, match=r"pip install espeakng-loader \(.*\(apt install"):
        Synthesizer()
    log = fake_espeak(tmp_path, rate=SYNTH_RATE)
    synth = Synthesizer()
    assert synth.backend == "program"
    samples = synth("seven", "en-us+m3", rate=150, pitch=40)
    assert samples.dtype == np.int16 and len(samples) == SYNTH_RATE // 10
    rate = SYNTH_RATE  # the program's own arithmetic
    expected = [int(8000 * math.sin(2 * math.pi * 440 * t / rate)) for t in range(rate // 10)]
    assert samples.tolist() == expected  # the program's WAV, read back exactly
    call = json.loads(log.read_text())
    assert call == ["--stdout", "-v", "en-us+m3", "-s", "150", "-p", "40", "seven"]
    fake_espeak(tmp_path, rate=16000)  # a program that writes another rate is refused
    with pytest.raises(RuntimeError, match="espeak-ng wrote 16000 Hz audio"):
        synth("seven", "en-us+m3")


def test_the_voices_from_outside_fsdd_ship_with_their_credit_and_licence():
    from importlib.resources import files

    from xattn.data.speech import OUTSIDE_VOICES, outside_clips

    folder = files("xattn.data") / "outside"
    readme = (folder / "README.md").read_text()
    for voice in OUTSIDE_VOICES:
        with (folder / f"{voice}.npz").open("rb") as f:
            table = np.load(f)
            assert sorted(table.files) == [str(d) for d in range(10)]  # one recording per digit
            for key in table.files:
                assert table[key].dtype == np.int16 and 0.25 < len(table[key]) / 8000 < 1.2
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{voice}.npz`"))
        assert "licen" in row.lower() or "CC BY-SA" in row  # each file names its licence
        clips = outside_clips(voice)
        assert list(clips) == list(DIGIT_WORDS) and all(
            c.dtype == np.float32 for c in clips.values()
        )
    assert "Allison Smith" in readme and "CC BY-SA 3.0" in readme
    assert "David C Dawson" in readme and "John Arundel" in readme
    with pytest.raises(ValueError, match="unknown voice 'george'"):
        outside_clips("george")  # an FSDD speaker is not one of them


def test_outside_utterances_string_one_voice_as_held_out_utterances_are_made():
    from xattn.data.speech import N_MELS, outside_clips, outside_utterances

    made = outside_utterances("dawson", 40, seed=1)
    assert [u.text for u in made] == [u.text for u in outside_utterances("dawson", 40, seed=1)]
    assert [u.text for u in made] != [u.text for u in outside_utterances("dawson", 40, seed=2)]
    assert {u.kind for u in made} == {"outside"} and {u.voice for u in made} == {"outside:dawson"}
    assert {len(u.words) for u in made} == {1, 2, 3, 4}
    assert set().union(*(u.words for u in made)) <= set(DIGIT_WORDS)
    clips = outside_clips("dawson")
    for u in made:
        assert u.features.shape[1] == N_MELS
        assert all(0 <= a < b <= u.features.shape[0] for a, b in u.spans)
        assert u.seconds > sum(len(clips[w]) for w in u.words) / 8000  # plus pauses and edges
    # Cannon Smash's clips carry 0.23-0.55 s of silence each: trimming shortens every word
    kept = outside_utterances("cannonsmash", 20)
    trimmed = outside_utterances("cannonsmash", 20, trimmed=True)
    assert [u.text for u in kept] == [u.text for u in trimmed]  # the same draws
    shorter = [k.seconds - t.seconds for k, t in zip(kept, trimmed, strict=True)]
    assert all(d > 0.2 * len(k.words) for d, k in zip(shorter, kept, strict=True))


def test_voices_of_recorded_people_ship_with_their_credit_and_licence():
    from importlib.resources import files

    import tomllib

    from xattn.data.speech import RECORDED

    root = Path(__file__).resolve().parents[2]
    shipped = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = shipped["package-data"]["xattn.data"]
    for synthesizer, names in RECORDED.items():
        assert {f"{synthesizer}/*.npz", f"{synthesizer}/README.md"} <= set(shipped), synthesizer
        readme = (files("xattn.data") / synthesizer / "README.md").read_text()
        assert "License" in readme and "scripts/recorded_voices.py" in readme, synthesizer
        for name in names:  # every voice is named in its folder's README
            assert re.search(rf"\b{name}\b", readme), (synthesizer, name)


def test_hum_and_rumble_are_heard_in_the_low_bands_only():
    import dataclasses

    from xattn.data.speech import NO_AUGMENT

    plain = make_utterances(20, 0, 0, seed=2, augment=NO_AUGMENT)["train"]
    for field in ("hum", "rumble"):
        plan = dataclasses.replace(NO_AUGMENT, **{field: 1.0})
        changed = make_utterances(20, 0, 0, seed=2, augment=plan)["train"]
        low, high = [], []
        for a, b in zip(plain, changed, strict=True):
            assert (a.words, a.spans, a.voice) == (b.words, b.spans, b.voice)
            gain = b.features - a.features  # log10(power) / 4
            low.append(gain[:, :3].mean())  # the bands under about 200 Hz
            high.append(gain[:, 12:].mean())  # the bands over 800 Hz
        assert min(low) > 0.002 and np.median(low) > 0.05, field
        assert max(high) < 0.3 * np.median(low), field
