"""Audio input and features: WAV files of every width, the formats phones write through
FFmpeg, resampling that keeps a tone's frequency, mel filters as transformers builds them,
tones in their bands."""

import shutil
import struct
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import chirp, correlate
from transformers.audio_utils import mel_filter_bank

from tests.audio import encode
from xattn.data.audio import (
    SPEECH,
    LogMelSpec,
    log_mel,
    mel_filters,
    read_audio,
    read_wav,
    resample,
)

FILES = Path(__file__).parent / "files"


def tone(freq, rate, seconds=1.0, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(
        np.float32
    )


def peak_frequency(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()]


@pytest.mark.parametrize(
    "rate,new_rate", [(48000, 16000), (44100, 16000), (8000, 16000), (22050, 8000), (16000, 8000)]
)
def test_resampling_keeps_a_tone_and_removes_what_no_longer_fits(rate, new_rate):
    out = resample(tone(440, rate), rate, new_rate)
    assert abs(len(out) - new_rate) <= 1 and out.dtype == np.float32
    assert abs(peak_frequency(out, new_rate) - 440) <= 1.0
    assert np.abs(out[new_rate // 4 : -new_rate // 4]).max() == pytest.approx(0.5, abs=0.02)
    if new_rate < rate:  # a tone above the new Nyquist frequency is filtered out, not folded
        high = resample(tone(0.45 * rate, rate), rate, new_rate)
        assert np.abs(high[100:-100]).max() < 0.02
    assert resample(out, new_rate, new_rate) is out or np.array_equal(resample(out, 1, 1), out)


def write_pcm(path, frames: np.ndarray, rate: int, width: int, channels: int = 1):
    """A WAV of `width` bytes a sample written with the wave module (24-bit too)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 1:
            data = (frames * 127 + 128).astype(np.uint8).tobytes()
        elif width == 3:
            ints = (frames * (2**23 - 1)).astype(np.int32).reshape(-1)
            data = b"".join(struct.pack("<i", v)[:3] for v in ints)
        else:
            kind = {2: np.int16, 4: np.int32}[width]
            data = (frames * (np.iinfo(kind).max)).astype(kind).tobytes()
        w.writeframes(data)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_of_every_width_and_channels(tmp_path, width, channels):
    mono = tone(440, 11025, 0.5)
    frames = np.stack([mono, mono * 0.5], 1) if channels == 2 else mono
    write_pcm(tmp_path / "a.wav", frames, 11025, width, channels)
    samples, rate = read_wav(tmp_path / "a.wav")
    assert rate == 11025 and samples.shape == (len(mono),) and samples.dtype == np.float32
    expected = mono * (0.75 if channels == 2 else 1.0)  # the channels' mean
    tolerance = {1: 0.02, 2: 1e-4, 3: 1e-6, 4: 1e-6}[width]
    assert np.abs(samples - expected).max() < tolerance


def test_float_wav_and_errors(tmp_path):
    wavfile.write(tmp_path / "f.wav", 16000, tone(300, 16000, 0.25))
    samples, rate = read_wav(tmp_path / "f.wav")
    assert rate == 16000 and np.abs(samples - tone(300, 16000, 0.25)).max() < 1e-6
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(ValueError, match="text.wav: not a readable WAV file"):
        read_wav(tmp_path / "text.wav")
    wavfile.write(tmp_path / "empty.wav", 16000, np.zeros(0, np.int16))
    with pytest.raises(ValueError, match="empty.wav: the WAV file holds no samples"):
        read_wav(tmp_path / "empty.wav")
    with pytest.raises(ValueError, match="missing.wav: no such audio file"):
        read_wav(tmp_path / "missing.wav")


def sweep(rate):
    """One second sweeping 200 Hz to 3 kHz, faded in and out: one lag matches it."""
    t = np.arange(rate) / rate
    fade = np.minimum(1.0, np.minimum(t, 1.0 - t) / 0.02)
    return (0.5 * chirp(t, 200, 1.0, 3000) * fade).astype(np.float32)


@pytest.mark.parametrize(
    "name,codec,rate,right,min_snr",
    [
        ("memo.m4a", "aac", 44100, 1.0, 30),  # a phone's voice memo, stereo
        ("clip.mp3", "libmp3lame", 16000, None, 20),
        ("note.ogg", "libopus", 48000, None, 30),  # a messaging app's voice note
        ("clip.webm", "libopus", 48000, None, 30),
        ("clip.flac", "flac", 16000, None, 80),
        ("stereo.flac", "flac", 16000, 0.5, 80),  # channels that differ: their mean
        ("call.3gp", None, 8000, None, 6),  # a telephone speech codec: the shipped file
        ("mulaw.wav", "pcm_mulaw", 8000, None, 30),  # a WAV scipy does not read
    ],
)
def test_audio_formats_are_decoded_through_ffmpeg(tmp_path, name, codec, rate, right, min_snr):
    """Mono, or stereo with the sweep on the left and `right` times it on the right. PyAV's
    wheels from 18.1.1 on have no AMR encoder, only its decoder: the AMR-NB file in
    tests/data/files was encoded from `sweep(8000)` with libopencore_amrnb (PyAV 18.1.0)."""
    source = sweep(rate)
    if codec is None:
        shutil.copy(FILES / name, tmp_path / name)
    elif right is None:
        encode(tmp_path / name, source, rate, codec)
    else:
        encode(tmp_path / name, np.stack([source, right * source]), rate, codec)
        source = (1 + right) / 2 * source
    samples, got = read_audio(tmp_path / name)
    assert got == rate and samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - rate) < 0.1 * rate
    lag = int(correlate(samples, source, mode="full").argmax()) - (len(source) - 1)
    assert 0 <= lag < 0.03 * rate  # the codec's delay, if any
    heard = samples[lag : lag + len(source)]
    kept = source[: len(heard)]
    snr = 10 * np.log10((kept**2).sum() / ((heard - kept) ** 2).sum())
    assert snr > min_snr


def test_read_audio_takes_wav_as_read_wav_does_and_says_what_is_wrong(tmp_path, monkeypatch):
    write_pcm(tmp_path / "a.wav", tone(440, 11025, 0.5), 11025, 3)
    samples, rate = read_audio(tmp_path / "a.wav")
    expected = read_wav(tmp_path / "a.wav")
    assert rate == expected[1] and np.array_equal(samples, expected[0])
    (tmp_path / "text.m4a").write_text("hello")
    with pytest.raises(ValueError, match="text.m4a: not a readable audio file"):
        read_audio(tmp_path / "text.m4a")
    import matplotlib.pyplot as plt

    plt.imsave(tmp_path / "image.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="image.png: the file holds no audio stream"):
        read_audio(tmp_path / "image.png")
    with pytest.raises(ValueError, match="missing.mp3: no such audio file"):
        read_audio(tmp_path / "missing.mp3")
    encode(tmp_path / "clip.flac", sweep(8000), 8000, "flac")
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    needs = r"clip.flac: not a WAV file; .* pip install 'xattn\[audio\]'"
    with pytest.raises(ValueError, match=needs):
        read_audio(tmp_path / "clip.flac")
    assert np.array_equal(read_audio(tmp_path / "a.wav")[0], expected[0])  # WAV needs none


@pytest.mark.parametrize("scale", ["slaney", "htk"])
def test_mel_filters_equal_transformers(scale):
    spec = LogMelSpec(16000, 400, 160, 400, 80, 0.0, 8000.0, scale)
    expected = mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=80,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=16000,
        norm="slaney",
        mel_scale=scale,
    )
    np.testing.assert_allclose(mel_filters(spec), expected.T, atol=1e-7)


def test_log_mel_puts_a_tone_in_its_band():
    rate = SPEECH.sample_rate
    filters = mel_filters(SPEECH)  # (n_mels, bins): the band whose filter peaks nearest
    freqs = np.linspace(0, rate / 2, SPEECH.n_fft // 2 + 1)
    for freq in (300, 1200, 3000):
        features = log_mel(tone(freq, rate), SPEECH)
        assert features.shape == (1 + (rate - SPEECH.win_length) // SPEECH.hop_length, 40)
        band = features.mean(0).argmax()
        assert band == filters[:, np.abs(freqs - freq).argmin()].argmax()
    with pytest.raises(ValueError, match=r"expected mono audio"):
        log_mel(np.zeros((2, 100)))
