"""Audio input and features: audio files of any rate and format, resampling, and one
log-mel spectrogram function with presets (Whisper's, and xattn's own speech task's).

- `read_wav(path)`: 8-, 16-, 24- or 32-bit integer or float WAV, mono or stereo (channels
  averaged) -> float32 samples in [-1, 1] and the rate; a clear ValueError naming the file
  otherwise.
- `read_audio(path)`: the same for any file FFmpeg decodes (a phone's M4A, MP3, FLAC, OGG
  Vorbis or Opus, AMR, WebM, a video's sound) through PyAV, the optional `audio` extra;
  plain WAV needs nothing beyond scipy.
- `resample(samples, rate, new_rate)`: polyphase resampling (scipy's resample_poly) with
  its anti-aliasing filter; plain interpolation would fold high frequencies down.
- `log_mel(samples, spec)`: (frames, n_mels) float32 features: a periodic Hann window
  every hop, the power spectrum through triangular mel filters (Slaney-normalized),
  log10 with an 8-decade floor under the loudest bin, then (x + 4) / 4 (Whisper's scaling).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np

__all__ = [
    "SPEECH",
    "WHISPER",
    "LogMelSpec",
    "log_mel",
    "mel_filters",
    "read_audio",
    "read_wav",
    "resample",
    "whisper_spec",
]


@dataclass(frozen=True)
class LogMelSpec:
    """How samples become log-mel frames.

    center: reflect-pad n_fft // 2 samples at both ends, so frame i is centred on sample
    i * hop_length (Whisper, librosa); otherwise frame i covers samples [i * hop_length,
    i * hop_length + win_length). drop_last_frame: Whisper drops the final frame.
    pad_seconds: the samples are zero-padded or cut to this length first (Whisper: 30 s).
    mean_normalize: subtract each mel band's mean over the clip (cepstral mean
    normalization: a microphone's or a synthesizer's fixed colouring cancels out).
    """

    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    f_min: float = 0.0
    f_max: float | None = None
    mel_scale: str = "slaney"  # "slaney" (librosa's default, Whisper's) or "htk"
    center: bool = False
    drop_last_frame: bool = False
    pad_seconds: float | None = None
    mean_normalize: bool = False

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length={self.win_length} exceeds n_fft={self.n_fft}")
        if self.mel_scale not in ("slaney", "htk"):
            raise ValueError(f"mel_scale={self.mel_scale!r}; expected 'slaney' or 'htk'")

    @property
    def frame_seconds(self) -> float:
        """Seconds between frames."""
        return self.hop_length / self.sample_rate

    @property
    def pad_samples(self) -> int | None:
        return None if self.pad_seconds is None else round(self.pad_seconds * self.sample_rate)


def whisper_spec(n_mels: int = 80) -> LogMelSpec:
    """Whisper's features: 16 kHz, 25 ms windows every 10 ms, 80 or 128 mel bins up to
    8 kHz, padded or cut to 30 s (3,000 frames)."""
    return LogMelSpec(16000, 400, 160, 400, n_mels, 0.0, 8000.0, "slaney", True, True, 30.0)


WHISPER = whisper_spec(80)
# xattn's speech task: telephone-band audio (real recordings at 8 kHz carry nothing above
# 4 kHz, so the synthetic voices are band-limited the same way), 25 ms windows every 10 ms.
SPEECH = LogMelSpec(8000, 256, 80, 200, 40, 20.0, 4000.0, "slaney")


def _hz_to_mel(hz, scale: str):
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    # Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above
    logstep = np.log(6.4) / 27.0
    return np.where(
        hz < 1000.0, hz * 3.0 / 200.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / logstep
    )


def _mel_to_hz(mel, scale: str):
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    logstep = np.log(6.4) / 27.0
    return np.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * np.exp(logstep * (mel - 15.0)))


@lru_cache(maxsize=8)
def mel_filters(spec: LogMelSpec) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters evenly spaced on the mel scale between
    f_min and f_max, each scaled to unit area (Slaney normalization)."""
    f_max = spec.sample_rate / 2 if spec.f_max is None else spec.f_max
    mels = np.linspace(
        _hz_to_mel(spec.f_min, spec.mel_scale), _hz_to_mel(f_max, spec.mel_scale), spec.n_mels + 2
    )
    edges = _mel_to_hz(mels, spec.mel_scale)  # (n_mels + 2,)
    freqs = np.linspace(0, spec.sample_rate / 2, spec.n_fft // 2 + 1)
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    filters = np.maximum(0.0, np.minimum(lower, upper))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[:, None]


@lru_cache(maxsize=8)
def _window(length: int) -> np.ndarray:
    return np.hanning(length + 1)[:-1]  # periodic Hann, as torch.hann_window


def log_mel(samples, spec: LogMelSpec = SPEECH) -> np.ndarray:
    """(frames, n_mels) float32 log-mel features of mono float samples in [-1, 1] at
    spec.sample_rate."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 1:
        raise ValueError(f"samples have shape {samples.shape}; expected mono audio (N,)")
    if spec.pad_samples is not None:
        samples = np.pad(samples[: spec.pad_samples], (0, max(0, spec.pad_samples - len(samples))))
    if spec.center:
        samples = np.pad(
            samples, spec.n_fft // 2, mode="reflect" if len(samples) > 1 else "constant"
        )
    if len(samples) < spec.win_length:
        samples = np.pad(samples, (0, spec.win_length - len(samples)))
    count = 1 + (len(samples) - spec.win_length) // spec.hop_length
    index = np.arange(spec.win_length)[None, :] + spec.hop_length * np.arange(count)[:, None]
    frames = samples[index] * _window(spec.win_length)  # (frames, win_length)
    if spec.center and spec.win_length < spec.n_fft:  # the window sits in the middle
        left = (spec.n_fft - spec.win_length) // 2
        frames = np.pad(frames, ((0, 0), (left, spec.n_fft - spec.win_length - left)))
    power = np.abs(np.fft.rfft(frames, spec.n_fft)) ** 2  # (frames, n_fft // 2 + 1)
    logs = np.log10(np.maximum(power @ mel_filters(spec).T, 1e-10))
    if spec.drop_last_frame:
        logs = logs[:-1]
    logs = np.maximum(logs, logs.max() - 8.0)
    features = (logs + 4.0) / 4.0
    if spec.mean_normalize:
        features = features - features.mean(axis=0, keepdims=True)
    return features.astype(np.float32)


def resample(samples, rate: int, new_rate: int) -> np.ndarray:
    """float32 samples at new_rate (polyphase filtering; the same array when equal)."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == new_rate:
        return samples
    if rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {rate} and {new_rate}")
    from scipy.signal import resample_poly

    common = gcd(int(rate), int(new_rate))
    out = resample_poly(samples.astype(np.float64), new_rate // common, rate // common)
    return out.astype(np.float32)


_SCALES = {np.dtype("uint8"): None, np.dtype("int16"): 2.0**15, np.dtype("int32"): 2.0**31}


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(float32 mono samples in [-1, 1], sample rate) of a WAV file: 8-bit unsigned, 16-,
    24- or 32-bit signed or 32/64-bit float PCM; stereo and more channels are averaged."""
    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such audio file")
    try:
        rate, data = wavfile.read(path)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable WAV file ({err})") from err
    if data.dtype == np.uint8:
        samples = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype in _SCALES:
        samples = data.astype(np.float32) / np.float32(_SCALES[data.dtype])
    elif data.dtype.kind == "f":
        samples = data.astype(np.float32)
    else:
        raise ValueError(f"{path}: WAV samples of type {data.dtype} are not supported")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise ValueError(f"{path}: the WAV file holds no samples")
    return samples, int(rate)


_WAV_MAGIC = (b"RIFF", b"RIFX")


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(float32 mono samples, sample rate) of an audio file: a WAV file as `read_wav` reads
    it, anything else (or a WAV in a codec scipy does not read, such as mu-law or GSM)
    decoded by FFmpeg through PyAV: its first audio stream, channels averaged, at the
    file's own rate."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such audio file")
    with path.open("rb") as file:
        wav = file.read(4) in _WAV_MAGIC
    if wav:
        try:
            return read_wav(path)
        except ValueError as err:
            wav_error = err
    try:
        import av
    except ImportError:
        if wav:
            raise wav_error from None
        raise ValueError(
            f"{path}: not a WAV file; reading other audio formats (M4A, MP3, FLAC, OGG, ...) "
            f"needs PyAV: pip install 'xattn[audio]'"
        ) from None
    return _decode(path, av)


def _decode(path: Path, av) -> tuple[np.ndarray, int]:
    """Every frame of the file's first audio stream as float32 mono, through PyAV."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: the file holds no audio stream")
            stream = container.streams.audio[0]
            planar = av.AudioResampler(format="fltp")  # the file's layout and rate kept
            chunks, rate = [], None
            for frame in container.decode(stream):
                if rate is None:
                    rate = frame.sample_rate
                elif frame.sample_rate != rate:
                    raise ValueError(
                        f"{path}: the sample rate changes from {rate} to "
                        f"{frame.sample_rate} Hz inside the stream"
                    )
                chunks += [out.to_ndarray().mean(axis=0) for out in planar.resample(frame)]
            chunks += [out.to_ndarray().mean(axis=0) for out in planar.resample(None)]
    except av.error.FFmpegError as err:
        raise ValueError(f"{path}: not a readable audio file ({err})") from err
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise ValueError(f"{path}: the audio file holds no samples")
    return samples, int(rate)
