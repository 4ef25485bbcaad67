"""File sources and sinks for the asyncio drivers: chunked, hashed, off the event loop.

* :class:`ChunkReader` reads a file from an offset in large chunks in a worker thread, hashing
  (SHA-256) what it reads, always one chunk ahead, so that disk reads and hashing overlap with
  encoding and sending (``hashlib`` and file I/O release the GIL).
* :class:`PartialFile` is the receiving side: ``<dir>/.partial/<name>`` plus a side file naming the
  virtual file it belongs to.  Writes are batched to about 1 MiB and handed to a worker thread
  (write + hash) while the event loop keeps decoding; :meth:`PartialFile.commit` fsyncs, renames
  into place and fsyncs the directory.  A restart resumes only from whole units of the *same*
  virtual file (for a V file: whole length-prefixed records, found by walking the prefixes).

Only one :class:`PartialFile` at a time owns a partial path in this process: opening a new one
fences the previous owner (an old session whose connection died unnoticed, still holding a
batch).  Every disk write of a batch checks ownership under a per-path lock, so a late flush of a
superseded writer can never land in the file a newer session writes or has already renamed into
place (its file descriptor still points at that inode); the stale writer reports
:class:`PartialFileSuperseded` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO

from .commands import SFID
from .vrecords import scan_v_records

__all__ = ["ChunkReader", "PartialFile", "PartialFileSuperseded", "hash_prefix", "partial_path"]

_BATCH = 1 << 20


class PartialFileSuperseded(OSError):
    """A newer :class:`PartialFile` took over this partial path; this writer no longer writes."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.EBUSY, "taken over by a newer session", str(path))


class _Slot:
    """Ownership of one partial path: the current owner and the lock every disk write holds."""

    __slots__ = ("lock", "owner")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner: object | None = None


_slots: dict[str, _Slot] = {}
_slots_lock = threading.Lock()  # order: _slots_lock, then a slot's lock


def _take_over(path: Path, owner: object) -> _Slot:
    """Make ``owner`` the owner of ``path``; returns its slot with the slot lock held."""
    with _slots_lock:
        slot = _slots.get(path_key := os.path.abspath(path))
        if slot is None:
            slot = _slots[path_key] = _Slot()
        slot.lock.acquire()  # waits for a batch of the previous owner being written
        slot.owner = owner
    return slot


def _release(path: Path, slot: _Slot, owner: object) -> None:
    """Forget the slot when ``owner`` still holds it (keeps the table small)."""
    with _slots_lock:
        key = os.path.abspath(path)
        if _slots.get(key) is slot and slot.owner is owner:
            del _slots[key]


def hash_prefix(path: Path, length: int) -> Any:
    """SHA-256 object over the first ``length`` octets of ``path`` (blocking; call in a thread)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = length
        while remaining > 0:
            block = f.read(min(remaining, 1 << 20))
            if not block:
                break
            h.update(block)
            remaining -= len(block)
    return h


def partial_path(target: Path) -> Path:
    """Where a file bound for ``target`` is written until it is complete."""
    return target.parent / ".partial" / target.name


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ChunkReader:
    """Read ``path`` from ``offset`` in ``chunk``-octet pieces, hashing them, one read ahead.

    ``hasher`` must already cover the octets before ``offset`` (see :func:`hash_prefix`).
    """

    def __init__(self, path: Path, offset: int, chunk: int, hasher: Any) -> None:
        self.path = path
        self.chunk = chunk
        self.hasher = hasher
        self._f: BinaryIO | None = None
        self._offset = offset
        self._next: asyncio.Future[bytes] | None = None

    def _open(self) -> BinaryIO:
        f = open(self.path, "rb")
        f.seek(self._offset)
        return f

    def _read(self, size: int) -> bytes:
        assert self._f is not None
        data = self._f.read(size)
        if data:
            self.hasher.update(data)
        return data

    async def read(self) -> bytes:
        """The next chunk (b"" at the end of the file); starts reading the following one."""
        if self._f is None:
            self._f = await asyncio.to_thread(self._open)
            data = await asyncio.to_thread(self._read, self.chunk)
        else:
            assert self._next is not None
            data = await self._next
        self._next = asyncio.ensure_future(asyncio.to_thread(self._read, self.chunk)) if data else None
        return data

    async def read_exactly(self, size: int) -> bytes:
        """Read ``size`` octets without read-ahead (record formats); short at the end of the file."""
        if self._next is not None:
            raise RuntimeError("read_exactly cannot follow read()")
        if self._f is None:
            self._f = await asyncio.to_thread(self._open)
        return await asyncio.to_thread(self._read, size)

    async def close(self) -> None:
        """Close the file (waits for a pending read-ahead)."""
        if self._next is not None:
            with contextlib.suppress(Exception):
                await self._next
            self._next = None
        if self._f is not None:
            self._f.close()
            self._f = None


class PartialFile:
    """A received file in progress: ``<target.parent>/.partial/<target.name>`` (see module docs)."""

    def __init__(self, target: Path, sfid: SFID) -> None:
        self.target = target
        self.path = partial_path(target)
        self.marker = self.path.with_name(self.path.name + ".sfid")
        self.sfid = sfid
        self.size = 0
        self.hasher: Any = hashlib.sha256()
        self.error: OSError | None = None
        self._f: io.FileIO | None = None
        self._batch: list[bytes | bytearray] = []
        self._batched = 0
        self._joined: bytearray | None = None  # reused for batches of several pieces
        self._pending: asyncio.Future[None] | None = None
        self._slot: _Slot | None = None

    @property
    def superseded(self) -> bool:
        """True when a newer :class:`PartialFile` took over the path (this one writes nothing more)."""
        return self._slot is not None and self._slot.owner is not self

    def _fence(self) -> bool:
        """Under the slot lock: True when we still own the path, else record the error and close."""
        if self._slot is not None and self._slot.owner is self:
            return True
        if not isinstance(self.error, PartialFileSuperseded):
            self.error = PartialFileSuperseded(self.path)
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None
        return False

    def _identity(self) -> str:
        return "\t".join(self.sfid.key)

    def _open(self, unit: int, want_restart: bool, v_records: bool) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        slot = self._slot = _take_over(self.path, self)  # a previous owner's writes stop here
        try:
            restart = offset = 0
            if want_restart and (unit or v_records) and self.path.exists() and self.marker.exists():
                if self.marker.read_text("utf-8") == self._identity():
                    if v_records:  # whole records up to the offer; a torn last record is dropped
                        restart, offset, _ = scan_v_records(self.path, self.sfid.restart)
                    else:
                        restart = min(self.sfid.restart, self.path.stat().st_size // unit)
                        offset = restart * unit
            f = open(self.path, "r+b" if restart else "wb", buffering=0)
            try:
                f.truncate(offset)
                f.seek(offset)
                self.marker.write_text(self._identity(), "utf-8")
                if offset:
                    self.hasher = hash_prefix(self.path, offset)
            except BaseException:
                f.close()
                raise
            self._f = f
        except BaseException:
            slot.lock.release()
            _release(self.path, slot, self)
            raise
        slot.lock.release()
        self.size = offset
        return restart

    async def open(self, unit: int, want_restart: bool, *, v_records: bool = False) -> int:
        """Open for writing; returns the restart position (in ``unit``-octet units) that can be offered.

        With ``v_records`` (an unsecured V file, ``unit`` 0) the position counts the complete
        length-prefixed records kept; :attr:`size` is then the octet offset they end at.
        """
        return await asyncio.to_thread(self._open, unit, want_restart, v_records)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._slot is not None
        with self._slot.lock:
            if not self._fence() or self._f is None:
                return
            try:
                view = memoryview(data)
                while view:  # unbuffered: nothing is left behind to be written later
                    n = self._f.write(view)
                    if not n:
                        raise OSError(errno.EIO, "short write", str(self.path))
                    view = view[n:]
                self.hasher.update(data)
            except OSError as exc:
                self.error = exc

    def _join(self, batch: list[bytes | bytearray], total: int) -> bytes | bytearray | memoryview:
        """One piece for the worker: one write and one hash call (each GIL hand-off between the
        worker and the event loop costs a futex round trip).  Several pieces are copied into a
        buffer reused from batch to batch — a fresh batch-sized allocation every time costs page
        faults and zeroing — which is free again because the previous batch has been written."""
        if len(batch) == 1:
            return batch[0]
        joined = self._joined
        if joined is None or len(joined) < total:
            joined = self._joined = bytearray(max(total, _BATCH))
        pos = 0
        for piece in batch:
            end = pos + len(piece)
            joined[pos:end] = piece
            pos = end
        return memoryview(joined)[:total]

    async def write(self, data: bytes | bytearray) -> None:
        """Append ``data`` (batched; the disk write and hashing run in a worker thread)."""
        if self.append(data):
            await self._dispatch()

    def append(self, data: bytes | bytearray) -> bool:
        """Add ``data`` to the batch without awaiting; True when :meth:`dispatch` should run now."""
        if data:
            self.size += len(data)
            self._batch.append(data)
            self._batched += len(data)
        return self._batched >= _BATCH

    async def dispatch(self) -> None:
        """Hand the batch to the worker thread (after the previous batch is written)."""
        await self._dispatch()

    async def _dispatch(self) -> None:
        if self._pending is not None:
            await self._pending
            self._pending = None
        if self._batch:
            data = self._join(self._batch, self._batched)
            self._batch, self._batched = [], 0
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._write, data))

    async def flush(self) -> None:
        """Wait until everything written so far is in the file (or refused: see :attr:`error`)."""
        await self._dispatch()
        if self._pending is not None:
            await self._pending
            self._pending = None

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the file so far (call after :meth:`flush`)."""
        return str(self.hasher.hexdigest())

    def _truncate(self) -> None:
        assert self._slot is not None
        with self._slot.lock:
            if self._fence() and self._f is not None:
                with contextlib.suppress(OSError):
                    self._f.truncate(0)

    async def truncate(self) -> None:
        """Throw the content away (counts did not match): the next attempt starts from 0."""
        await self.flush()
        if self._f is not None:
            await asyncio.to_thread(self._truncate)

    def _commit(self) -> None:
        assert self._slot is not None
        with self._slot.lock:
            if not self._fence():
                assert self.error is not None
                raise self.error
            assert self._f is not None
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            os.replace(self.path, self.target)
            _fsync_dir(self.target.parent)
            self.marker.unlink(missing_ok=True)
        _release(self.path, self._slot, self)

    async def commit(self) -> None:
        """fsync, rename into ``target`` and fsync the directory (raises OSError on failure,
        :class:`PartialFileSuperseded` when a newer session took the partial file over)."""
        await self.flush()
        if self.error is not None:
            raise self.error
        await asyncio.to_thread(self._commit)

    def _close(self) -> None:
        if self._slot is None:
            return
        with self._slot.lock:
            if self._f is not None:
                with contextlib.suppress(OSError):
                    self._f.close()
                self._f = None
        _release(self.path, self._slot, self)

    async def close(self) -> None:
        """Flush and close, keeping the partial file for a restart."""
        with contextlib.suppress(Exception):
            await self.flush()
        if self._f is not None:
            await asyncio.to_thread(self._close)
        elif self._slot is not None:
            _release(self.path, self._slot, self)
