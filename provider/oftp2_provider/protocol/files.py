"""File sources and sinks for the asyncio drivers: chunked, hashed, off the event loop.

* :class:`ChunkReader` reads a file from an offset in large chunks in a worker thread, hashing
  (SHA-256) what it reads, always one chunk ahead, so that disk reads and hashing overlap with
  encoding and sending (``hashlib`` and file I/O release the GIL).
* :class:`PartialFile` is the receiving side: ``<dir>/.partial/<name>`` plus a side file naming the
  virtual file it belongs to.  Writes are batched to about 1 MiB and handed to a worker thread
  (write + hash) while the event loop keeps decoding; :meth:`PartialFile.commit` fsyncs, renames
  into place and fsyncs the directory.  A restart resumes only from whole units of the *same*
  virtual file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO

from .commands import SFID

__all__ = ["ChunkReader", "PartialFile", "hash_prefix", "partial_path"]

_BATCH = 1 << 20


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
        self._f: BinaryIO | None = None
        self._batch: list[bytes] = []
        self._batched = 0
        self._pending: asyncio.Future[None] | None = None

    def _identity(self) -> str:
        return "\t".join(self.sfid.key)

    def _open(self, unit: int, want_restart: bool) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        restart = 0
        if want_restart and unit and self.path.exists() and self.marker.exists():
            if self.marker.read_text("utf-8") == self._identity():
                restart = min(self.sfid.restart, self.path.stat().st_size // unit)
        f = open(self.path, "r+b" if restart else "wb")
        try:
            offset = restart * unit
            f.truncate(offset)
            f.seek(offset)
            self.marker.write_text(self._identity(), "utf-8")
            if offset:
                self.hasher = hash_prefix(self.path, offset)
        except BaseException:
            f.close()
            raise
        self._f = f
        self.size = offset
        return restart

    async def open(self, unit: int, want_restart: bool) -> int:
        """Open for writing; returns the restart position (in ``unit``-octet units) that can be offered."""
        return await asyncio.to_thread(self._open, unit, want_restart)

    def _write(self, chunks: list[bytes]) -> None:
        assert self._f is not None
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one large write + hash (GIL released)
        try:
            self._f.write(data)
            self.hasher.update(data)
        except OSError as exc:
            self.error = exc

    async def write(self, data: bytes) -> None:
        """Append ``data`` (batched; the disk write and hashing run in a worker thread)."""
        if self.append(data):
            await self._dispatch()

    def append(self, data: bytes) -> bool:
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
            batch, self._batch, self._batched = self._batch, [], 0
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._write, batch))

    async def flush(self) -> None:
        """Wait until everything written so far is in the file."""
        await self._dispatch()
        if self._pending is not None:
            await self._pending
            self._pending = None
        if self._f is not None and self.error is None:
            try:
                await asyncio.to_thread(self._f.flush)
            except OSError as exc:
                self.error = exc

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the file so far (call after :meth:`flush`)."""
        return str(self.hasher.hexdigest())

    async def truncate(self) -> None:
        """Throw the content away (counts did not match): the next attempt starts from 0."""
        await self.flush()
        if self._f is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._f.truncate, 0)

    def _commit(self) -> None:
        assert self._f is not None
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        os.replace(self.path, self.target)
        _fsync_dir(self.target.parent)
        self.marker.unlink(missing_ok=True)

    async def commit(self) -> None:
        """fsync, rename into ``target`` and fsync the directory (raises OSError on failure)."""
        await self.flush()
        if self.error is not None:
            raise self.error
        await asyncio.to_thread(self._commit)

    async def close(self) -> None:
        """Flush and close, keeping the partial file for a restart."""
        with contextlib.suppress(Exception):
            await self.flush()
        if self._f is not None:
            self._f.close()
            self._f = None
