"""Render xattn/data/flite/voices.npz: the ten digit words spoken by Flite's four English
voices (kal, awb, rms, slt), nine ways each (three durations x three pitch targets),
trimmed and resampled to 8 kHz like the rest of the speech data.

Run once by a maintainer, with the Flite program on the PATH (Debian: apt install flite;
the file shipped was made with Flite 2.2, Debian package 2.2-5); xattn itself never calls
Flite. Usage: python scripts/flite_voices.py [OUT.npz]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

from xattn.data.audio import resample
from xattn.data.digits import DIGIT_WORDS
from xattn.data.speech import FLITE_TAKES, FLITE_VOICES, SAMPLE_RATE, _trim

STRETCHES = (0.85, 1.0, 1.2)  # Flite's duration_stretch: slower than 1 is longer
F0_TARGETS = {"kal": (85, 110, 140), "awb": (85, 110, 140), "rms": (85, 110, 140)}
F0_TARGETS["slt"] = (140, 175, 220)  # the one female voice


def speak(word: str, voice: str, stretch: float, f0: int, folder: Path) -> np.ndarray:
    """One clip, int16 at SAMPLE_RATE."""
    path = folder / "clip.wav"
    settings = ["--setf", f"duration_stretch={stretch}", "--setf", f"int_f0_target_mean={f0}"]
    subprocess.run(["flite", "-voice", voice, "-t", word, "-o", str(path), *settings], check=True)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    clip = _trim(resample(samples.astype(np.float32) / 32768.0, rate, SAMPLE_RATE))
    return (np.clip(clip, -1.0, 1.0) * 32767).astype(np.int16)


def main(argv: list[str]) -> int:
    if shutil.which("flite") is None:
        print("flite is not on the PATH (Debian: apt install flite)", file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else Path(__file__).parents[1] / "xattn/data/flite/voices.npz"
    table = {}
    with tempfile.TemporaryDirectory() as folder:
        for voice in FLITE_VOICES:
            for digit, word in enumerate(DIGIT_WORDS):
                ways = [(s, f0) for s in STRETCHES for f0 in F0_TARGETS[voice]]
                if len(ways) != FLITE_TAKES:  # what xattn.data.speech.flite_clips reads
                    raise ValueError(f"{len(ways)} ways to speak a word; expected {FLITE_TAKES}")
                for take, (stretch, f0) in enumerate(ways):
                    table[f"{voice}/{digit}_{take}"] = speak(word, voice, stretch, f0, Path(folder))
    np.savez_compressed(out, **table)
    print(f"{len(table)} clips -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
