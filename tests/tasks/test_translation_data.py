"""Parallel corpus reading: TSV and line-aligned pairs of files, errors with file:line."""

import pytest

from xattn.tasks.translation import DataError, read_parallel


def test_tsv_and_blank_lines(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("the cat\tel gato\n\n the dog \t el perro \r\n", encoding="utf-8")
    data = read_parallel(path)
    assert data.pairs == [("the cat", "el gato"), ("the dog", "el perro")]
    assert data.skipped == 0


def test_pair_of_files(tmp_path):
    (tmp_path / "s.txt").write_text("the cat\nthe dog\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("el gato\nel perro\n", encoding="utf-8")
    data = read_parallel(tmp_path / "s.txt", tmp_path / "t.txt")
    assert data.pairs == [("the cat", "el gato"), ("the dog", "el perro")]
    (tmp_path / "t.txt").write_text("el gato\n", encoding="utf-8")
    with pytest.raises(DataError, match="s.txt has 2 lines but .*t.txt has 1"):
        read_parallel(tmp_path / "s.txt", tmp_path / "t.txt")
    (tmp_path / "t.txt").write_bytes(b"el gato\n\n")
    with pytest.raises(DataError, match=r"t.txt:2: empty line \(use --skip-bad-lines"):
        read_parallel(tmp_path / "s.txt", tmp_path / "t.txt")
    data = read_parallel(tmp_path / "s.txt", tmp_path / "t.txt", skip_bad_lines=True)
    assert data.pairs == [("the cat", "el gato")] and data.skipped == 1


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: cannot read"):
        read_parallel(tmp_path / "nope.tsv")
