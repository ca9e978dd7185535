"""The SQLite log's commit journal: where an event is durable before it is acknowledged.

A commit of a few events from many agents cost SQLite a leaf page per event in the
channel index, and its WAL has to be copied and started over: acks queued behind those
device flushes for 20 to 270 ms (docs/scale.md, issue 30). So a commit is one
``write()`` of framed rows to a file of the log's own, appended and never rewritten;
SQLite takes them moments later, in bulk, off the ack path (``SqliteStore``'s fold).
After a crash the hub reads the journal back and gives SQLite what it lacks.

The framing is pure (``frame_rows``, ``read_frames``); ``Journal`` is the thin file
layer: segments named by their first seq, a new one past ``SEGMENT_BYTES``, a closed one
removed once SQLite holds all of it.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from taskcast.files import FILE_MODE

log = logging.getLogger(__name__)

# Each frame: payload length, CRC-32 of the payload, then the payload: one commit's
# rows, msgpack (one frame per commit: it is acknowledged whole or not at all).
_HEADER = struct.Struct("<II")
SEGMENT_BYTES = 64 * 1024 * 1024
_SUFFIX = ".journal-"

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[list[Any]]).decode
# A segment's first frame names the log it belongs to (its ``log_id``): a journal left
# beside a log that was deleted and made anew is not read into the new one.
_MARK = "taskcast-journal"

Row = tuple[Any, ...]


def frame_rows(rows: list[Row]) -> bytes:
    """One commit's rows (``stored_row`` order) as the journal holds them: one frame."""
    payload = _encode(rows)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def header_frame(log_id: str) -> bytes:
    """The frame a segment starts with."""
    return frame_rows([(_MARK, 1, log_id)])


def read_segment(data: bytes) -> tuple[str | None, list[Row], int]:
    """A segment's log id (None: no header, not a journal's), its rows, and how many of
    its bytes hold whole frames."""
    first, offset = read_frames(data, limit=1)
    header = first[0] if len(first) == 1 else None
    if not (isinstance(header, tuple) and len(header) == 3 and header[0] == _MARK):
        return None, [], 0
    rows, valid = read_frames(data[offset:])
    return str(header[2]), rows, offset + valid


def torn_tail(data: bytes, valid: int) -> bool:
    """Whether the bytes after ``valid`` are one frame cut short — what a write the
    process died in leaves (never acknowledged) — rather than damage: a whole frame
    that fails its check, or bytes beyond one."""
    rest = len(data) - valid
    if rest < _HEADER.size:
        return True
    length: int = _HEADER.unpack_from(data, valid)[0]
    return _HEADER.size + length > rest


def read_frames(data: bytes, limit: int | None = None) -> tuple[list[Row], int]:
    """The rows of every whole, intact frame from the start of ``data``, and how many
    bytes they take: reading stops at the first frame cut short or damaged (a write the
    process died in), so what follows is never taken for rows."""
    rows: list[Row] = []
    offset = 0
    view = memoryview(data)
    frames = 0
    while offset + _HEADER.size <= len(data) and (limit is None or frames < limit):
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = view[start : start + length]
        if length == 0 or len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            rows.extend(tuple(row) for row in _decode(payload))
        except msgspec.DecodeError:
            break
        offset = start + length
        frames += 1
    return rows, offset


@dataclass(slots=True)
class _Segment:
    path: Path
    first_seq: int
    last_seq: int


class Journal:
    """The journal's files beside the log: ``<log>.journal-<first seq>``."""

    def __init__(
        self, log_path: Path, *, fsync: bool = False, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self._log_path = log_path
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._closed: list[_Segment] = []
        self._current: _Segment | None = None
        self._fd: int | None = None
        self._size = 0
        self._log_id = ""
        self._broken: str | None = None

    def segment_paths(self) -> list[Path]:
        """The journal's files on disk, oldest first."""
        prefix = self._log_path.name + _SUFFIX
        found = [
            (int(path.name[len(prefix) :]), path)
            for path in self._log_path.parent.glob(prefix + "*")
            if path.name[len(prefix) :].isdigit()
        ]
        return [path for _, path in sorted(found)]

    def recover(self, log_id: str) -> list[Row]:
        """Every row the journal's files of log ``log_id`` hold, in seq order. A frame
        cut short (the process died writing it: it was never acknowledged) is cut off
        its file. A file of another log (this one was deleted and made anew) is left out,
        and a damaged one is read up to the damage: either is copied aside first, for
        whoever wants to look, and the log says which."""
        rows: list[Row] = []
        for path in self.segment_paths():
            data = path.read_bytes()
            owner, found, valid = read_segment(data)
            if not data:  # made, never written to: a crash before its header
                log.warning("%s is empty: nothing in it to take back", path)
            elif owner is None:
                aside = _set_aside(path, "damaged", move=True)
                log.error(
                    "%s is damaged from its first entry on: none of its events can be taken"
                    " back (moved to %s)",
                    path,
                    aside,
                )
            elif owner != log_id:
                aside = _set_aside(path, "not-this-log", move=True)
                log.warning("%s is not of log %s: not read, moved to %s", path, log_id, aside)
            elif valid < len(data):
                if torn_tail(data, valid):
                    log.warning(
                        "%s: a last entry cut short (%d bytes: a write a crash cut short,"
                        " never acknowledged) cut off",
                        path,
                        len(data) - valid,
                    )
                else:
                    aside = _set_aside(path, "damaged", move=False)
                    log.error(
                        "%s is damaged after seq %s: the events in its last %d bytes are"
                        " lost (a copy is at %s)",
                        path,
                        found[-1][0] if found else "(none)",
                        len(data) - valid,
                        aside,
                    )
                os.truncate(path, valid)
            if owner == log_id:
                rows.extend(row for row in found if not rows or row[0] > rows[-1][0])
        return rows

    def start(self, next_seq: int, log_id: str) -> None:
        """Remove the files ``recover`` read (SQLite holds their rows now) and open a new
        one for seqs from ``next_seq``."""
        for path in self.segment_paths():
            path.unlink()
        self._log_id = log_id
        self._open(next_seq)

    def _open(self, first_seq: int) -> None:
        """A new segment, headed and (with ``fsync``) flushed before the journal takes it
        on: should any step fail, the file goes and the journal stays as it was."""
        path = self._log_path.with_name(f"{self._log_path.name}{_SUFFIX}{first_seq:020d}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the umask: it holds prompts
            header = header_frame(self._log_id)
            _write_all(fd, header)
            if self._fsync:  # the file and its name survive power loss too
                os.fdatasync(fd)
                directory = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        if self._fd is not None and self._current is not None:
            os.close(self._fd)
            self._closed.append(self._current)
        self._fd, self._size = fd, len(header)
        self._current = _Segment(path, first_seq, first_seq - 1)

    def write(self, data: bytes, last_seq: int) -> None:
        """Append the frames of seqs up to ``last_seq`` (one ``write``: the page cache
        keeps it through a kill -9 of the process); with ``fsync``, flushed: through
        power loss too. A write that fails (a full disk) is undone: a torn frame left
        before later ones would end the journal there when it is read back — and if it
        cannot be undone, the journal takes nothing more until the log is opened again."""
        if self._broken is not None:
            raise OSError(f"the journal of {self._log_path} is broken: {self._broken}")
        assert self._fd is not None and self._current is not None, "journal is not open"
        if self._size >= self._segment_bytes:
            self._open(self._current.last_seq + 1)
        try:
            _write_all(self._fd, data)
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError as failed:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError as exc:
                self._broken = f"{failed}; then could not undo the write: {exc}"
            raise
        self._size += len(data)
        self._current.last_seq = last_seq

    def release(self, stored_upto: int) -> None:
        """SQLite holds every seq up to ``stored_upto``: the closed files within it go."""
        while self._closed and self._closed[0].last_seq <= stored_upto:
            gone = self._closed.pop(0)
            gone.path.unlink(missing_ok=True)

    def close(self, *, held_elsewhere: bool = False) -> None:
        """``held_elsewhere``: SQLite holds every row, so the files go too (a log that
        closed cleanly leaves no second copy of its events behind)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if held_elsewhere:
            for path in self.segment_paths():
                path.unlink(missing_ok=True)
            self._closed.clear()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _set_aside(path: Path, why: str, *, move: bool) -> Path:
    """Keep ``path`` (or a copy) under a name the journal does not read, never one that
    is taken: a second time must not overwrite the first."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{why}-{stamp}")
    number = 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.{why}-{stamp}-{number}")
    if move:
        path.rename(aside)
    else:
        shutil.copyfile(path, aside)
        os.chmod(aside, FILE_MODE)
    return aside
