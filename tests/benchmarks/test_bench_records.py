"""DATA encode+decode throughput against plain ``bytes`` slicing of the same data (run by ``make bench``).

Both pipelines stream the same data in 1 MiB writes, cut it into exchange buffers of at most
SDEB octets, take the payload back out of every buffer and copy it into a preallocated sink (the
"file").  The baseline cuts with plain slices (``b"D" + chunk[i:i + SDEB - 1]``); the measured
pipeline goes through :class:`DataEncoder` and :class:`DataDecoder` (subrecord headers, greedy
filling, fast uncompressed path).  Each pipeline runs several times, interleaved, and the best time
of each is compared, so that load from other processes affects both sides alike.  The uncompressed test
asserts the round trip and a loose ratio floor that any per-octet Python loop would miss by far.

``OFTP2_BENCH_MIB`` changes the data size (default 256).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from oftp2_provider.protocol.commands import RecordFormat
from oftp2_provider.protocol.records import DataDecoder, DataEncoder

MIB = 1 << 20
SIZE = int(os.environ.get("OFTP2_BENCH_MIB", "256")) * MIB
CHUNK = MIB
SDEB = 99_999
ROUNDS = 5
RATIO_FLOOR = 0.03  # a per-octet Python loop stays well below 0.01; measured runs give 0.1-0.3


def _baseline(data: memoryview, sink: bytearray) -> int:
    size = len(data)
    pos = 0
    step = SDEB - 1
    for off in range(0, size, CHUNK):
        chunk = data[off : off + CHUNK]
        buffers = [b"D" + chunk[i : i + step] for i in range(0, len(chunk), step)]
        for buffer in buffers:
            payload = memoryview(buffer)[1:]
            sink[pos : pos + len(payload)] = payload
            pos += len(payload)
    return pos


def _records_pipeline(compression: bool) -> Callable[[memoryview, bytearray], int]:
    def run(data: memoryview, sink: bytearray) -> int:
        size = len(data)
        encoder = DataEncoder(SDEB, compression=compression)
        decoder = DataDecoder(RecordFormat.UNSTRUCTURED)
        pos = 0
        for off in range(0, size, CHUNK):
            buffers = encoder.write(data[off : off + CHUNK], end_of_record=off + CHUNK >= size)
            for buffer in buffers:
                payload = decoder.feed(memoryview(buffer)[1:])[0]
                sink[pos : pos + len(payload)] = payload
                pos += len(payload)
        for buffer in encoder.flush():
            payload = decoder.feed(memoryview(buffer)[1:])[0]
            sink[pos : pos + len(payload)] = payload
            pos += len(payload)
        assert decoder.record_count == 1 and not decoder.in_record
        return pos

    return run


def _compare(
    data: bytes, candidate: Callable[[memoryview, bytearray], int], label: str, rounds: int = ROUNDS
) -> tuple[float, float, float]:
    view = memoryview(data)
    sink = bytearray(len(data))
    best = {"baseline": float("inf"), label: float("inf")}
    for _ in range(rounds):
        for name, pipeline in (("baseline", _baseline), (label, candidate)):
            sink[:16] = bytes(16)
            start = time.perf_counter()
            written = pipeline(view, sink)
            elapsed = time.perf_counter() - start
            assert written == len(data)
            assert sink == data, f"{name}: output differs from input"
            best[name] = min(best[name], elapsed)
    mb = len(data) / 1e6
    base_rate, rate = mb / best["baseline"], mb / best[label]
    ratio = best["baseline"] / best[label]
    print()
    print(
        f"DATA encode+decode, {len(data) // MIB} MiB, SDEB {SDEB}, {CHUNK // MIB} MiB writes, best of {rounds}"
    )
    print(f"{'pipeline':<34}{'seconds':>10}{'MB/s':>10}")
    print(f"{'baseline (plain bytes slicing)':<34}{best['baseline']:>10.3f}{base_rate:>10.0f}")
    print(f"{label:<34}{best[label]:>10.3f}{rate:>10.0f}")
    print(f"ratio {label} / baseline = {ratio:.2f}")
    return base_rate, rate, ratio


@pytest.fixture(scope="module")
def random_data() -> bytes:
    return os.urandom(SIZE)


def test_uncompressed_throughput(random_data: bytes) -> None:
    _, _, ratio = _compare(random_data, _records_pipeline(False), "DataEncoder/DataDecoder")
    assert ratio > RATIO_FLOOR


def test_compressed_throughput_on_padded_text() -> None:
    # fixed-width text records padded with spaces: the kind of data buffer compression is for.
    # Compression works token by token in Python, so it is measured on 1/16 of the size and only
    # reported (no ratio floor); the wire size must show that the runs were found.
    line = b"4711;WIDGET   ;            ;000012;EUR;" + b" " * 40 + b"\r\n"
    size = SIZE // 16
    data = (line * (size // len(line) + 1))[:size]
    encoder = DataEncoder(SDEB, compression=True)
    wire = sum(len(b) for b in encoder.write(data, end_of_record=True) + encoder.flush())
    print(f"\ncompressed wire size: {wire / len(data):.2%} of {len(data) // MIB} MiB")
    assert wire < 0.6 * len(data)
    _compare(data, _records_pipeline(True), "DataEncoder/DataDecoder compressed", rounds=2)


def test_fixed_128_octet_records_throughput() -> None:
    # VDA-style fixed 128-octet records sent as F format: two subrecords and an EoR per record.
    size = SIZE // 16
    data = os.urandom(size - size % 128)

    def run(view: memoryview, sink: bytearray) -> int:
        encoder = DataEncoder(SDEB)
        decoder = DataDecoder(RecordFormat.FIXED)
        pos = 0
        for off in range(0, len(view), CHUNK):
            chunk = view[off : off + CHUNK]
            records = [chunk[i : i + 128] for i in range(0, len(chunk), 128)]
            for buffer in encoder.write_records(records):
                payload = decoder.feed(memoryview(buffer)[1:])[0]
                sink[pos : pos + len(payload)] = payload
                pos += len(payload)
        for buffer in encoder.flush():
            payload = decoder.feed(memoryview(buffer)[1:])[0]
            sink[pos : pos + len(payload)] = payload
            pos += len(payload)
        assert decoder.record_count == len(view) // 128
        return pos

    _compare(data, run, "F format, 128-octet records", rounds=2)
