"""Tokenizers that travel with a model folder.

`MarianTokenizer` reads the files of a Marian (opus-mt) folder: source.spm and target.spm
(SentencePiece models) and vocab.json (pieces to model ids), so a user who downloaded an
opus-mt model can translate text with it through xattn.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from torch import Tensor

from ..utils import pad_batch, read_json

__all__ = ["MarianTokenizer", "load_tokenizer"]

_MARIAN_FILES = ("source.spm", "target.spm", "vocab.json")
_SPIECE_UNDERLINE = "\u2581"


class MarianTokenizer:
    """SentencePiece pieces mapped through vocab.json, with the end token appended.

    encode(text) -> ids of the source side; decode(ids) -> text of the target side (the
    source model when the vocabulary is shared, as transformers does).
    """

    def __init__(self, folder: str | Path) -> None:
        import sentencepiece as spm

        self.folder = folder = Path(folder)
        for name in _MARIAN_FILES:
            if not (folder / name).is_file():
                raise ValueError(f"{folder}: Marian tokenizer file {name} is missing")
        settings = {}
        if (folder / "tokenizer_config.json").is_file():
            settings = read_json(folder / "tokenizer_config.json")
        self.separate_vocabs = bool(settings.get("separate_vocabs", False))
        self.unk_token = settings.get("unk_token", "<unk>")
        self.eos_token = settings.get("eos_token", "</s>")
        self.pad_token = settings.get("pad_token", "<pad>")
        self.encoder = {str(k): int(v) for k, v in read_json(folder / "vocab.json").items()}
        self.target_encoder = self.encoder
        if self.separate_vocabs:
            self.target_encoder = {
                str(k): int(v) for k, v in read_json(folder / "target_vocab.json").items()
            }
        for name in (self.unk_token, self.eos_token, self.pad_token):
            if name not in self.encoder:
                raise ValueError(f"{folder / 'vocab.json'}: special token {name!r} is missing")
        self.decoder = {v: k for k, v in self.target_encoder.items()}
        self.source_decoder = {v: k for k, v in self.encoder.items()}
        self.spm_source = spm.SentencePieceProcessor(model_file=str(folder / "source.spm"))
        self.spm_target = spm.SentencePieceProcessor(model_file=str(folder / "target.spm"))
        self.eos_token_id = self.encoder[self.eos_token]
        self.pad_token_id = self.encoder[self.pad_token]
        self.unk_token_id = self.encoder[self.unk_token]
        self.special_ids = {self.eos_token_id, self.pad_token_id, self.unk_token_id}

    def encode(self, text: str) -> list[int]:
        """Source-side ids of one text, ending with the end token."""
        code = []
        if text.startswith(">>") and (end := text.find("<<")) != -1:  # language code >>fr<<
            code, text = [text[: end + 2]], text[end + 2 :]
        pieces = code + self.spm_source.encode(text, out_type=str)
        return [self.encoder.get(p, self.unk_token_id) for p in pieces] + [self.eos_token_id]

    def __call__(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """A batch: ids (B, S) right-padded with the pad token, and the mask (B, S)."""
        return pad_batch([self.encode(t) for t in texts], self.pad_token_id)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of one row of ids (a list or 1-D tensor)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        sp = self.spm_target if self.separate_vocabs else self.spm_source
        vocab = self.decoder if self.separate_vocabs else self.source_decoder
        specials = {self.eos_token, self.pad_token, self.unk_token}
        out, pieces = "", []
        for i in ids:
            if skip_special_tokens and i in self.special_ids:
                continue
            token = vocab.get(i) or sp.id_to_piece(i) or self.unk_token
            if token in specials:
                out += sp.decode_pieces(pieces) + token + " "
                pieces = []
            else:
                pieces.append(token)
        out += sp.decode_pieces(pieces)
        return out.replace(_SPIECE_UNDERLINE, " ").strip()

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        names = [*_MARIAN_FILES, "tokenizer_config.json"]
        if self.separate_vocabs:
            names.append("target_vocab.json")
        for name in names:
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, folder / name)


def load_tokenizer(folder: str | Path):
    """The tokenizer stored in a model folder, or None when it has none."""
    from .text_tokenizer import TranslationTokenizer

    folder = Path(folder)
    if all((folder / name).is_file() for name in _MARIAN_FILES):
        return MarianTokenizer(folder)
    if TranslationTokenizer.present(folder):
        return TranslationTokenizer.load(folder)
    return None
