"""Stream Transmission Buffers (RFC 5024 §8): the 4-octet header that frames every exchange buffer on TCP.

The header is ``0x10`` (version 1, flags 0) followed by the 24-bit big-endian length of the whole
STB, header included, so a valid STB is 5 … 100 003 octets long.  :func:`frame` builds header and
buffer as one ``bytes`` object (one write, one TLS record); :class:`StreamDecoder` cuts a byte
stream into exchange buffers, however the stream was split into reads.

Decoding is liberal about the reserved flag nibble (ignored) and strict about what it cannot
recover from: a version nibble other than 1 or a length outside 5 … 100 003 raises
:class:`~oftp2_provider.protocol.errors.DecodeError` with reason 07 (exchange buffer size error).
After such an error the stream is out of step; the decoder keeps raising the same error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from .errors import DecodeError, EsidReason, FieldError

__all__ = ["HEADER_SIZE", "MAX_BUFFER", "MAX_STB", "MIN_STB", "StreamDecoder", "frame", "header"]

HEADER_SIZE: Final = 4
#: Smallest and largest STB, header included.
MIN_STB: Final = 5
MAX_STB: Final = 100_003
#: Largest exchange buffer (STB minus header).
MAX_BUFFER: Final = MAX_STB - HEADER_SIZE
_VERSION: Final = 0x10


def header(length: int) -> bytes:
    """Return the STH for an exchange buffer of ``length`` octets (1 … 99 999)."""
    if not 1 <= length <= MAX_BUFFER:
        raise FieldError("STB", "length", length, f"an exchange buffer must be 1 to {MAX_BUFFER} octets")
    return (0x1000_0000 | (length + HEADER_SIZE)).to_bytes(4, "big")


def frame(buffer: bytes) -> bytes:
    """Return ``STH + buffer`` as one bytes object, ready for a single write."""
    return header(len(buffer)) + buffer


class StreamDecoder:
    """Incremental STB parser: :meth:`feed` received bytes, take exchange buffers with :meth:`next_buffer`.

    Handles partial reads (an STB split over many reads) and coalesced reads (several STBs in one);
    only the bytes of incomplete STBs are kept.
    """

    __slots__ = ("_buf", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: DecodeError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._buf += data

    @property
    def pending(self) -> int:
        """Number of bytes received but not yet returned as an exchange buffer."""
        return len(self._buf)

    def _leading(self, first: int, limit: int, max_len: int, max_octets: int) -> list[int]:
        """End offsets of the complete STBs at the front whose buffers start with octet ``first``.

        Stops at the first STB that is incomplete, invalid, starts with another octet or is longer
        than ``max_len``, after ``limit`` STBs and once ``max_octets`` are covered.
        """
        if self._error is not None:
            return []
        buf = self._buf
        end = len(buf)
        pos = 0
        ends: list[int] = []
        while len(ends) < limit and pos + MIN_STB <= end and pos < max_octets:
            length = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            if (
                buf[pos] & 0xF0 != _VERSION
                or not MIN_STB <= length <= MAX_STB
                or pos + length > end
                or buf[pos + HEADER_SIZE] != first
                or length - HEADER_SIZE > max_len
            ):
                break
            pos += length
            ends.append(pos)
        return ends

    def count_leading(self, first: int, limit: int) -> int:
        """How many complete STBs at the front carry a buffer starting with octet ``first`` (at most
        ``limit``); consumes nothing (used to see that a credit window has fully arrived)."""
        return len(self._leading(first, limit, MAX_BUFFER, MAX_STB * limit))

    def take_leading(
        self, first: int, limit: int, max_len: int, max_octets: int
    ) -> tuple[bytes, list[int]] | None:
        """Take a run of complete STBs at the front whose buffers start with octet ``first``.

        At most ``limit`` STBs, each buffer at most ``max_len`` octets, stopping once ``max_octets``
        are taken; anything else (incomplete, invalid, another command, too long) is left for
        :meth:`next_buffer`.  Returns the STBs *with* their headers as one ``bytes`` and the end
        offset of each STB in it, or ``None`` when the first STB does not qualify.
        """
        ends = self._leading(first, limit, max_len, max_octets)
        if not ends:
            return None
        buf = self._buf
        with memoryview(buf) as view:
            run = bytes(view[: ends[-1]])
        del buf[: ends[-1]]
        return run, ends

    def next_buffer(self) -> bytes | None:
        """Return the next complete exchange buffer (without STH), or ``None`` if more bytes are needed.

        Raises :class:`DecodeError` (reason 07) on a bad version nibble or a length outside
        5 … 100 003.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            return None
        if buf[0] & 0xF0 != _VERSION:
            self._error = DecodeError(
                f"stream transmission header: version nibble {buf[0] >> 4} is not 1 (octet 0x{buf[0]:02X})",
                EsidReason.EXCHANGE_BUFFER_SIZE_ERROR,
            )
            raise self._error
        length = (buf[1] << 16) | (buf[2] << 8) | buf[3]
        if not MIN_STB <= length <= MAX_STB:
            self._error = DecodeError(
                f"stream transmission header: length {length} is outside {MIN_STB}..{MAX_STB}",
                EsidReason.EXCHANGE_BUFFER_SIZE_ERROR,
            )
            raise self._error
        if len(buf) < length:
            return None
        with memoryview(buf) as view:
            result = bytes(view[HEADER_SIZE:length])
        del buf[:length]
        return result

    def __iter__(self) -> Iterator[bytes]:
        """Yield every exchange buffer that is complete now."""
        while (item := self.next_buffer()) is not None:
            yield item
