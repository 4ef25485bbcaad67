"""The incremental BER reader: definite and indefinite forms, nesting, any input chunking."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oftp2_provider.protocol.cms.ber import BerError, BerReader, FileSource, IterSource, encode_length

# SEQUENCE (indefinite) { OCTET STRING constructed (indefinite) { "ab", constructed(definite){ "cd" }, "e" } }
NESTED = bytes.fromhex("308024800402616224040402636404016500000000")


def _chunked(data: bytes, sizes: list[int]) -> IterSource:
    parts, pos = [], 0
    for size in sizes:
        parts.append(data[pos : pos + size])
        pos += size
    parts.append(data[pos:])
    return IterSource(iter(p for p in parts if p))


def _content(reader: BerReader) -> bytes:
    seq = reader.enter(reader.expect(0x10, constructed=True), "outer")
    out = b"".join(reader.octet_chunks(reader.header(), chunk_size=1))
    reader.leave(seq)
    assert reader.at_end()
    return out


def test_nested_constructed_octet_string() -> None:
    assert _content(BerReader(FileSource(io.BytesIO(NESTED)))) == b"abcde"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5), max_size=20))
def test_any_chunking_gives_the_same_content(sizes: list[int]) -> None:
    assert _content(BerReader(_chunked(NESTED, sizes), read_size=2)) == b"abcde"


@pytest.mark.parametrize("cut", range(1, len(NESTED)))
def test_truncation_is_an_error(cut: int) -> None:
    reader = BerReader(FileSource(io.BytesIO(NESTED[:cut])))
    with pytest.raises(BerError):
        _content(reader)


def test_read_element_keeps_the_original_encoding() -> None:
    reader = BerReader(FileSource(io.BytesIO(NESTED + b"\x05\x00")))
    assert reader.read_element() == NESTED
    assert reader.read_element() == b"\x05\x00"
    assert reader.at_end()


def test_long_form_lengths_and_limits() -> None:
    payload = b"x" * 300
    data = b"\x04" + encode_length(300) + payload
    assert data[1:4] == b"\x82\x01\x2c"
    reader = BerReader(FileSource(io.BytesIO(data)))
    assert b"".join(reader.octet_chunks(reader.header(), 7)) == payload
    with pytest.raises(BerError, match="larger than"):
        BerReader(FileSource(io.BytesIO(data))).read_element(limit=100)


def test_bad_headers() -> None:
    with pytest.raises(BerError, match="indefinite length on a primitive"):
        BerReader(FileSource(io.BytesIO(b"\x04\x80"))).header()
    with pytest.raises(BerError, match="length of 9 octets"):
        BerReader(FileSource(io.BytesIO(b"\x04\x89" + b"\x01" * 9))).header()
    with pytest.raises(BerError, match="expected UNIVERSAL 16"):
        BerReader(FileSource(io.BytesIO(b"\x31\x00"))).expect(0x10)
