"""Collect the recordings of people saying the ten digit words that Debian packages ship,
for testing speech models on voices from outside the Free Spoken Digit Dataset:

- dawson: saytime's sound files by David C Dawson (package saytime 1.0-35; 8 kHz mu-law),
- cannonsmash: the score announcer of the table-tennis game Cannon Smash (csmash-data
  0.6.6; 16 kHz; the package does not name the speaker),
- tuxpaint: Tux Paint's US English sounds of the number stamps (tuxpaint-stamps-default
  2022.06.04; 11 kHz; the package does not name the speaker),
- arundel: Tux Paint's British English sounds of the number stamps, by John Arundel (the
  same package; 44.1 kHz).

Each clip is made mono, resampled to 8 kHz and stored as int16 with its silence as
recorded (xattn/data/outside/VOICE.npz, key DIGIT). Run once by a maintainer: apt install
saytime csmash-data tuxpaint-stamps-default. Allison Smith's recordings
(xattn/data/outside/allison.npz, from the Asterisk PBX prompts) are the fifth voice of the
same test panel.

Usage: python scripts/outside_voices.py [OUT_FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from xattn.data.audio import read_audio, resample
from xattn.data.digits import DIGIT_WORDS
from xattn.data.speech import SAMPLE_RATE

SOURCES = {
    "dawson": "/usr/share/saytime/{digit}.au",
    "cannonsmash": "/usr/share/games/csmash/wav/{word}.wav",
    "tuxpaint": "/usr/share/tuxpaint/stamps/symbols/math/{digit}.ogg",
    "arundel": "/usr/share/tuxpaint/stamps/symbols/math/{digit}_en_GB.ogg",
}


def mu_law(path: Path) -> tuple[np.ndarray, int]:
    """saytime's headerless .au files: G.711 mu-law bytes at 8 kHz."""
    code = ~np.frombuffer(path.read_bytes(), np.uint8)
    exponent, mantissa = (code >> 4) & 7, (code & 0x0F).astype(np.int32)
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.float32) / 32768.0, 8000


def read(path: Path) -> np.ndarray:
    """A clip as float32 mono at SAMPLE_RATE."""
    samples, rate = mu_law(path) if path.suffix == ".au" else read_audio(path)
    return resample(samples, rate, SAMPLE_RATE)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else Path(__file__).resolve().parents[1] / "xattn/data/outside")
    out.mkdir(parents=True, exist_ok=True)
    for voice, pattern in SOURCES.items():
        table = {}
        for digit, word in enumerate(DIGIT_WORDS):
            path = Path(pattern.format(digit=digit, word=word))
            if not path.exists():
                print(f"{path}: not found; install its Debian package (see the docstring)")
                return 2
            clip = read(path)
            table[str(digit)] = np.round(np.clip(clip, -1, 32767 / 32768) * 32768).astype(np.int16)
        np.savez_compressed(out / f"{voice}.npz", **table)
        lengths = ", ".join(f"{len(c) / SAMPLE_RATE:.2f}" for c in table.values())
        print(f"{voice}: {lengths} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
