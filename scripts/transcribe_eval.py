"""How a speech model does on recordings handed to transcribe (what `xattn transcribe`
does with a WAV file), one call per recording or utterance:

- each of the 500 recordings (one digit word each) of Free Spoken Digit Dataset speakers,
  as recorded and at 1/20 of their level: exact word;
- utterances of 1-4 digits strung from the recordings of each voice from outside FSDD
  (xattn/data/outside: Allison Smith and four more people that xattn never trains on, one
  recording of each word), the way the speech task strings its held-out utterances, once
  with the silence around each word kept as recorded (Allison's pauses are about 0.3-0.6
  s, as people leave between digits) and once with the clips trimmed to the word (pauses
  of 0.03-0.25 s, as in the task's test): exact, WER, and how far the word times of the
  utterances read right lie from where each word sounds, per voice and over all voices;
- with --files SPEAKER, the task's test utterances for that held-out speaker (seed 3) as
  the files people bring: as made, with a codec's digital silence at the edges (23 ms
  before, 45 ms after, as AAC primes and pads), the same length of background noise
  instead, a phone's voice memo (AAC in M4A, 44.1 kHz stereo) and an MP3 (16 kHz), read
  back with read_audio, and with the taps of a record button (0.1 s of background before
  and after, a 4 ms click at half the words' peak 5 ms from each end): exact match per
  kind of voice (needs PyAV);
- with --interference SPEAKER, the same test utterances with low-frequency interference
  added: mains hum (50 Hz and its next two harmonics at 1/k) with its fundamental's
  amplitude 20 dB and 10 dB under the words' peak, and rumble (white noise through a 25 ms
  moving average, under about 40 Hz, its RMS 13.5 dB under the words' peak): exact match
  per kind of voice.

    python scripts/transcribe_eval.py MODEL_DIR [MODEL_DIR ...] [--speakers george ...]
        [--utterances 300] [--voices allison ...] [--files george] [--interference george]
        [--file-utterances 400]

--utterances (per voice) 0 leaves out the voices from outside FSDD. Several model folders
are measured as one Ensemble (xattn.Ensemble: the mean of their next-token probabilities).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from xattn import EncoderDecoder, Ensemble
from xattn.data import speech
from xattn.training.metrics import error_rates


def single_words(model, speaker: str, scale: float) -> float:
    """Exact word over the speaker's 500 recordings, each scaled by `scale`."""
    right = total = 0
    for word, clips in speech.real_clips(speaker).items():
        for clip in clips:
            right += model.transcribe(clip * scale, speech.SAMPLE_RATE).text.strip() == word
            total += 1
    return right / total


def _sound(clip: np.ndarray) -> tuple[float, float]:
    """Seconds of silence before and after the sound in a clip (as speech._trim cuts it)."""
    start, end = speech._sound_span(clip)
    return start / speech.SAMPLE_RATE, (len(clip) - end) / speech.SAMPLE_RATE


def utterances(model, voice: str, trimmed: bool, count: int) -> dict:
    """exact and WER over `count` utterances of the voice's (seed 0); over those read right,
    the mean error of the word times (start and end) against where each word sounds, and
    the share within 100 ms; `hypotheses`, `references` and `errors` for pooling."""
    clips = speech.outside_clips(voice)
    silence = {w: _sound(speech._trim(c) if trimmed else c) for w, c in clips.items()}
    hypotheses, references, errors = [], [], []
    for utterance in speech.outside_utterances(voice, count, trimmed=trimmed):
        result = model.transcribe(utterance.audio, speech.SAMPLE_RATE, word_timestamps=True)
        hypotheses.append(result.text)
        references.append(utterance.text)
        if result.text.split() != list(utterance.words):
            continue
        for (word, start, end), (first, last) in zip(result.words, utterance.spans, strict=True):
            lead, tail = silence[word]
            errors += [abs(start - first * speech.HOP / speech.SAMPLE_RATE - lead)]
            errors += [abs(end - last * speech.HOP / speech.SAMPLE_RATE + tail)]
    return _scores(hypotheses, references, errors)


def _scores(hypotheses: list[str], references: list[str], errors: list[float]) -> dict:
    scores = error_rates(hypotheses, references)
    times = np.array(errors) if errors else np.array([np.nan])
    scores.update(time_error=float(times.mean()), within=float((times <= 0.1).mean()))
    return {**scores, "hypotheses": hypotheses, "references": references, "errors": errors}


def _print_utterances(who: str, count: int, how: str, scores: dict) -> None:
    print(
        f"  {who}, {count} utterances of 1-4 digits, {how}: "
        f"exact {scores['exact']:.1%}, WER {scores['wer']:.1%}; word times of those read "
        f"right {scores['time_error'] * 1000:.0f} ms off on average, "
        f"{scores['within']:.1%} within 100 ms"
    )


def _exact_by_way(model, speaker: str, count: int, ways) -> dict[tuple[str, str], float]:
    """(way, kind of voice) -> exact match over `count` test utterances for `speaker` held
    out (seed 3), each handed to transcribe every way ways(audio) -> {way: (samples,
    rate)} gives."""
    right, total = {}, {}
    for utterance in speech.make_utterances(0, 0, count, seed=3, test_speaker=speaker)["test"]:
        kind = utterance.kind
        total[kind] = total.get(kind, 0) + 1
        for way, (samples, at) in ways(utterance.audio).items():
            text = model.transcribe(samples.astype(np.float32), at).text
            right[way, kind] = right.get((way, kind), 0) + (text.split() == list(utterance.words))
    return {(way, kind): n / total[kind] for (way, kind), n in right.items()}


def as_files(model, speaker: str, count: int, folder: Path) -> dict[tuple[str, str], float]:
    """(way, kind of voice) -> exact match, each test utterance handed to transcribe as the
    files people bring (see the module's docstring)."""
    from tests.audio import encode
    from xattn.data.audio import read_audio, resample

    rate = speech.SAMPLE_RATE
    rng = np.random.default_rng(0)

    def ways(audio):
        level = float(np.sqrt(np.mean(audio[: rate // 20] ** 2)))  # its first 50 ms
        lead, tail = round(0.023 * rate), round(0.045 * rate)
        heard = {
            "as made": (audio, rate),
            "digital silence": (np.pad(audio, (lead, tail)), rate),
            "noise": (
                np.concatenate([rng.normal(0, level, lead), audio, rng.normal(0, level, tail)]),
                rate,
            ),
        }
        encode(folder / "memo.m4a", resample(audio, rate, 44100), 44100, "aac", channels=2)
        encode(folder / "clip.mp3", resample(audio, rate, 16000), 16000, "libmp3lame")
        heard["M4A"] = read_audio(folder / "memo.m4a")
        heard["MP3"] = read_audio(folder / "clip.mp3")
        before, after = (rng.normal(0, level, rate // 10) for _ in range(2))
        tap = rng.normal(0, 1, 32) * np.exp(-np.arange(32) / 8) * 0.5 * np.abs(audio).max()
        before[40:72] += tap
        after[-72:-40] += tap
        heard["taps"] = (np.concatenate([before, audio, after]), rate)
        return heard

    return _exact_by_way(model, speaker, count, ways)


def interference(model, speaker: str, count: int) -> dict[tuple[str, str], float]:
    """(way, kind of voice) -> exact match, each test utterance handed to transcribe with
    hum or rumble added (see the module's docstring)."""
    rate = speech.SAMPLE_RATE
    rng = np.random.default_rng(0)

    def ways(audio):
        peak = float(np.abs(audio).max())
        t = np.arange(len(audio)) / rate
        hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3))
        smooth = np.full(200, 0.05)  # 25 ms at 8 kHz: 0.05 * sqrt(200) = 0.71 RMS
        rumble = 0.3 * peak * np.convolve(rng.normal(0, 1, len(audio)), smooth, "same")
        return {
            "clean": (audio, rate),
            "hum 20 dB under": (audio + 0.1 * peak * hum, rate),
            "hum 10 dB under": (audio + 0.316 * peak * hum, rate),
            "rumble": (audio + rumble, rate),
        }

    return _exact_by_way(model, speaker, count, ways)


def _print_ways(scores: dict[tuple[str, str], float], what: str) -> None:
    for kind in sorted({kind for _, kind in scores}):
        ways = ", ".join(f"{way} {scores[way, kind]:.1%}" for way, k in scores if k == kind)
        print(f"  {what}, {kind} test utterances: {ways}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="+", help="a model folder; several: their ensemble")
    parser.add_argument("--speakers", nargs="*", default=list(speech.REAL_SPEAKERS))
    parser.add_argument("--utterances", type=int, default=300, help="per outside voice")
    parser.add_argument(
        "--voices", nargs="*", default=list(speech.OUTSIDE_VOICES), choices=speech.OUTSIDE_VOICES
    )
    parser.add_argument("--file-utterances", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--files", metavar="SPEAKER", help="the held-out speaker's test utterances as files"
    )
    parser.add_argument(
        "--interference", metavar="SPEAKER", help="the held-out speaker's, with hum or rumble"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [EncoderDecoder.load(folder).eval() for folder in args.model]
    model = models[0] if len(models) == 1 else Ensemble(models, names=args.model)
    print(
        f"{' + '.join(args.model)}: one transcribe call per recording (single words) or utterance"
    )
    for speaker in args.speakers:
        loud, quiet = single_words(model, speaker, 1.0), single_words(model, speaker, 0.05)
        print(f"  {speaker}, single words: as recorded {loud:.1%}, at 1/20 level {quiet:.1%}")
    for trimmed in (False, True) if args.utterances and args.voices else ():
        how = "clips trimmed, short pauses" if trimmed else "pauses as recorded"
        pooled = {"hypotheses": [], "references": [], "errors": []}
        for voice in args.voices:
            scores = utterances(model, voice, trimmed, args.utterances)
            _print_utterances(voice, args.utterances, how, scores)
            for key, values in pooled.items():
                values += scores[key]
        if len(args.voices) > 1:
            total = args.utterances * len(args.voices)
            _print_utterances(f"all {len(args.voices)} voices", total, how, _scores(**pooled))
    if args.files:
        with tempfile.TemporaryDirectory() as folder:
            scores = as_files(model, args.files, args.file_utterances, Path(folder))
        _print_ways(scores, f"{args.files} held out, as files")
    if args.interference:
        scores = interference(model, args.interference, args.file_utterances)
        _print_ways(scores, f"{args.interference} held out, with interference")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
