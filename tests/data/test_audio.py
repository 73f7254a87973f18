"""Audio input and features: WAV files of every width, resampling that keeps a tone's
frequency, mel filters as transformers builds them, tones in their bands."""

import struct
import wave

import numpy as np
import pytest
from scipy.io import wavfile
from transformers.audio_utils import mel_filter_bank

from xattn.data.audio import SPEECH, LogMelSpec, log_mel, mel_filters, read_wav, resample


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
