"""Tokenizers that travel with a model folder.

- `PairTokenizer`: xattn's own, a source and a target tokenizer trained on a task's text with
  the `tokenizers` library, "word" (word level: one token per word, right for the generated
  data) or "bpe" (subwords, for real corpora); saved as source_tokenizer.json and
  target_tokenizer.json. Special tokens share ids on both sides: <pad> 0, <s> 1, </s> 2,
  <unk> 3, matching ModelConfig's defaults (pad 0, decoder start 1, end 2).
- `MarianTokenizer`: the files of a Marian (opus-mt) folder, source.spm and target.spm
  (SentencePiece models) and vocab.json (pieces to model ids), so a downloaded opus-mt
  model translates text through xattn.
- `JsonTokenizer`: a tokenizer.json written by the `tokenizers` library (Whisper folders
  carry one: byte-level BPE with special tokens).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from torch import Tensor

from ..utils import pad_batch, read_json

__all__ = ["SPECIALS", "JsonTokenizer", "MarianTokenizer", "PairTokenizer", "load_tokenizer"]

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
FILES = ("source_tokenizer.json", "target_tokenizer.json")


def _train(texts: Iterable[str], kind: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split("-", "isolated")]
        )
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS))
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS))
    else:
        raise ValueError(f"tokenizer kind {kind!r}; expected 'word' or 'bpe'")
    tok.train_from_iterator(texts, trainer)
    for i, name in enumerate(SPECIALS):
        assert tok.token_to_id(name) == i, "special tokens come first"
    return tok


class PairTokenizer:
    """A source and a target tokenizer trained on a task's text (translation pairs, or the
    words of captions, questions and answers): source text -> ids (+ </s>), target text <->
    ids (<s> ... </s>)."""

    def __init__(self, source, target, kind: str = "word") -> None:
        self.source, self.target, self.kind = source, target, kind
        self.pad_token_id, self.bos_token_id, self.eos_token_id = PAD, BOS, EOS

    @classmethod
    def train(
        cls,
        pairs: Iterable[tuple[str, str]],
        kind: str = "word",
        vocab_size: int = 8000,
    ) -> PairTokenizer:
        pairs = list(pairs)
        return cls(
            _train((s for s, _ in pairs), kind, vocab_size),
            _train((t for _, t in pairs), kind, vocab_size),
            kind,
        )

    @property
    def source_vocab_size(self) -> int:
        return self.source.get_vocab_size()

    @property
    def target_vocab_size(self) -> int:
        return self.target.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Source ids of one text, ending with </s>."""
        return [*self.source.encode(text, add_special_tokens=False).ids, EOS]

    def encode_target(self, text: str) -> list[int]:
        """Target ids with <s> first and </s> last (decoder input = all but the last)."""
        return [BOS, *self.target.encode(text, add_special_tokens=False).ids, EOS]

    def source_tokens(self, text: str) -> list[str]:
        return self.source.encode(text, add_special_tokens=False).tokens

    def target_tokens(self, ids) -> list[str]:
        """The target tokens of ids (start, end and padding left out)."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return [self.target.id_to_token(i) for i in ids if i not in (PAD, BOS, EOS)]

    def __call__(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """A batch of source texts: ids (B, S) right-padded, and the mask (B, S)."""
        return pad_batch([self.encode(t) for t in texts], PAD)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Target text of one row of ids (with or without the leading <s>), up to its end
        token."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if ids and ids[0] == BOS:
            ids = ids[1:]
        if EOS in ids:
            ids = ids[: ids.index(EOS) + 1]
        if self.kind == "word":
            text = " ".join(self.target_tokens(ids))
            return text.replace(" - ", "-")
        return self.target.decode(ids, skip_special_tokens=skip_special_tokens).strip()

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.source.save(str(folder / FILES[0]))
        self.target.save(str(folder / FILES[1]))
        (folder / "tokenizer_kind.txt").write_text(self.kind + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> PairTokenizer:
        from tokenizers import Tokenizer

        folder = Path(folder)
        try:
            source = Tokenizer.from_file(str(folder / FILES[0]))
            target = Tokenizer.from_file(str(folder / FILES[1]))
        except Exception as err:  # the tokenizers library raises its own exception types
            raise ValueError(f"{folder}: unreadable tokenizer files ({err})") from err
        kind_file = folder / "tokenizer_kind.txt"
        kind = kind_file.read_text().strip() if kind_file.is_file() else "word"
        return cls(source, target, kind)

    @staticmethod
    def present(folder: str | Path) -> bool:
        return all((Path(folder) / name).is_file() for name in FILES)


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


class JsonTokenizer:
    """A tokenizer.json: text <-> ids, with the file's special tokens (start, language, task,
    end) left out of decoded text."""

    FILE = "tokenizer.json"

    def __init__(self, folder: str | Path) -> None:
        from tokenizers import Tokenizer

        path = Path(folder) / self.FILE
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the tokenizers library raises its own exception types
            raise ValueError(f"{path}: unreadable tokenizer file ({err})") from err
        added = self.tokenizer.get_added_tokens_decoder()
        self.special_ids = {i for i, token in added.items() if token.special}

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def save(self, folder: str | Path) -> None:
        self.tokenizer.save(str(Path(folder) / self.FILE))


def load_tokenizer(folder: str | Path):
    """The tokenizer stored in a model folder, or None when it has none."""
    folder = Path(folder)
    if all((folder / name).is_file() for name in _MARIAN_FILES):
        return MarianTokenizer(folder)
    if PairTokenizer.present(folder):
        return PairTokenizer.load(folder)
    if (folder / JsonTokenizer.FILE).is_file():
        return JsonTokenizer(folder)
    return None
