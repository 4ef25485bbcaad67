"""Stream Transmission Buffers: header vectors, partial and coalesced reads, size errors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oftp2_provider.protocol.errors import DecodeError, EsidReason, FieldError
from oftp2_provider.protocol.framing import MAX_BUFFER, MAX_STB, MIN_STB, StreamDecoder, frame, header

SIZE = EsidReason.EXCHANGE_BUFFER_SIZE_ERROR


def test_limits() -> None:
    assert (MIN_STB, MAX_STB, MAX_BUFFER) == (5, 100_003, 99_999)


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (3, "10000007"),
        (19, "10000017"),
        (99_999, "100186a3"),
        (1, "10000005"),
        (99_996, "100186a0"),
    ],
)
def test_header_vectors(length: int, expected: str) -> None:
    assert header(length).hex() == expected


def test_frame_cdt_and_cd_vectors() -> None:
    assert frame(b"C  ") == bytes.fromhex("10000007432020")
    assert frame(b"R") == bytes.fromhex("1000000552")
    ssrm = frame(b"IODETTE FTP READY \r")
    assert ssrm[:4] == bytes.fromhex("10000017") and ssrm[4:] == b"IODETTE FTP READY \r"


@pytest.mark.parametrize("length", [0, 100_000])
def test_frame_refuses_impossible_sizes(length: int) -> None:
    with pytest.raises(FieldError, match="exchange buffer must be 1 to 99999 octets"):
        frame(b"x" * length)


def test_partial_reads_one_octet_at_a_time() -> None:
    wire = frame(b"SFPA") + frame(b"R")
    decoder = StreamDecoder()
    got: list[bytes] = []
    for i in range(len(wire)):
        decoder.feed(wire[i : i + 1])
        got.extend(decoder)
        if i < 7:
            assert got == []
    assert got == [b"SFPA", b"R"]
    assert decoder.pending == 0


def test_coalesced_reads_and_pending() -> None:
    decoder = StreamDecoder()
    decoder.feed(frame(b"C  ") + frame(b"R") + frame(b"P")[:3])
    assert decoder.next_buffer() == b"C  "
    assert decoder.next_buffer() == b"R"
    assert decoder.next_buffer() is None
    assert decoder.pending == 3
    decoder.feed(b"\x05P")
    assert list(decoder) == [b"P"]
    assert decoder.pending == 0
    assert decoder.next_buffer() is None


def test_largest_buffer_passes() -> None:
    body = b"D" + bytes(99_998)
    decoder = StreamDecoder()
    wire = frame(body)
    decoder.feed(memoryview(wire)[:50_000])
    assert decoder.next_buffer() is None
    decoder.feed(memoryview(wire)[50_000:])
    assert decoder.next_buffer() == body


def test_flags_nibble_is_ignored() -> None:
    decoder = StreamDecoder()
    decoder.feed(bytes.fromhex("1F00000552"))
    assert decoder.next_buffer() == b"R"


@pytest.mark.parametrize(
    ("wire", "needle"),
    [
        (bytes.fromhex("2000000552"), "version nibble 2"),
        (bytes.fromhex("0000000552"), "version nibble 0"),
        (bytes.fromhex("10000004"), "length 4"),
        (bytes.fromhex("10000000"), "length 0"),
        (bytes.fromhex("100186a4"), "length 100004"),
        (bytes.fromhex("10ffffff"), "length 16777215"),
    ],
)
def test_bad_headers_are_size_errors_and_stay_errors(wire: bytes, needle: str) -> None:
    decoder = StreamDecoder()
    decoder.feed(wire)
    with pytest.raises(DecodeError, match=needle) as info:
        decoder.next_buffer()
    assert info.value.reason == SIZE
    decoder.feed(frame(b"R"))
    with pytest.raises(DecodeError):
        decoder.next_buffer()


def test_error_is_raised_when_reached_not_before() -> None:
    decoder = StreamDecoder()
    decoder.feed(frame(b"R") + bytes.fromhex("20000005"))
    assert decoder.next_buffer() == b"R"
    with pytest.raises(DecodeError):
        decoder.next_buffer()


@settings(max_examples=200, deadline=None)
@given(
    buffers=st.lists(st.binary(min_size=1, max_size=300), max_size=12),
    cuts=st.lists(st.integers(0, 4000), max_size=20),
)
def test_any_split_of_the_stream_gives_the_same_buffers(buffers: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(frame(b) for b in buffers)
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    decoder = StreamDecoder()
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        decoder.feed(wire[a:b])
        got.extend(decoder)
    assert got == buffers
    assert decoder.pending == 0


def test_take_leading_takes_a_run_of_one_kind_and_leaves_the_rest() -> None:
    stbs = [frame(b"D" + bytes(10)), frame(b"D" + bytes(20)), frame(b"C  "), frame(b"D" + bytes(5))]
    dec = StreamDecoder()
    dec.feed(b"".join(stbs) + frame(b"D")[:3])
    assert dec.count_leading(0x44, 10) == 2
    taken = dec.take_leading(0x44, 10, 100, 1 << 20)
    assert taken is not None
    run, ends = taken
    assert run == stbs[0] + stbs[1] and ends == [len(stbs[0]), len(stbs[0]) + len(stbs[1])]
    assert dec.take_leading(0x44, 10, 100, 1 << 20) is None  # the CDT is next
    assert dec.next_buffer() == b"C  "
    assert dec.count_leading(0x44, 10) == 1  # the last STB is incomplete


@pytest.mark.parametrize(
    ("limit", "max_len", "max_octets", "taken"),
    [
        (1, 100, 1 << 20, 1),
        (10, 15, 1 << 20, 2),
        (10, 10, 1 << 20, 0),
        (10, 100, 1, 1),
        (10, 100, 16, 2),
        (0, 100, 1 << 20, 0),
    ],
)
def test_take_leading_limits(limit: int, max_len: int, max_octets: int, taken: int) -> None:
    dec = StreamDecoder()
    dec.feed(frame(b"D" + bytes(10)) * 2 + frame(b"D" + bytes(30)))
    got = dec.take_leading(0x44, limit, max_len, max_octets)
    assert (0 if got is None else len(got[1])) == taken


def test_take_leading_leaves_bad_headers_to_next_buffer() -> None:
    dec = StreamDecoder()
    dec.feed(b"\x20\x00\x00\x09D1234")
    assert dec.count_leading(0x44, 5) == 0
    assert dec.take_leading(0x44, 5, 100, 100) is None
    with pytest.raises(DecodeError):
        dec.next_buffer()
