"""Restart of V-format files: walking the 2-octet length prefixes of the stored layout.

A V file is stored (and read for sending) as records each preceded by its length as a 2-octet
big-endian number (``DataDecoder(v_prefix=True)``, ``OutboundFile(format=V)``).  The restart
position of an unsecured V file counts *records* (RFC 5024 §5.3.3 SFIDREST, §5.3.4 SFPAACNT), and
records vary in length, so the octet offset where record N ends can only be found by walking the
prefixes from the start of the file.

:class:`VRecordWalker` walks a stream fed to it in chunks: one Python step per record (never per
octet), keeping at most one incomplete record (≤ 65 537 octets) between chunks, so memory stays
flat however large the file is.  :func:`scan_v_records` walks a file in 1 MiB reads; it blocks, so
call it in a worker thread.

A torn last record (its prefix, or its data, runs past the end of what was read) is not counted:
the scan ends after the last complete record.  Every 2-octet value is a valid length (0 … 65 535),
so a damaged partial file shows up the same way, as a record running past the end; the scan then
simply stops at the last record that fits.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["VRecordScan", "VRecordWalker", "scan_v_records"]

_CHUNK = 1 << 20


class VRecordScan(NamedTuple):
    """Where a walk over length-prefixed records ended."""

    #: complete records found
    records: int
    #: octets those records take in the stored layout, prefixes included (where the next one starts)
    offset: int
    #: octets of record data, prefixes excluded (the virtual-file octets, as EFIDUCNT counts them)
    data_octets: int


class VRecordWalker:
    """Count complete length-prefixed records in a stream fed with :meth:`feed`, up to ``limit``.

    With ``hasher`` (a :mod:`hashlib` object) it is updated with exactly the octets of the complete
    records walked, prefixes included, in order: after the walk it covers ``[0, offset)``.
    """

    __slots__ = ("_stop", "_tail", "data_octets", "done", "hasher", "offset", "records")

    def __init__(self, limit: int | None = None, hasher: Any = None) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        self._stop = sys.maxsize if limit is None else limit
        self._tail = b""
        self.hasher = hasher
        self.records = 0
        self.offset = 0
        self.data_octets = 0
        #: True once ``limit`` records are complete (later input is ignored)
        self.done = self._stop == 0

    @property
    def pending(self) -> int:
        """Octets after :attr:`offset` that do not (yet) form a complete record: a torn tail at the end."""
        return len(self._tail)

    @property
    def result(self) -> VRecordScan:
        """The records, stored octets and data octets walked so far."""
        return VRecordScan(self.records, self.offset, self.data_octets)

    def feed(self, block: bytes) -> bool:
        """Walk the records continued by ``block``; True once ``limit`` records are complete."""
        if self.done or not block:
            return self.done
        data = self._tail + block if self._tail else block
        end = len(data)
        stop = self._stop
        start_records = records = self.records
        pos = 0
        while records < stop and pos + 2 <= end:
            nxt = pos + 2 + (data[pos] << 8 | data[pos + 1])
            if nxt > end:
                break
            pos = nxt
            records += 1
        if pos:
            if self.hasher is not None:
                self.hasher.update(memoryview(data)[:pos])
            self.offset += pos
            self.data_octets += pos - 2 * (records - start_records)
            self.records = records
        self.done = records >= stop
        # not done: what is left is one incomplete record (at most 2 + 65 535 octets)
        self._tail = b"" if self.done else data[pos:]
        return self.done


def scan_v_records(
    path: Path, limit: int | None = None, *, hasher: Any = None, chunk: int = _CHUNK
) -> VRecordScan:
    """Walk the length-prefixed records of ``path`` from its start, up to ``limit`` records.

    Returns the complete records found (fewer than ``limit`` when the file ends first; a torn last
    record is not counted), the octet offset where the last of them ends and their data octets.
    ``hasher`` is updated with the octets before that offset.  Blocking: call it in a worker thread.
    """
    walker = VRecordWalker(limit, hasher)
    with open(path, "rb") as f:
        while not walker.done:
            block = f.read(chunk)
            if not block:
                break
            walker.feed(block)
    return walker.result
