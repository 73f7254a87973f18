"""Source and target tokenizers trained on a parallel corpus (the `tokenizers` library).

"word" (word level: the right choice for the small generated corpus, one token per word)
or "bpe" (subwords, for real corpora). Saved with the model as source_tokenizer.json and
target_tokenizer.json. Special tokens share ids on both sides: <pad> 0, <s> 1, </s> 2,
<unk> 3, matching ModelConfig's defaults (pad 0, decoder start 1, end 2).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch import Tensor

from ..utils import pad_batch

__all__ = ["SPECIALS", "TranslationTokenizer"]

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


class TranslationTokenizer:
    """A pair of tokenizers: source text -> ids (+ </s>), target ids -> text."""

    def __init__(self, source, target, kind: str = "word") -> None:
        self.source, self.target, self.kind = source, target, kind
        self.pad_token_id, self.bos_token_id, self.eos_token_id = PAD, BOS, EOS

    @classmethod
    def train(
        cls,
        pairs: Iterable[tuple[str, str]],
        kind: str = "word",
        vocab_size: int = 8000,
    ) -> TranslationTokenizer:
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
        """Target text of one row of ids, up to its end token."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if EOS in ids[1:]:
            ids = ids[: ids.index(EOS, 1) + 1]
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
    def load(cls, folder: str | Path) -> TranslationTokenizer:
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
