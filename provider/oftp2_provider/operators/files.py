"""File helpers of the send operator: source expansion, DSN naming and text re-encoding.

Pure functions without Airflow imports, so they are easy to test and reuse (the gateway CLI uses the
same DSN rules).
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DSN_MAX = 26
_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))


class SourceError(ValueError):
    """A ``source`` entry matches no file or cannot be read."""


class DsnError(ValueError):
    """A DSN is not a valid SFIDDSN (names the DSN and the problem)."""


class EncodingConversionError(ValueError):
    """Text could not be converted; names the first offending character and its position."""

    def __init__(
        self, path: str, char: str, offset: int, line: int, column: int, target: str, why: str
    ) -> None:
        self.path = path
        self.char = char
        self.offset = offset
        self.line = line
        self.column = column
        self.target = target
        super().__init__(
            f"{path}: character {char!r} (U+{ord(char):04X}) at line {line}, column {column} "
            f"(character offset {offset}) {why} {target}"
        )


def _is_storage_path(obj: Any) -> bool:
    return hasattr(obj, "open") and hasattr(obj, "protocol") and not isinstance(obj, (str, Path))


def expand_sources(source: Any, staging: Path) -> list[Path]:
    """Expand ``source`` (a path, a glob, an ``ObjectStoragePath`` or a list of them) to local files.

    Remote object-storage files are copied into ``staging`` first.  Globs that match nothing and
    missing paths raise :class:`SourceError` naming the entry; the result is sorted within each
    entry and free of duplicates.
    """
    entries: Iterable[Any] = source if isinstance(source, (list, tuple)) else [source]
    out: list[Path] = []
    for entry in entries:
        if _is_storage_path(entry):
            if getattr(entry, "protocol", "file") in ("file", "local", ""):
                out.append(Path(str(entry.path)))
                continue
            staging.mkdir(parents=True, exist_ok=True)
            local = staging / Path(str(entry.path)).name
            try:
                with entry.open("rb") as src, local.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except OSError as exc:
                raise SourceError(f"source {entry!s}: cannot read ({exc})") from None
            out.append(local)
            continue
        text = os.fspath(entry)
        if glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise SourceError(f"source {text!r}: the pattern matches no file")
            out.extend(matches)
        else:
            path = Path(text)
            if not path.is_file():
                raise SourceError(f"source {text!r}: no such file")
            out.append(path)
    seen: set[Path] = set()
    unique = []
    for path in out:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(path)
    if not unique:
        raise SourceError("source is empty")
    return unique


def validate_dsn(dsn: str) -> str:
    """Check a virtual file name (SFIDDSN, 1–26 printable ASCII characters); return it unchanged."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise DsnError(f"DSN {dsn!r} is empty")
    if len(dsn) > _DSN_MAX:
        raise DsnError(f"DSN {dsn!r} is {len(dsn)} characters long; SFIDDSN allows {_DSN_MAX}")
    bad = next((c for c in dsn if c not in _PRINTABLE), None)
    if bad is not None:
        raise DsnError(f"DSN {dsn!r} contains {bad!r}; only printable 7-bit ASCII is allowed")
    if dsn != dsn.strip():
        raise DsnError(f"DSN {dsn!r} has leading or trailing spaces")
    return dsn


def dsn_for(pattern: str | None, path: Path, index: int) -> str:
    """The DSN of one file: ``pattern`` formatted with ``name``, ``stem``, ``suffix``, ``index``.

    Without a pattern the upper-cased file name is used.
    """
    if not pattern:
        return validate_dsn(path.name.upper())
    try:
        dsn = pattern.format(name=path.name, stem=path.stem, suffix=path.suffix.lstrip("."), index=index)
    except (KeyError, IndexError, ValueError) as exc:
        raise DsnError(
            f"DSN pattern {pattern!r}: cannot format ({exc!r}); use {{name}}, {{stem}}, {{suffix}}, {{index}}"
        ) from None
    return validate_dsn(dsn)


@dataclass(frozen=True)
class PreparedFile:
    """A file ready to send: the octets to transmit (possibly re-encoded) and their identity."""

    source: Path
    path: Path
    dsn: str
    size: int
    sha256: str


def sha256_file(path: Path, chunk: int = 1 << 20) -> tuple[int, str]:
    """Size and SHA-256 hex digest of a file (streamed)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def convert_encoding(
    src: Path, dst: Path, source_encoding: str, target_encoding: str, chunk: int = 1 << 16
) -> None:
    """Re-encode a text file, streaming; raises :class:`EncodingConversionError` at the first problem.

    The error names the offending character, its line and column (1-based) and character offset.
    """
    try:
        codecs.lookup(source_encoding)
        codecs.lookup(target_encoding)
    except LookupError as exc:
        raise ValueError(f"unknown text encoding: {exc}") from None
    decoder = codecs.getincrementaldecoder(source_encoding)("strict")
    encoder = codecs.getincrementalencoder(target_encoding)("strict")
    offset, line, column = 0, 1, 1
    with src.open("rb") as fin, dst.open("wb") as fout:
        raw_offset = 0
        while True:
            block = fin.read(chunk)
            final = not block
            try:
                text = decoder.decode(block, final)
            except UnicodeDecodeError as exc:
                bad = exc.object[exc.start : exc.start + 1]
                raise EncodingConversionError(
                    str(src),
                    bad.decode("latin-1"),
                    offset,
                    line,
                    column,
                    source_encoding,
                    f"(byte 0x{bad.hex()} at byte offset {raw_offset + exc.start}) is not valid",
                ) from None
            raw_offset += len(block)
            try:
                fout.write(encoder.encode(text, final))
            except UnicodeEncodeError as exc:
                before = text[: exc.start]
                nl = before.count("\n")
                err_line = line + nl
                err_col = (len(before) - before.rfind("\n")) if nl else column + len(before)
                raise EncodingConversionError(
                    str(src),
                    text[exc.start],
                    offset + exc.start,
                    err_line,
                    err_col,
                    target_encoding,
                    "cannot be encoded in",
                ) from None
            offset += len(text)
            nl = text.count("\n")
            if nl:
                line += nl
                column = len(text) - text.rfind("\n")
            else:
                column += len(text)
            if final:
                break


def prepare_files(
    paths: Sequence[Path],
    dsn_pattern: str | None,
    staging: Path,
    *,
    source_encoding: str | None = None,
    target_encoding: str | None = None,
) -> list[PreparedFile]:
    """DSN, optional re-encoding, size and SHA-256 for every file (CPU/IO work: call off the loop)."""
    prepared = []
    for index, path in enumerate(paths):
        dsn = dsn_for(dsn_pattern, path, index)
        send_path = path
        if target_encoding:
            staging.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{index:04d}-", suffix=f".{target_encoding}", dir=staging)
            os.close(fd)
            send_path = Path(tmp)
            convert_encoding(path, send_path, source_encoding or "utf-8", target_encoding)
        size, digest = sha256_file(send_path)
        prepared.append(PreparedFile(source=path, path=send_path, dsn=dsn, size=size, sha256=digest))
    return prepared
