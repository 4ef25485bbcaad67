"""DATA exchange buffers: subrecords, end-of-record flags and buffer compression (RFC 5024 §7).

A DATA buffer is ``b"D"`` followed by (header, subrecord) pairs.  The header octet holds the
end-of-record flag (``0x80``), the compression flag (``0x40``) and a count 0 … 63: the length of
the subrecord, or for a compressed subrecord the number of repetitions of its single octet.
The negotiated SDEB is the largest DATA buffer *including* the ``D`` octet.

Sending (:class:`DataEncoder`) fills every buffer greedily up to SDEB and splits a subrecord at the
buffer end; with compression, runs of ``min_run`` or more identical octets (found with a regular
expression, not a per-octet loop) become compressed subrecords.  That reproduces the RFC 2204
Appendix A buffer byte for byte.  Uncompressed data is packed with :mod:`struct`, so a full
99 999-octet buffer costs a handful of C calls (63 strided slice copies per buffer measured about
half as fast, see ``tests/benchmarks/test_bench_records.py``); :meth:`DataEncoder.write_records` places short
F/V records in an inline loop.  Compression still works run by run in Python, so it is one to two
orders of magnitude slower than the uncompressed path (it exists for old peers; OFTP2 peers
compress whole files with CMS instead).

Receiving (:class:`DataDecoder`) has a fast path for the common uncompressed case (every header is
``0x3F`` except the last one): the headers are checked with one strided slice and removed with one
strided ``del``.  Anything else goes through :func:`decode_subrecords`.

Record mapping by format (SFIDFMT):

* ``U``/``T`` — the whole file is one record; the octets are written as received (a ``T`` file keeps
  its CR LF, as in RFC 5024 Appendix A).  The sender flags only the last subrecord of the file.
* ``F``/``V`` — one record per EoR.  ``F`` records are written back to back.  ``V`` records need a
  separation on disk: by default they are written back to back as well (the record boundaries are
  lost, like a byte stream); pass ``v_prefix=True`` to prefix each record with its 2-octet
  big-endian length (the layout RFC 5024 §6.5 prescribes before signing a V file), or
  ``record_separator=b"\\r\\n"`` to append a separator after every record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from struct import Struct
from typing import Final

from .commands import RecordFormat
from .errors import DecodeError, EsidReason, FieldError

__all__ = [
    "CF",
    "EOR",
    "MAX_SUBRECORD",
    "DataDecoder",
    "DataEncoder",
    "decode_subrecords",
    "pack_records",
    "unpack",
]

EOR: Final = 0x80
CF: Final = 0x40
COUNT: Final = 0x3F
MAX_SUBRECORD: Final = 63
_FULL: Final = 64  # header + 63 octets
_BLOCK: Final = 64  # smallest power-of-two piece of a long run of full subrecords
_MAX_SUBS: Final = 99_999 // _FULL + 1
_HEADERS: Final = bytes([COUNT]) * _MAX_SUBS
_INVALID = EsidReason.COMMAND_CONTAINED_INVALID_DATA


def _make_structs(count: int) -> tuple[Struct, Struct]:
    """(unpack ``count`` × 63 octets, pack them after a placeholder header octet each)."""
    return Struct("63s" * count), Struct("x63s" * count)


_structs = lru_cache(maxsize=2 * _BLOCK)(_make_structs)


@lru_cache(maxsize=16)
def _whole_buffer_plan(sdeb: int) -> tuple[int, int, int, Struct, Struct]:
    """How a buffer of ``sdeb`` octets is filled from empty with uncompressed data.

    Returns (data octets it takes, full subrecords, octets of the last short subrecord or 0,
    unpacker of those octets, packer writing them after a placeholder octet each).
    """
    room = sdeb - 1
    full, rest = divmod(room, _FULL)
    short = rest - 1 if rest >= 2 else 0
    fmt_in = "63s" * full + (f"{short}s" if short else "")
    fmt_out = "x63s" * full + (f"x{short}s" if short else "")
    return full * MAX_SUBRECORD + short, full, short, Struct(fmt_in), Struct(fmt_out)


def _write_full(buf: bytearray, at: int, src: bytes | memoryview, off: int, count: int) -> None:
    """Write ``count`` full uncompressed subrecords of ``src[off:]`` into ``buf`` at ``at``.

    :mod:`struct` copies the subrecords (leaving a placeholder octet before each) in at most a few
    calls — the count is split into powers of two from 1024 down to 64 plus a rest below 64, so
    only a small set of cached formats is ever needed — and one strided slice assignment sets all
    the ``0x3F`` headers.
    """
    pos, soff, remaining = at, off, count
    piece = 1024
    while remaining:
        while piece > remaining and piece > _BLOCK:
            piece //= 2
        n = piece if piece <= remaining else remaining
        unpacker, packer = _structs(n)
        packer.pack_into(buf, pos, *unpacker.unpack_from(src, soff))
        pos += n * _FULL
        soff += n * MAX_SUBRECORD
        remaining -= n
    buf[at : at + count * _FULL : _FULL] = _HEADERS[:count]


def decode_subrecords(payload: bytes | memoryview) -> list[tuple[bytes, bool]]:
    """Split a DATA payload (everything after the ``D`` octet) into ``(chunk, end_of_record)`` pairs.

    Compressed subrecords are expanded.  Zero-length subrecords are kept (as empty chunks) and an
    empty payload gives an empty list.  A subrecord cut short by the end of the buffer raises
    :class:`DecodeError` with reason 06.
    """
    data = bytes(payload)
    out: list[tuple[bytes, bool]] = []
    n = len(data)
    i = 0
    while i < n:
        h = data[i]
        count = h & COUNT
        i += 1
        if h & CF:
            if i >= n:
                raise DecodeError(
                    f"DATA: compressed subrecord at offset {i} has no octet to repeat", _INVALID
                )
            chunk = data[i : i + 1] * count
            i += 1
        else:
            if i + count > n:
                raise DecodeError(
                    f"DATA: subrecord at offset {i} announces {count} octets, only {n - i} left", _INVALID
                )
            chunk = data[i : i + count]
            i += count
        out.append((chunk, bool(h & EOR)))
    return out


class DataEncoder:
    """Build complete DATA exchange buffers (each starting with ``b"D"``, each at most ``sdeb`` octets).

    * :meth:`write` streams one record (``U``/``T``: the whole file) in pieces; pass
      ``end_of_record=True`` with the last piece so that the final subrecord carries EoR.
    * :meth:`write_record` sends one complete record (``F``/``V``).
    * :meth:`flush` returns the partly filled last buffer.

    Every method returns the buffers that became complete.  Data still held back (at most one
    subrecord, so that the final subrecord can receive its EoR flag without an extra octet) is
    emitted by the next call.  Without compression the buffers do not depend on how the data was cut
    into :meth:`write` calls.  An empty record (or an empty file) is the single header ``0x80``.
    """

    __slots__ = (
        "_buf",
        "_compression",
        "_out",
        "_runs",
        "_sdeb",
        "_tail",
        "_used",
        "min_run",
        "record_count",
        "unit_count",
    )

    def __init__(self, sdeb: int, *, compression: bool = False, min_run: int = 3) -> None:
        if isinstance(sdeb, bool) or not isinstance(sdeb, int) or not 3 <= sdeb <= 99_999:
            raise FieldError("DataEncoder", "sdeb", sdeb, "must be between 3 and 99999")
        if not 2 <= min_run <= MAX_SUBRECORD:
            raise FieldError("DataEncoder", "min_run", min_run, "must be between 2 and 63")
        self._sdeb = sdeb
        self._compression = compression
        self.min_run = min_run
        # split() yields [literal, run, run octet, literal, run, run octet, …, literal]
        self._runs = re.compile(rb"((.)\2{%d,})" % (min_run - 1), re.DOTALL)
        self._buf = bytearray(sdeb)
        self._buf[0] = 0x44  # "D"
        self._used = 1
        self._out: list[bytes] = []
        self._tail = b""
        #: records completed so far (every EoR), for EFIDRCNT
        self.record_count = 0
        #: data octets accepted so far (before compression, without headers), for EFIDUCNT
        self.unit_count = 0

    # -- buffer management -------------------------------------------------------------------------

    def _close(self) -> None:
        if self._used > 1:
            with memoryview(self._buf) as view:
                self._out.append(bytes(view[: self._used]))
            self._used = 1

    def _take_output(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    @staticmethod
    def _capacity(room: int) -> int:
        """Data octets that fit into ``room`` octets as uncompressed subrecords."""
        full, rest = divmod(room, _FULL)
        return full * MAX_SUBRECORD + (rest - 1 if rest >= 2 else 0)

    def _place_literal(self, src: bytes | memoryview, start: int, end: int, eor: bool) -> None:
        """Place ``src[start:end]`` greedily, splitting at buffer ends; EoR on the last subrecord."""
        sdeb = self._sdeb
        buf = self._buf
        pos = start
        if start == end:
            if eor:
                if self._used >= sdeb:
                    self._close()
                buf[self._used] = EOR
                self._used += 1
                if self._used == sdeb:
                    self._close()
            return
        while pos < end:
            room = sdeb - self._used
            if room < 2:
                self._close()
                continue
            take = min(self._capacity(room), end - pos)
            full, rest = divmod(take, MAX_SUBRECORD)
            at = self._used
            if full:
                _write_full(buf, at, src, pos, full)
                at += full * _FULL
            if rest:
                buf[at] = rest
                buf[at + 1 : at + 1 + rest] = src[pos + full * MAX_SUBRECORD : pos + take]
                last_header = at
                at += 1 + rest
            else:
                last_header = at - _FULL
            pos += take
            if eor and pos == end:
                buf[last_header] |= EOR
            self._used = at
            if at == sdeb:
                self._close()

    def _hold_point(self, available: int) -> int:
        """How many of ``available`` octets to place now, holding back at most one whole subrecord."""
        room = self._sdeb - self._used
        placed = 0
        while True:
            if room < 2:
                room = self._sdeb - 1
            cap = self._capacity(room)
            left = available - placed
            if left > cap:
                placed += cap
                room = 0
                continue
            if left <= 0:
                return placed
            return placed + MAX_SUBRECORD * min((left - 1) // MAX_SUBRECORD, room // _FULL)

    def _place_short(self, lit: bytes, used: int) -> int:
        """Place a short literal inline (splitting at buffer ends); return the new fill level."""
        buf = self._buf
        sdeb = self._sdeb
        a, b = 0, len(lit)
        while a < b:
            room = sdeb - used
            if room < 2:
                self._used = used
                self._close()
                used = 1
                room = sdeb - 1
            n = min(b - a, MAX_SUBRECORD, room - 1)
            buf[used] = n
            buf[used + 1 : used + 1 + n] = lit[a : a + n]
            used += n + 1
            a += n
            if used == sdeb:
                self._used = used
                self._close()
                used = 1
        return used

    def _place_compressed(self, src: bytes | memoryview, start: int, end: int, eor: bool) -> None:
        """Split ``src[start:end]`` into literals and runs (one C call) and place them in one loop.

        Runs longer than 63 become several compressed subrecords; a remainder shorter than
        ``min_run`` joins the following literal.  EoR goes on the very last subrecord.
        """
        if start == end:
            self._place_literal(src, start, end, eor)
            return
        parts = self._runs.split(bytes(src[start:end]))
        min_run = self.min_run
        buf = self._buf
        sdeb = self._sdeb
        used = self._used
        last = len(parts) - 1
        carry = b""
        i = 0
        while True:
            lit = parts[i]
            if carry:
                lit = carry + lit
                carry = b""
            if i == last:
                if lit or not eor:
                    self._used = used
                    self._place_literal(lit, 0, len(lit), eor)
                    return
                self._used = used
                return
            if lit:
                if len(lit) > 4 * MAX_SUBRECORD:
                    self._used = used
                    self._place_literal(lit, 0, len(lit), False)
                    used = self._used
                else:
                    used = self._place_short(lit, used)
            run = parts[i + 1]
            octet = run[0]
            full, rest = divmod(len(run), MAX_SUBRECORD)
            if rest and rest < min_run:
                carry = run[-rest:]
                rest = 0
            pieces = full + (1 if rest else 0)
            # EoR on this run's last piece only if nothing follows it
            flag_last = eor and i + 3 == last and not carry and not parts[last]
            for piece in range(pieces):
                if sdeb - used < 2:
                    self._used = used
                    self._close()
                    used = 1
                count = MAX_SUBRECORD if piece < full else rest
                header = CF | count
                if flag_last and piece == pieces - 1:
                    header |= EOR
                buf[used] = header
                buf[used + 1] = octet
                used += 2
                if used == sdeb:
                    self._used = used
                    self._close()
                    used = 1
            i += 3

    # -- public API ----------------------------------------------------------------------------------

    def _next_size(self) -> int:
        """Size of the next uncompressed subrecord the greedy filler would start."""
        room = self._sdeb - self._used
        if room < 2:
            room = self._sdeb - 1
        return min(MAX_SUBRECORD, room - 1)

    def write(self, data: bytes | bytearray | memoryview, *, end_of_record: bool = False) -> list[bytes]:
        """Add ``data`` to the current record; ``end_of_record=True`` ends it (EoR on its last subrecord)."""
        src: bytes | memoryview = data if isinstance(data, bytes) else memoryview(data).cast("B")
        self.unit_count += len(src)
        if self._compression:
            return self._write_compressed(src, end_of_record)
        tail = self._tail
        start = 0
        if tail:
            # The held-back octets start the next subrecord: complete it with the first new octets
            # (a small copy) and carry on with ``src`` itself, so big writes are never copied whole.
            size = self._next_size()
            if len(tail) + len(src) <= size:
                src = tail + bytes(src)
            else:
                start = size - len(tail)
                self._place_literal(tail + bytes(src[:start]), 0, size, False)
            self._tail = b""
        total = len(src)
        if self._used > 1 and total - start > self._capacity(self._sdeb - self._used):
            # finish the open buffer the greedy way, so the fast path can take over from empty
            end = start + self._capacity(self._sdeb - self._used)
            self._place_literal(src, start, end, False)
            start = end
            if self._used > 1:
                self._close()
        if self._used == 1:
            start = self._whole_buffers(src, start, total)
        if end_of_record:
            self._place_literal(src, start, total, True)
            self.record_count += 1
            return self._take_output()
        cut = start + self._hold_point(total - start)
        if cut > start:
            self._place_literal(src, start, cut, False)
        self._tail = bytes(src[cut:])
        return self._take_output()

    def _whole_buffers(self, src: bytes | memoryview, start: int, total: int) -> int:
        """Fast path from an empty buffer: emit complete buffers while more than one buffer's worth
        of data is left (the rest, which may carry EoR or be held back, goes the general way).

        Each buffer is one ``unpack_from`` + ``pack_into`` and one strided header assignment — the
        same octets the greedy filler produces, with much less Python work per buffer.
        """
        take, full, short, unpacker, packer = _whole_buffer_plan(self._sdeb)
        if not full or total - start <= take:
            return start
        size = 1 + full * _FULL + (short + 1 if short else 0)
        headers = _HEADERS[:full]
        end_full = 1 + full * _FULL
        out = self._out
        buf = self._buf
        with memoryview(buf) as view:
            filled = view[:size]
            while total - start > take:
                packer.pack_into(buf, 1, *unpacker.unpack_from(src, start))
                buf[1:end_full:_FULL] = headers
                if short:
                    buf[end_full] = short
                out.append(bytes(filled))
                start += take
            filled.release()
        return start

    def _write_compressed(self, src: bytes | memoryview, end_of_record: bool) -> list[bytes]:
        if self._tail:
            src = self._tail + bytes(src)
            self._tail = b""
        total = len(src)
        if end_of_record:
            self._place_compressed(src, 0, total, True)
            self.record_count += 1
            return self._take_output()
        # hold back the last octets: a run may continue in the next write, and the final
        # subrecord must be able to receive the EoR flag
        cut = max(0, total - _FULL)
        if cut:
            self._place_compressed(src, 0, cut, False)
        self._tail = bytes(src[cut:])
        return self._take_output()

    def write_record(self, record: bytes | bytearray | memoryview) -> list[bytes]:
        """Send one complete record (``F``/``V`` formats): EoR on its last subrecord."""
        return self.write(record, end_of_record=True)

    def write_records(self, records: Iterable[bytes | bytearray | memoryview]) -> list[bytes]:
        """Send many complete records; the same buffers as :meth:`write_record` for each, faster.

        Short records that fit into the current buffer are placed by an inline loop, without the
        per-call overhead of :meth:`write`.
        """
        if self._compression or self._tail:
            out: list[bytes] = []
            for record in records:
                out += self.write(record, end_of_record=True)
            return out
        buf = self._buf
        sdeb = self._sdeb
        used = self._used
        units = 0
        count = 0
        done: list[bytes] = []
        for record in records:
            n = len(record)
            if n <= 2 * MAX_SUBRECORD and used + n + 2 <= sdeb:
                # fits, with at most two subrecords: inline
                if n > MAX_SUBRECORD:
                    buf[used] = MAX_SUBRECORD
                    buf[used + 1 : used + 1 + MAX_SUBRECORD] = record[:MAX_SUBRECORD]
                    used += 1 + MAX_SUBRECORD
                    rest = n - MAX_SUBRECORD
                    buf[used] = EOR | rest
                    buf[used + 1 : used + 1 + rest] = record[MAX_SUBRECORD:]
                    used += 1 + rest
                else:
                    buf[used] = EOR | n
                    buf[used + 1 : used + 1 + n] = record
                    used += 1 + n
                units += n
                count += 1
                if used == sdeb:
                    self._used = used
                    self._close()
                    used = 1
                continue
            self._used = used
            self.unit_count += units
            self.record_count += count
            units = count = 0
            done += self.write(record, end_of_record=True)
            used = self._used
        self._used = used
        self.unit_count += units
        self.record_count += count
        return done + self._take_output()

    def flush(self) -> list[bytes]:
        """Emit everything still held, including the partly filled buffer.

        Held-back data of an unfinished record is emitted *without* EoR; to end a file properly,
        pass ``end_of_record=True`` with the last :meth:`write` first.
        """
        if self._tail:
            tail, self._tail = self._tail, b""
            if self._compression:
                self._place_compressed(tail, 0, len(tail), False)
            else:
                self._place_literal(tail, 0, len(tail), False)
        self._close()
        return self._take_output()


class DataDecoder:
    """Receiver side of DATA: turns DATA payloads back into file octets, counting records and octets.

    :meth:`feed` takes the payload of one DATA buffer (everything after the ``D`` octet) and returns
    ``(octets_for_the_file, records_completed)``.  See the module docstring for the per-format
    mapping and the ``v_prefix`` / ``record_separator`` options.  With ``v_prefix`` a record longer
    than 65 535 octets cannot be represented and raises :class:`DecodeError` (reason 06).
    """

    __slots__ = (
        "_open",
        "_parts",
        "format",
        "in_record",
        "record_count",
        "record_separator",
        "unit_count",
        "v_prefix",
    )

    def __init__(self, fmt: RecordFormat, *, v_prefix: bool = False, record_separator: bytes = b"") -> None:
        self.format = RecordFormat(fmt)
        if v_prefix and self.format is not RecordFormat.VARIABLE:
            raise FieldError("DataDecoder", "v_prefix", v_prefix, "only applies to V-format files")
        self.v_prefix = v_prefix
        self.record_separator = bytes(record_separator)
        self._parts: list[bytes] = []  # the open record, when it must be held until its EoR
        self._open = 0  # octets of the open record
        #: records completed so far (every EoR)
        self.record_count = 0
        #: data octets received so far (decompressed, without headers, prefixes or separators)
        self.unit_count = 0
        #: True while a record has started but its EoR has not been seen
        self.in_record = False

    @staticmethod
    def _fast(payload: bytes | memoryview) -> tuple[bytes, bool] | None:
        """Uncompressed buffer whose headers are all 0x3F except the last: (data, last EoR), else None."""
        n = len(payload)
        if n < 2:
            return None
        last = (n - 1) // _FULL * _FULL
        h = payload[last]
        if h & CF or (h & COUNT) != n - last - 1 or payload[0:last:_FULL] != _HEADERS[: last // _FULL]:
            return None
        data = bytearray(payload)
        del data[::_FULL]
        return bytes(data), bool(h & EOR)

    def _scan(self, data: bytes) -> tuple[bytes, int]:
        """The general subrecord loop (any header mix, compression, prefixes, separators)."""
        parts: list[bytes] = []
        append = parts.append
        hold = self.v_prefix
        held = self._parts
        open_len = self._open
        separator = self.record_separator
        records = 0
        units = 0
        opened = self.in_record
        n = len(data)
        i = 0
        while i < n:
            h = data[i]
            count = h & COUNT
            i += 1
            if h & CF:
                if i >= n:
                    raise DecodeError(
                        f"DATA: compressed subrecord at offset {i} has no octet to repeat", _INVALID
                    )
                chunk = data[i : i + 1] * count
                i += 1
            else:
                j = i + count
                if j > n:
                    raise DecodeError(
                        f"DATA: subrecord at offset {i} announces {count} octets, only {n - i} left", _INVALID
                    )
                chunk = data[i:j]
                i = j
            units += count
            if not hold:
                if count:
                    append(chunk)
            elif count:
                held.append(chunk)
                open_len += count
                if open_len > 0xFFFF:
                    raise DecodeError(
                        f"DATA: V record longer than 65535 octets ({open_len}) cannot be length-prefixed",
                        _INVALID,
                    )
            if h & EOR:
                records += 1
                opened = False
                if hold:
                    append(open_len.to_bytes(2, "big"))
                    parts.extend(held)
                    held.clear()
                    open_len = 0
                if separator:
                    append(separator)
            elif count:
                opened = True
        self._open = open_len
        self.unit_count += units
        self.record_count += records
        self.in_record = opened
        return b"".join(parts), records

    def feed_run(self, run: bytes, ends: list[int]) -> tuple[bytearray, int, int, DecodeError | None]:
        """Decode consecutive DATA STBs as taken by :meth:`StreamDecoder.take_leading` in one go.

        ``run`` holds the STBs with their 4-octet headers and ``D`` octets, ``ends`` the end of
        each.  Returns (file octets of all of them, records completed, STBs decoded, the error that
        stopped decoding at the next one or ``None``).  Common uncompressed buffers are appended
        and stripped of their headers in place (one copy, one strided ``del`` each).
        """
        out = bytearray()
        records = 0
        done = 0
        start = 0
        plain = not self.v_prefix and not self.record_separator
        with memoryview(run) as view:
            for end in ends:
                a = start + 5  # STH + "D"
                n = end - a
                start = end
                if plain and n >= 2:
                    last = (n - 1) // _FULL * _FULL
                    h = run[a + last]
                    if (
                        not h & CF
                        and (h & COUNT) == n - last - 1
                        and run[a : a + last : _FULL] == _HEADERS[: last // _FULL]
                    ):
                        at = len(out)
                        out += view[a:end]
                        del out[at::_FULL]
                        units = len(out) - at
                        self.unit_count += units
                        if h & EOR:
                            records += 1
                            self.record_count += 1
                            self.in_record = False
                        elif units:
                            self.in_record = True
                        done += 1
                        continue
                try:
                    data, recs = self._scan(bytes(view[a:end]))
                except DecodeError as exc:
                    return out, records, done, exc
                out += data
                records += recs
                done += 1
        return out, records, done, None

    def feed(self, payload: bytes | memoryview) -> tuple[bytes, int]:
        """Decode one DATA payload; return the octets to append to the file and the records completed."""
        if not self.v_prefix and not self.record_separator:
            fast = self._fast(payload)
            if fast is not None:
                data, eor = fast
                self.unit_count += len(data)
                if eor:
                    self.record_count += 1
                    self.in_record = False
                    return data, 1
                self.in_record = self.in_record or bool(data)
                return data, 0
        return self._scan(bytes(payload))


def pack_records(
    records: Iterable[bytes], sdeb: int, compression: bool = False, *, min_run: int = 3
) -> list[bytes]:
    """Encode records (EoR after each) into complete DATA buffers; a helper for tests and tools."""
    encoder = DataEncoder(sdeb, compression=compression, min_run=min_run)
    out = encoder.write_records(records)
    out += encoder.flush()
    return out


def unpack(buffers: Iterable[bytes]) -> list[bytes]:
    """Decode DATA buffers (each starting with ``b"D"``) back into records, split at every EoR.

    Octets after the last EoR (a record whose end was never flagged) form a final record.
    """
    records: list[bytes] = []
    current: list[bytes] = []
    for buffer in buffers:
        if buffer[:1] != b"D":
            raise DecodeError(
                f"not a DATA buffer: command octet {buffer[:1]!r}", EsidReason.COMMAND_NOT_RECOGNISED
            )
        for chunk, eor in decode_subrecords(memoryview(buffer)[1:]):
            current.append(chunk)
            if eor:
                records.append(b"".join(current))
                current = []
    if current and any(current):
        records.append(b"".join(current))
    return records
