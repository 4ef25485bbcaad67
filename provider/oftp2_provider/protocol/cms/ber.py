"""A small incremental BER reader and DER/BER writing helpers.

The reader pulls bytes from a :class:`Source` (a file, or the decrypted output of an outer CMS
layer) and never holds more than one chunk of content octets: large OCTET STRINGs — primitive or
constructed, definite or indefinite length, nested — are streamed with :meth:`BerReader.octet_chunks`.
Small elements (algorithm identifiers, recipient and signer infos) are read whole with
:meth:`BerReader.read_element`, under a size cap, and handed to asn1crypto.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

__all__ = [
    "BerError",
    "BerReader",
    "Container",
    "FileSource",
    "Header",
    "IterSource",
    "Source",
    "encode_length",
    "tlv",
]

# Universal tags used by CMS.
INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06
SEQUENCE = 0x10
SET = 0x11

CLASS_UNIVERSAL = 0
CLASS_CONTEXT = 2

#: Largest "small" element read into memory (certificate sets, signer infos).
MAX_ELEMENT = 4 << 20


class BerError(ValueError):
    """The input is not the BER structure expected (truncated, malformed, wrong tag)."""


class Source(Protocol):
    """Anything with ``read(n) -> bytes`` returning up to *n* octets, ``b""`` at the end."""

    def read(self, n: int, /) -> bytes: ...


class FileSource:
    """A binary file as a :class:`Source`."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh

    def read(self, n: int, /) -> bytes:
        """Read up to *n* octets."""
        return self._fh.read(n)


class IterSource:
    """An iterator of byte chunks as a :class:`Source` (used to chain CMS layers)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self._pos = 0

    def read(self, n: int, /) -> bytes:
        """Return up to *n* octets from the next chunk(s)."""
        while self._pos >= len(self._pending):
            nxt = next(self._chunks, None)
            if nxt is None:
                return b""
            self._pending, self._pos = nxt, 0
        if self._pos == 0 and n >= len(self._pending):
            out, self._pending = self._pending, b""
            return out
        out = self._pending[self._pos : self._pos + n]
        self._pos += len(out)
        return out


@dataclass(frozen=True, slots=True)
class Header:
    """An identifier + length header.  ``length`` is ``None`` for the indefinite form."""

    tag_class: int
    constructed: bool
    tag: int
    length: int | None
    raw: bytes  # the header octets as received

    @property
    def size(self) -> int:
        """Octets of the header itself."""
        return len(self.raw)

    def is_universal(self, tag: int) -> bool:
        """True for a universal-class element with this tag number."""
        return self.tag_class == CLASS_UNIVERSAL and self.tag == tag

    def is_context(self, tag: int) -> bool:
        """True for a context-specific ``[tag]`` element."""
        return self.tag_class == CLASS_CONTEXT and self.tag == tag

    def describe(self) -> str:
        """Human-readable tag, for error messages."""
        cls = ("UNIVERSAL", "APPLICATION", "CONTEXT", "PRIVATE")[self.tag_class]
        return f"{cls} {self.tag}{' constructed' if self.constructed else ''}"


@dataclass(slots=True)
class Container:
    """An entered constructed element: ``end`` is its end offset, ``None`` for indefinite length."""

    end: int | None
    what: str


class BerReader:
    """Pull-parser over a :class:`Source` with a bounded buffer."""

    def __init__(self, source: Source, *, read_size: int = 1 << 16) -> None:
        self._source = source
        self._buf = bytearray()
        self._pos = 0
        self._read_size = read_size
        self.offset = 0  # octets consumed so far

    # -- low level ---------------------------------------------------------------------------------
    def _available(self) -> int:
        return len(self._buf) - self._pos

    def _fill(self, n: int) -> bool:
        """Make *n* octets available; False at end of input."""
        while self._available() < n:
            if self._pos and self._pos > len(self._buf) // 2:
                del self._buf[: self._pos]
                self._pos = 0
            data = self._source.read(max(self._read_size, n - self._available()))
            if not data:
                return False
            self._buf += data
        return True

    def read_exact(self, n: int) -> bytes:
        """Read exactly *n* octets (keep *n* small) or raise :class:`BerError`."""
        if not self._fill(n):
            raise BerError(f"truncated input: wanted {n} octets at offset {self.offset}")
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        self.offset += n
        return out

    def read_some(self, n: int) -> bytes:
        """Read between 1 and *n* octets (for streaming content) or raise :class:`BerError`."""
        if self._available() == 0:
            if self._pos:
                self._buf.clear()
                self._pos = 0
            data = self._source.read(max(n, 1))
            if not data:
                raise BerError(f"truncated input: content ends early at offset {self.offset}")
            if len(data) <= n:
                self.offset += len(data)
                return data
            self._buf += data
        take = min(n, self._available())
        out = bytes(self._buf[self._pos : self._pos + take])
        self._pos += take
        self.offset += take
        return out

    def at_end(self) -> bool:
        """True when the input is exhausted."""
        return not self._fill(1)

    def peek(self, n: int = 1) -> bytes:
        """Look at up to *n* next octets without consuming them."""
        self._fill(n)
        return bytes(self._buf[self._pos : self._pos + n])

    # -- structure ---------------------------------------------------------------------------------
    def header(self) -> Header:
        """Read an identifier and length."""
        start = self.offset
        raw = bytearray(self.read_exact(1))
        first = raw[0]
        tag_class = first >> 6
        constructed = bool(first & 0x20)
        tag = first & 0x1F
        if tag == 0x1F:
            tag = 0
            for _ in range(5):
                raw += self.read_exact(1)
                b = raw[-1]
                tag = (tag << 7) | (b & 0x7F)
                if not b & 0x80:
                    break
            else:
                raise BerError(f"tag number too long at offset {start}")
        raw += self.read_exact(1)
        lb = raw[-1]
        length: int | None
        if lb < 0x80:
            length = lb
        elif lb == 0x80:
            if not constructed:
                raise BerError(f"indefinite length on a primitive element at offset {start}")
            length = None
        else:
            count = lb & 0x7F
            if count > 8:
                raise BerError(f"length of {count} octets at offset {start}")
            body = self.read_exact(count)
            raw += body
            length = int.from_bytes(body, "big")
        return Header(tag_class, constructed, tag, length, bytes(raw))

    def expect(
        self, tag: int, *, tag_class: int = CLASS_UNIVERSAL, constructed: bool | None = None
    ) -> Header:
        """Read a header and check its tag (and form when *constructed* is given)."""
        h = self.header()
        if h.tag_class != tag_class or h.tag != tag:
            want = ("UNIVERSAL", "APPLICATION", "CONTEXT", "PRIVATE")[tag_class]
            raise BerError(f"expected {want} {tag}, found {h.describe()} at offset {self.offset - h.size}")
        if constructed is not None and h.constructed != constructed:
            raise BerError(f"unexpected {'primitive' if constructed else 'constructed'} {h.describe()}")
        return h

    def enter(self, h: Header, what: str) -> Container:
        """Enter a constructed element whose header was just read."""
        if not h.constructed:
            raise BerError(f"{what}: expected a constructed element")
        return Container(None if h.length is None else self.offset + h.length, what)

    def more(self, c: Container) -> bool:
        """True while *c* has more elements; consumes the end-of-contents of an indefinite one."""
        if c.end is not None:
            if self.offset > c.end:
                raise BerError(f"{c.what}: element overruns its container")
            return self.offset < c.end
        if self.peek(2) == b"\x00\x00":
            self.read_exact(2)
            return False
        if not self._fill(1):
            raise BerError(f"{c.what}: truncated (no end-of-contents)")
        return True

    def leave(self, c: Container) -> None:
        """Skip whatever remains of *c* (including its end-of-contents)."""
        while self.more(c):
            self.skip(self.header())

    def skip(self, h: Header) -> None:
        """Skip the value of an element whose header was just read."""
        if h.length is None:
            c = self.enter(h, h.describe())
            self.leave(c)
            return
        remaining = h.length
        while remaining:
            remaining -= len(self.read_some(min(remaining, 1 << 20)))

    def read_value(self, h: Header, limit: int = MAX_ELEMENT) -> bytes:
        """Read the contents of a definite-length primitive element (small)."""
        if h.length is None or h.constructed:
            raise BerError(f"{h.describe()}: expected a primitive element")
        if h.length > limit:
            raise BerError(f"{h.describe()}: {h.length} octets exceed the limit of {limit}")
        return self.read_exact(h.length)

    def read_element(self, limit: int = MAX_ELEMENT, header: Header | None = None) -> bytes:
        """Read one whole element (header + contents, any length form) into memory, as encoded.

        Pass *header* when its header has already been read.
        """
        out = bytearray()
        self._copy_element(out, limit, header)
        return bytes(out)

    def _copy_element(self, out: bytearray, limit: int, header: Header | None = None) -> None:
        h = header or self.header()
        out += h.raw
        if h.length is not None:
            if len(out) + h.length > limit:
                raise BerError(f"{h.describe()}: element larger than {limit} octets")
            out += self.read_exact(h.length)
            return
        c = self.enter(h, h.describe())
        while True:
            if self.peek(2) == b"\x00\x00":
                self.read_exact(2)
                out += b"\x00\x00"
                return
            if not self._fill(1):
                raise BerError(f"{c.what}: truncated (no end-of-contents)")
            self._copy_element(out, limit)
            if len(out) > limit:
                raise BerError(f"{h.describe()}: element larger than {limit} octets")

    def octet_chunks(self, h: Header, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the content octets of an OCTET STRING (or implicitly tagged one) just read.

        Handles the primitive form and the constructed form (definite or indefinite, nested).
        """
        if not h.constructed:
            if h.length is None:
                raise BerError("primitive OCTET STRING without a length")
            remaining = h.length
            while remaining:
                data = self.read_some(min(remaining, chunk_size))
                remaining -= len(data)
                yield data
            return
        c = self.enter(h, "constructed OCTET STRING")
        while self.more(c):
            sub = self.header()
            if not sub.is_universal(OCTET_STRING):
                raise BerError(f"constructed OCTET STRING holds {sub.describe()}")
            yield from self.octet_chunks(sub, chunk_size)


def encode_length(n: int | None) -> bytes:
    """DER length octets (``None`` → the indefinite form ``0x80``)."""
    if n is None:
        return b"\x80"
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_header(h: Header) -> bytes:
    """Re-encode a header (short tag numbers only as in CMS; lengths in minimal form)."""
    if h.tag >= 0x1F:
        raise BerError("high tag numbers are not used by CMS")
    first = (h.tag_class << 6) | (0x20 if h.constructed else 0) | h.tag
    return bytes([first]) + encode_length(h.length)


def tlv(identifier: int, content: bytes) -> bytes:
    """A definite-length element from its identifier octet and contents."""
    return bytes([identifier]) + encode_length(len(content)) + content


def indefinite(identifier: int) -> bytes:
    """The header of an indefinite-length constructed element."""
    return bytes([identifier | 0x20, 0x80])


EOC = b"\x00\x00"
