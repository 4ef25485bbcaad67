"""Source expansion, DSN rules and text re-encoding of the send operator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from oftp2_provider.operators.files import (
    DsnError,
    EncodingConversionError,
    SourceError,
    convert_encoding,
    dsn_for,
    expand_sources,
    prepare_files,
    validate_dsn,
)


def test_expand_paths_globs_and_storage_paths(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    for name in ("b.txt", "a.txt", "c.dat"):
        (tmp_path / name).write_text(name)
    got = expand_sources(
        [str(tmp_path / "*.txt"), tmp_path / "c.dat", str(tmp_path / "a.txt")], tmp_path / "s"
    )
    assert [p.name for p in got] == ["a.txt", "b.txt", "c.dat"]
    local = expand_sources(ObjectStoragePath(f"file://{tmp_path / 'c.dat'}"), tmp_path / "s")
    assert [p.read_text() for p in local] == ["c.dat"]


def test_expand_errors_name_the_entry(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"\*\.none.*matches no file"):
        expand_sources(str(tmp_path / "*.none"), tmp_path)
    with pytest.raises(SourceError, match=r"missing\.txt.*no such file"):
        expand_sources([str(tmp_path / "missing.txt")], tmp_path)


@pytest.mark.parametrize(
    ("dsn", "fragment"),
    [("", "empty"), ("A" * 27, "27 characters"), ("RÉSUMÉ", "printable"), (" X", "leading")],
)
def test_invalid_dsn(dsn: str, fragment: str) -> None:
    with pytest.raises(DsnError, match=fragment):
        validate_dsn(dsn)


def test_dsn_pattern(tmp_path: Path) -> None:
    path = tmp_path / "invoice.xml"
    assert dsn_for(None, path, 0) == "INVOICE.XML"
    assert dsn_for("INV.{stem}.{index}", path, 3) == "INV.invoice.3"
    with pytest.raises(DsnError, match="cannot format"):
        dsn_for("X{nope}", path, 0)


def test_conversion_utf8_to_latin1(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    text = "Grüße aus Köln\n" * 5000  # spans several 64 KiB chunks
    src.write_text(text, encoding="utf-8")
    convert_encoding(src, dst, "utf-8", "iso-8859-1", chunk=1000)
    assert dst.read_bytes() == text.encode("iso-8859-1")


def test_conversion_names_first_unencodable_character(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("line one\nline two\nprice: 5 €\n", encoding="utf-8")
    with pytest.raises(EncodingConversionError) as info:
        convert_encoding(src, tmp_path / "out.txt", "utf-8", "iso-8859-1", chunk=7)
    err = info.value
    assert (err.char, err.line, err.column, err.offset) == ("€", 3, 10, 27)
    assert "U+20AC" in str(err) and "line 3, column 10" in str(err) and "iso-8859-1" in str(err)


def test_conversion_rejects_invalid_source_bytes(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"ok\n\xff")
    with pytest.raises(EncodingConversionError, match="0xff at byte offset 3"):
        convert_encoding(src, tmp_path / "out.txt", "utf-8", "iso-8859-1")


def test_prepare_files_hashes_what_is_sent(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("Straße\n", encoding="utf-8")
    (prepared,) = prepare_files([src], "DOC.{index}", tmp_path / "stage", target_encoding="latin-1")
    sent = "Straße\n".encode("latin-1")
    assert prepared.dsn == "DOC.0" and prepared.size == len(sent)
    assert prepared.sha256 == hashlib.sha256(sent).hexdigest()
    assert prepared.path.read_bytes() == sent and prepared.source == src
