"""Speech recognition data: spoken digit words by synthetic voices (eSpeak NG; in training
also the voices of Flite, Festival, SVOX Pico, RHVoice and Piper made from recordings of
22 people, shipped in data/flite, data/festival, data/pico, data/rhvoice and data/piper) and by
real people (four speakers of the Free Spoken Digit Dataset, shipped in data/fsdd), strung
into utterances of 1-4 words whose true word spans are known, as log-mel frames at 8 kHz.

Everything runs at 8 kHz, the rate of the recordings (telephone band: nothing above 4 kHz),
so the synthetic voices are resampled, which band-limits them the same way. A voice is an
eSpeak NG accent with a variant ("en-gb-scotland+steph"), a voice made from a recorded
person ("flite:awb", "festival:krb", "pico:gb") or a real speaker ("fsdd:george").
Every synthetic voice speaks every digit word at three rates and pitches once (the clip
bank); a real speaker has 50 recordings of each digit. An utterance strings 1-4 clips of
one voice with random gaps and gain; training utterances are also changed the ways real
recordings differ: speed (tempo, pitch and vocal-tract length together), room
reverberation, background noise and the colouring of a microphone (a smooth random gain
over the mel bands). Whole voices are held out: test utterances come from
synthetic voices and a real speaker never heard in training; validation uses other
unseen synthetic voices and recordings of the training speakers that training never sees.

Synthesis runs in process through ctypes on the library that the PyPI package
`espeakng-loader` ships; without it, Debian's `espeak-ng` program is used; otherwise
SpeechUnavailable says how to get either. Seeded means the same utterances in every process:
eSpeak NG carries state from one call to the next, so the bank is spoken by a private copy
of the library that starts from scratch, and the variants that add random breath noise
(f2, f3, f5) are not used.
"""

from __future__ import annotations

import ctypes
import io
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np

from .audio import SPEECH, log_mel, resample
from .digits import DIGIT_WORDS

__all__ = [
    "EDGE_SILENCE",
    "FESTIVAL_VOICES",
    "FLITE_VOICES",
    "HOP",
    "NOISE",
    "N_MELS",
    "OUTSIDE_VOICES",
    "PAUSE",
    "PICO_VOICES",
    "PIPER_VOICES",
    "REAL_SPEAKERS",
    "RHVOICE_VOICES",
    "SAMPLE_RATE",
    "WORD_PEAK",
    "Augment",
    "SpeechUnavailable",
    "Synthesizer",
    "Utterance",
    "make_utterances",
    "outside_clips",
    "outside_utterances",
    "real_clips",
    "recorded_clips",
    "voices",
]

SAMPLE_RATE = SPEECH.sample_rate  # 8 kHz: every clip and utterance
HOP = SPEECH.hop_length  # samples per frame: 10 ms
N_MELS = SPEECH.n_mels
SYNTH_RATE = 22050  # what eSpeak NG speaks at
WORD_PEAK = (0.3, 0.9)  # the range of each spoken word's peak level in an utterance
EDGE_SILENCE = (0.05, 0.3)  # seconds of silence before the first word and after the last
PAUSE = (0.03, 0.25)  # seconds of silence between two words
MAX_WORDS = 4  # words in an utterance, at most
NOISE = (0.001, 0.02)  # the range of the background noise's standard deviation
REAL_SPEAKERS = ("george", "jackson", "lucas", "nicolas")
# people from outside FSDD, one recording of each word, never trained on (data/outside)
OUTSIDE_VOICES = ("allison", "dawson", "cannonsmash", "tuxpaint", "arundel")
FLITE_VOICES = ("kal", "awb", "rms", "slt")  # Flite's voices of recorded people (data/flite)
FESTIVAL_VOICES = {  # Festival's voices of recorded people (data/festival): name -> voice
    "ked": "ked_diphone",
    "lp": "lp_diphone",
    "pc": "pc_diphone",
    "dita": "czech_dita",
    "krb": "czech_krb",
    "machac": "czech_machac",
    "ph": "czech_ph",
    "lj": "suo_fi_lj_diphone",
    "mv": "hy_fi_mv_diphone",
    "rab": "rab_diphone",
    "don": "don_diphone",
    "ona": "upc_ca_ona_hts",
    "nsh": "msu_ru_nsh_clunits",
}
PICO_VOICES = {"us": "en-US", "gb": "en-GB"}  # SVOX Pico's two English women (data/pico)
RHVOICE_VOICES = ("bdl", "clb")  # RHVoice's American man and woman (data/rhvoice)
PIPER_VOICES = {"joe": "en_US-joe-medium"}  # Piper's joe, an American man (data/piper)
RECORDED_TAKES = 9  # clips of each word by each voice made from recorded people
RECORDED = {  # synthesizer -> its voices made from recorded people (data/SYNTHESIZER)
    "flite": FLITE_VOICES,
    "festival": tuple(FESTIVAL_VOICES),
    "pico": tuple(PICO_VOICES),
    "rhvoice": RHVOICE_VOICES,
    "piper": tuple(PIPER_VOICES),
}
VALID_TAKES = range(45, 50)  # recordings of each digit kept from training, for validation

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
    """Every synthetic voice name: accent + variant."""
    return [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]


class Synthesizer:
    """Text to 16-bit mono samples at SYNTH_RATE with eSpeak NG (library or program).

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
        if rate != SYNTH_RATE:
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
            if w.getframerate() != SYNTH_RATE:
                raise RuntimeError(f"espeak-ng wrote {w.getframerate()} Hz audio")
            return np.frombuffer(w.readframes(w.getnframes()), np.int16)


def _sound_span(samples: np.ndarray, threshold: float = 0.02) -> tuple[int, int]:
    """(start, end) samples of the sound: from the first to the last sample above threshold
    of the peak (the whole clip when none is)."""
    loud = np.flatnonzero(np.abs(samples) > threshold * max(1e-9, np.abs(samples).max()))
    return (int(loud[0]), int(loud[-1]) + 1) if len(loud) else (0, len(samples))


def _trim(samples: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Cut leading and trailing silence (below threshold of the peak)."""
    start, end = _sound_span(samples, threshold)
    return samples[start:end]


Bank = dict[str, dict[str, list[np.ndarray]]]  # voice -> word -> clips at SAMPLE_RATE


def _clip_settings(voice_names: list[str], rng: np.random.Generator) -> tuple:
    """((voice, ((rate, pitch), ...)), ...): three ways each voice speaks its clips."""
    return tuple(
        (voice, tuple((int(rng.integers(130, 230)), int(rng.integers(25, 75))) for _ in range(3)))
        for voice in voice_names
    )


def _clip_bank(synth: Synthesizer, settings: tuple) -> Bank:
    """voice -> word -> float clips at SAMPLE_RATE (one per rate and pitch of the voice)."""
    bank: Bank = {}
    for voice, ways in settings:
        bank[voice] = {}
        for word in DIGIT_WORDS:
            spoken = [
                synth(word, voice, rate, pitch).astype(np.float32) / 32768.0 for rate, pitch in ways
            ]
            bank[voice][word] = [_trim(resample(c, SYNTH_RATE, SAMPLE_RATE)) for c in spoken]
    return bank


@lru_cache(maxsize=1)
def _default_bank(settings: tuple) -> Bank:
    """The bank spoken by a fresh copy of the library, kept for the next call with the same
    settings (the same seed): rebuilding it would give the same clips, seconds later."""
    return _clip_bank(Synthesizer(fresh=True), settings)


@lru_cache(maxsize=4)
def real_clips(speaker: str) -> dict[str, list[np.ndarray]]:
    """word -> the speaker's 50 recordings of it (float32 at 8 kHz), in FSDD's take order."""
    if speaker not in REAL_SPEAKERS:
        raise ValueError(f"unknown speaker {speaker!r}; expected one of {', '.join(REAL_SPEAKERS)}")
    with (files("xattn.data") / "fsdd" / f"{speaker}.npz").open("rb") as f:
        table = np.load(f)
        clips = {
            word: [table[f"{digit}_{take}"].astype(np.float32) / 32768.0 for take in range(50)]
            for digit, word in enumerate(DIGIT_WORDS)
        }
    return clips


def outside_clips(voice: str) -> dict[str, np.ndarray]:
    """word -> the voice's one recording of it (float32 at 8 kHz, its silence as recorded):
    a person from outside FSDD whom xattn never trains on (data/outside/README.md)."""
    if voice not in OUTSIDE_VOICES:
        raise ValueError(f"unknown voice {voice!r}; expected one of {', '.join(OUTSIDE_VOICES)}")
    with (files("xattn.data") / "outside" / f"{voice}.npz").open("rb") as f:
        table = np.load(f)
        return {w: table[str(d)].astype(np.float32) / 32768.0 for d, w in enumerate(DIGIT_WORDS)}


def recorded_clips(synthesizers: tuple[str, ...] = tuple(RECORDED)) -> Bank:
    """The voices made from recordings of people, as a bank: "SYNTHESIZER:NAME" -> word ->
    its RECORDED_TAKES clips (float32 at 8 kHz; three durations x three pitches). "flite":
    Flite's four English voices (data/flite, rendered by scripts/recorded_voices.py);
    "festival": Festival's 13 voices, one American and two British English and ten that say
    the English words with an Italian, Czech, Finnish, Catalan or Russian accent
    (data/festival); "pico": SVOX Pico's American and British women (data/pico); "rhvoice":
    RHVoice's American man and woman (data/rhvoice); "piper": Piper's joe, an American man
    (data/piper); each rendered by scripts/recorded_voices.py."""
    unknown = set(synthesizers) - set(RECORDED)
    if unknown:
        raise ValueError(
            f"unknown synthesizer {sorted(unknown)}; expected some of {tuple(RECORDED)}"
        )
    return {name: words for s in synthesizers for name, words in _rendered_bank(s).items()}


@lru_cache(maxsize=len(RECORDED))
def _rendered_bank(synthesizer: str) -> Bank:
    """data/SYNTHESIZER/voices.npz as a bank (read once)."""
    with (files("xattn.data") / synthesizer / "voices.npz").open("rb") as f:
        table = np.load(f)
        return {
            f"{synthesizer}:{name}": {
                word: [
                    table[f"{name}/{digit}_{take}"].astype(np.float32) / 32768.0
                    for take in range(RECORDED_TAKES)
                ]
                for digit, word in enumerate(DIGIT_WORDS)
            }
            for name in RECORDED[synthesizer]
        }


def _real_bank(speakers, takes) -> Bank:
    return {
        f"fsdd:{s}": {w: [c[i] for i in takes] for w, c in real_clips(s).items()} for s in speakers
    }


@dataclass(frozen=True)
class Augment:
    """How training utterances are changed (each draw per utterance). speed: the range of
    the speed factor for synthetic and for real voices (resampling changes tempo, pitch and
    apparent vocal-tract length together); reverb: the chance of a room (an exponentially
    decaying noise impulse response, RT60 in `rt60` seconds); noise: the range of the
    background noise's standard deviation; channel: the standard deviation in dB of a
    microphone's colouring, gains drawn at CHANNEL_KNOTS points evenly spread over the mel
    bands and linear in between (0: none); hum: the chance of mains hum (50 or 60 Hz and
    its next three harmonics, its peak HUM_DB under the words' peak); rumble: the chance of
    low-frequency noise (handling, wind, traffic: noise low-passed at RUMBLE_HZ, its level
    RUMBLE_DB under the words' peak)."""

    synthetic_speed: tuple[float, float] = (0.9, 1.1)
    real_speed: tuple[float, float] = (0.85, 1.15)
    reverb: float = 0.3
    rt60: tuple[float, float] = (0.1, 0.5)
    noise: tuple[float, float] = NOISE
    channel: float = 3.0
    hum: float = 0.0
    rumble: float = 0.0


NO_AUGMENT = Augment((1.0, 1.0), (1.0, 1.0), 0.0, (0.1, 0.5), NOISE, 0.0)
HUM_DB = (6.0, 40.0)  # how far under the words' peak the hum's peak is, in dB
RUMBLE_DB = (12.0, 40.0)  # how far under the words' peak the rumble's RMS is, in dB
RUMBLE_HZ = (20.0, 120.0)  # the rumble's low-pass cut-off
CHANNEL_KNOTS = 5
DB_PER_UNIT = 40.0  # log-mel features are log10(power) / 4 (+ 1): 10 dB is 0.25


def _colouring(rng: np.random.Generator, bands: int, db: float) -> np.ndarray:
    """(bands,) feature offsets of a random smooth gain curve with `db` dB spread."""
    knots = rng.normal(0.0, db / DB_PER_UNIT, CHANNEL_KNOTS)
    return np.interp(np.linspace(0, CHANNEL_KNOTS - 1, bands), np.arange(CHANNEL_KNOTS), knots)


def _speed(clip: np.ndarray, factor: float) -> np.ndarray:
    """The clip played `factor` times faster (polyphase resampling by a nearby fraction)."""
    ratio = Fraction(factor).limit_denominator(40)
    if ratio == 1:
        return clip
    from scipy.signal import resample_poly

    return resample_poly(clip, ratio.denominator, ratio.numerator).astype(np.float32)


def _hum(rng: np.random.Generator, length: int, peak: float) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its next three harmonics (random strengths and phases),
    its peak HUM_DB under `peak`."""
    t = np.arange(length) / SAMPLE_RATE
    mains = float(rng.choice((50.0, 60.0)))
    hum = sum(
        rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi))
        for k in range(1, 5)
    )
    level = peak * 10 ** (-rng.uniform(*HUM_DB) / 20)
    return (hum * level / max(1e-9, np.abs(hum).max())).astype(np.float32)


def _rumble(rng: np.random.Generator, length: int, peak: float) -> np.ndarray:
    """Low-frequency noise: white noise through a 4th-order low-pass at RUMBLE_HZ, its RMS
    RUMBLE_DB under `peak`."""
    from scipy.signal import butter, sosfilt

    sos = butter(4, rng.uniform(*RUMBLE_HZ), fs=SAMPLE_RATE, output="sos")
    rumble = sosfilt(sos, rng.normal(0, 1, length))
    level = peak * 10 ** (-rng.uniform(*RUMBLE_DB) / 20)
    return (rumble * level / max(1e-9, np.sqrt(np.mean(rumble**2)))).astype(np.float32)


def _room(audio: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    """The audio in a room: convolved with decaying noise (-60 dB after rt60 s), direct
    path first, at the original loudness."""
    from scipy.signal import fftconvolve

    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    response = rng.normal(0, 1, length) * np.exp(-6.9 * t / rt60) * 0.3
    response[0] = 1.0
    wet = fftconvolve(audio, response)[: len(audio)]
    return (wet * np.abs(audio).max() / max(1e-9, np.abs(wet).max())).astype(np.float32)


@dataclass(frozen=True)
class Utterance:
    """features (frames, N_MELS); words; spans[i] = frames [start, end) of word i; voice;
    kind: "synthetic", "real" or "outside" (outside_utterances); audio: the samples at
    SAMPLE_RATE (held-out splits only)."""

    features: np.ndarray
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    voice: str
    kind: str = "synthetic"
    audio: np.ndarray | None = None

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def seconds(self) -> float:
        return self.features.shape[0] * HOP / SAMPLE_RATE


def _utterance(bank: Bank, voice: str, rng, max_words: int, augment: Augment | None, keep_audio):
    n = int(rng.integers(1, max_words + 1))
    noise = np.random.default_rng(int(rng.integers(2**62)))  # draws as many as samples
    words = [DIGIT_WORDS[int(d)] for d in rng.integers(0, 10, n)]
    real = voice.startswith("fsdd:")
    plan = augment or NO_AUGMENT
    speed = float(rng.uniform(*(plan.real_speed if real else plan.synthetic_speed)))
    pieces = [np.zeros(int(rng.uniform(*EDGE_SILENCE) * SAMPLE_RATE), np.float32)]
    starts = []
    for i, word in enumerate(words):
        clips = bank[voice][word]
        clip = _speed(clips[int(rng.integers(0, len(clips)))], speed)
        clip = clip / max(1e-6, np.abs(clip).max()) * rng.uniform(*WORD_PEAK)
        starts.append((sum(map(len, pieces)), len(clip)))
        pieces.append(clip.astype(np.float32))
        gap = rng.uniform(*PAUSE) if i < n - 1 else rng.uniform(*EDGE_SILENCE)
        pieces.append(np.zeros(int(gap * SAMPLE_RATE), np.float32))
    audio = np.concatenate(pieces)
    if augment is not None and augment.reverb > 0 and rng.random() < augment.reverb:
        audio = _room(audio, rng, float(rng.uniform(*augment.rt60)))
    peak = float(np.abs(audio).max())
    audio = audio + noise.normal(0, rng.uniform(*plan.noise), audio.shape).astype(np.float32)
    if plan.hum > 0 and noise.random() < plan.hum:  # drawn from `noise`: rng's draws stay
        audio = audio + _hum(noise, len(audio), peak)
    if plan.rumble > 0 and noise.random() < plan.rumble:
        audio = audio + _rumble(noise, len(audio), peak)
    features = log_mel(audio, SPEECH)
    if augment is not None and augment.channel > 0:
        features = features + _colouring(rng, N_MELS, augment.channel).astype(np.float32)
    frames = features.shape[0]
    spans = tuple((min(frames - 1, s // HOP), min(frames, -(-(s + n_) // HOP))) for s, n_ in starts)
    kind = "real" if real else "outside" if voice.startswith("outside:") else "synthetic"
    return Utterance(features, tuple(words), spans, voice, kind, audio if keep_audio else None)


def outside_utterances(
    voice: str, count: int, *, trimmed: bool = False, seed: int = 0
) -> list[Utterance]:
    """`count` utterances of 1-4 digits strung from the recordings of a voice from outside
    FSDD (outside_clips), as held-out utterances are made (a peak of 0.3-0.9 per word,
    pauses of 0.03-0.25 s, background noise; nothing else changed), with the silence around
    each word as recorded or `trimmed`; kind "outside", audio kept."""
    clips = outside_clips(voice)
    bank = {f"outside:{voice}": {w: [_trim(c) if trimmed else c] for w, c in clips.items()}}
    rng = np.random.default_rng(seed)
    return [_utterance(bank, f"outside:{voice}", rng, MAX_WORDS, None, True) for _ in range(count)]


def make_utterances(
    train: int = 10000,
    valid: int = 300,
    test: int = 1000,
    *,
    seed: int = 0,
    max_words: int = MAX_WORDS,
    test_voices: float = 0.15,
    real_share: float = 0.5,
    test_speaker: str | None = "george",
    augment: Augment | None = Augment(),
    synthesizer: Synthesizer | None = None,
    recorded_share: float = 0.3,
    recorded: tuple[str, ...] = tuple(RECORDED),
    outside: int = 0,
) -> dict[str, list[Utterance]]:
    """Utterances per split, each by a synthetic voice or (with chance real_share) a real
    speaker. test_speaker is heard only in the test split; the other three speakers train,
    their takes 45-49 kept for validation (test_speaker None: all four train, and the test
    split's real utterances are their takes 45-49 too). Synthetic valid and test voices
    are never heard in training; a synthetic training utterance is spoken, with chance
    recorded_share, by one of the synthesizers' voices made from recorded people
    (`recorded`: some of "flite", "festival", "pico", "rhvoice", "piper"; recorded_clips),
    by eSpeak NG otherwise. Training utterances are augmented (augment=None: not).
    `outside` utterances of each voice from outside FSDD (outside_utterances, clips
    trimmed, kind "outside") follow the test split's `test`."""
    rng = np.random.default_rng(seed)
    names = voices()
    order = rng.permutation(len(names))
    held = max(2, round(test_voices * len(names)))
    held_out = [names[i] for i in order[:held]]
    synthetic = {
        "train": [names[i] for i in order[held:]],
        "valid": held_out[: held // 2],
        "test": held_out[held // 2 :],
    }
    settings = _clip_settings(names, rng)
    bank = _default_bank(settings) if synthesizer is None else _clip_bank(synthesizer, settings)
    speakers = [s for s in REAL_SPEAKERS if s != test_speaker]
    train_takes = [t for t in range(50) if t not in VALID_TAKES]
    people = recorded_clips(recorded) if recorded_share > 0 else {}
    people_voices = list(people)
    bank = {**bank, **_real_bank(speakers, train_takes), **people}
    held_bank = {
        **bank,
        **_real_bank(speakers, VALID_TAKES),
        **(_real_bank([test_speaker], range(50)) if test_speaker is not None else {}),
    }
    heard = [f"fsdd:{s}" for s in speakers]
    real = {"train": heard, "valid": heard, "test": [f"fsdd:{test_speaker}"]}
    if test_speaker is None:
        real["test"] = heard
    out = {}
    for index, (name, size) in enumerate((("train", train), ("valid", valid), ("test", test))):
        r = np.random.default_rng([seed, index + 1])
        source = bank if name == "train" else held_bank
        plan = augment if name == "train" else None
        split = []
        for _ in range(size):
            pool = real[name] if r.random() < real_share else synthetic[name]
            if (
                people
                and name == "train"
                and pool is synthetic[name]
                and r.random() < recorded_share
            ):
                pool = people_voices
            voice = pool[int(r.integers(0, len(pool)))]
            split.append(_utterance(source, voice, r, max_words, plan, name != "train"))
        out[name] = split
    for voice in OUTSIDE_VOICES if outside > 0 else ():
        out["test"] += outside_utterances(voice, outside, trimmed=True, seed=seed)
    return out
