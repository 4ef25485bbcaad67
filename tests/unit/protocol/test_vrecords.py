"""Walking the 2-octet length prefixes of V files (the restart position of V files counts records)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oftp2_provider.protocol.commands import RecordFormat
from oftp2_provider.protocol.records import DataDecoder, pack_records
from oftp2_provider.protocol.vrecords import VRecordScan, VRecordWalker, scan_v_records


def stored(records: list[bytes]) -> bytes:
    """The on-disk layout of a V file: each record after its 2-octet big-endian length."""
    return b"".join(len(r).to_bytes(2, "big") + r for r in records)


RECORDS = [b"", b"a", b"x" * 63, b"y" * 65535, b"", b"z" * 1000, b"end"]
CONTENT = stored(RECORDS)


def write(tmp_path: Path, content: bytes) -> Path:
    p = tmp_path / "v.dat"
    p.write_bytes(content)
    return p


def test_empty_file(tmp_path: Path) -> None:
    assert scan_v_records(write(tmp_path, b"")) == VRecordScan(0, 0, 0)
    assert scan_v_records(write(tmp_path, b""), 5) == VRecordScan(0, 0, 0)


def test_whole_file_ends_on_a_record_boundary(tmp_path: Path) -> None:
    scan = scan_v_records(write(tmp_path, CONTENT))
    assert scan == VRecordScan(len(RECORDS), len(CONTENT), sum(map(len, RECORDS)))


@pytest.mark.parametrize("limit", range(len(RECORDS) + 2))
def test_limit_stops_exactly_after_that_record(tmp_path: Path, limit: int) -> None:
    kept = RECORDS[:limit]
    h = hashlib.sha256()
    scan = scan_v_records(write(tmp_path, CONTENT), limit, hasher=h, chunk=4096)
    assert scan == VRecordScan(len(kept), len(stored(kept)), sum(map(len, kept)))
    assert h.digest() == hashlib.sha256(stored(kept)).digest()  # exactly the octets before the offset


@pytest.mark.parametrize(
    "tail",
    [
        b"\x00",  # half a length prefix
        b"\x00\x05abc",  # the record's data is cut short
        b"\xff\xff" + b"q" * 100,  # a long record cut short
        b"\x00\x01",  # a prefix without its one octet
    ],
)
def test_torn_last_record_is_not_counted(tmp_path: Path, tail: bytes) -> None:
    h = hashlib.sha256()
    scan = scan_v_records(write(tmp_path, CONTENT + tail), hasher=h)
    assert scan == VRecordScan(len(RECORDS), len(CONTENT), sum(map(len, RECORDS)))
    assert h.digest() == hashlib.sha256(CONTENT).digest()


def test_malformed_length_stops_at_the_last_good_record(tmp_path: Path) -> None:
    # garbage whose first "prefix" announces more octets than the file holds
    good = stored([b"one", b"two"])
    scan = scan_v_records(write(tmp_path, good + b"\xfe\x00" + b"junk" * 10 + stored([b"three"])))
    assert scan == VRecordScan(2, len(good), 6)
    assert scan_v_records(write(tmp_path, b"\xff\xff" + b"x" * 1000)) == VRecordScan(0, 0, 0)


def test_walker_reports_the_torn_tail() -> None:
    w = VRecordWalker()
    assert not w.feed(CONTENT[:6])
    assert w.result == VRecordScan(2, 5, 1) and w.pending == 1  # b"", b"a"; then half of the next prefix
    assert not w.feed(CONTENT[6:] + b"\x00\x09abc")
    assert w.result.records == len(RECORDS) and w.pending == 5


def test_walker_limit_zero_and_negative() -> None:
    w = VRecordWalker(0)
    assert w.done and w.feed(CONTENT) and w.result == VRecordScan(0, 0, 0)
    with pytest.raises(ValueError):
        VRecordWalker(-1)


def test_walker_ignores_input_once_done() -> None:
    w = VRecordWalker(2)
    assert w.feed(CONTENT)
    assert w.feed(b"\x00\x00" * 10)
    assert w.result == VRecordScan(2, 5, 1) and w.pending == 0


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(st.binary(max_size=300), max_size=40),
    cut=st.integers(min_value=0, max_value=20_000),
    sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8),
    limit=st.one_of(st.none(), st.integers(min_value=0, max_value=45)),
)
def test_any_chunking_gives_the_same_walk(
    records: list[bytes], cut: int, sizes: list[int], limit: int | None
) -> None:
    content = stored(records)[:cut]  # possibly torn anywhere
    # reference: what a V receiver would have written for the complete records it got
    complete: list[bytes] = []
    pos = 0
    while pos + 2 <= len(content):
        n = int.from_bytes(content[pos : pos + 2], "big")
        if pos + 2 + n > len(content):
            break
        complete.append(content[pos + 2 : pos + 2 + n])
        pos += 2 + n
    kept = complete if limit is None else complete[:limit]
    w = VRecordWalker(limit, hashlib.sha256())
    i = 0
    k = 0
    while i < len(content) and not w.done:
        step = sizes[k % len(sizes)]
        w.feed(content[i : i + step])
        i += step
        k += 1
    assert w.result == VRecordScan(len(kept), len(stored(kept)), sum(map(len, kept)))
    assert w.hasher.digest() == hashlib.sha256(stored(kept)).digest()


def test_matches_what_the_receiver_stores(tmp_path: Path) -> None:
    decoder = DataDecoder(RecordFormat.VARIABLE, v_prefix=True)
    data = b"".join(decoder.feed(buf[1:])[0] for buf in pack_records(RECORDS, 512))
    assert data == CONTENT
    assert scan_v_records(write(tmp_path, data)) == VRecordScan(
        decoder.record_count, len(data), decoder.unit_count
    )
