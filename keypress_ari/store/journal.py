"""A bounded, append-only, fsynced journal of call log ops (``STATE_DIR/journal/``).

The call log writer appends every batch here before it writes it to PostgreSQL and
acknowledges it once PostgreSQL committed it, so a PostgreSQL outage or a crash loses
nothing that was appended. This module is plain file I/O and thread-safe (one lock): the
writer calls it through ``asyncio.to_thread``, never on the key press path.

Layout of the directory:

* ``seg-<12 digit id>.log``: segments, appended to in id order. A record is an 8-byte
  header, ``<II`` = payload length and CRC32 of the payload, then the payload: one flag byte
  (1 on the last record of an ``append`` call) and the op as compact JSON with a type tag
  ``"t"`` (datetimes as ISO 8601 strings). A segment only ever ends after a whole append.
* ``committed``: the acknowledged position, ``<4sQQI`` = magic, segment id, byte offset,
  CRC32; rewritten in place (24 bytes) on every acknowledge.
* ``LOCK``: held (``flock``) while the journal is open, so two daemons never share it.

Durability: ``append`` does one ``write`` and one ``fsync`` per call (plus the directory
when it creates a segment). ``acknowledge`` rewrites ``committed`` without fsync; it is
fsynced before a segment is deleted and at ``close``. A process crash keeps it (page cache),
so nothing acknowledged is replayed; after a power loss an older position may come back and
a few acknowledged ops are replayed: harmless, every op is idempotent when replayed in order.

Recovery (``open``): from the committed position every record is read and its CRC checked;
a torn or corrupt tail is cut off with a warning, and so are the records of an append that
was cut short (those without their last record), so an append is all or nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import struct
import threading
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog

from keypress_ari.store.log_rows import decode_op, encode_op

log = structlog.get_logger("keypress.journal")

HEADER = struct.Struct("<II")
COMMITTED = struct.Struct("<4sQQI")
COMMITTED_MAGIC = b"KPJ1"
MAX_RECORD = 64 * 1024 * 1024  # a larger length in a header is garbage, not a record
END_OF_APPEND = 1
_SEGMENT_RE = re.compile(r"^seg-(\d{12})\.log$")


class JournalFull(Exception):
    """Appending would take the journal past ``max_bytes`` (or the disk is full)."""


@dataclasses.dataclass(eq=False)
class _Segment:
    id: int
    path: Path
    size: int = 0
    start: int = 0  # byte offset of the first record not yet acknowledged
    ends: array[int] = dataclasses.field(default_factory=lambda: array("q"))  # record ends
    next: int = 0  # index in ends of the first record not yet acknowledged

    @property
    def unacked(self) -> int:
        return len(self.ends) - self.next


class Journal:
    """``append`` batches, ``read`` the oldest not yet acknowledged, ``acknowledge`` them."""

    def __init__(self, directory: Path | str, max_bytes: int = 256 * 1024 * 1024, *,
                 segment_bytes: int | None = None) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(max_bytes // 8, 32 * 1024 * 1024))
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # the last segment, open for appending
        self._lock_fd: int | None = None
        self._committed_fd: int | None = None
        self._unacked = 0
        self._lock = threading.Lock()


    @property
    def unacked(self) -> int:
        """Records appended and not yet acknowledged."""
        return self._unacked

    @property
    def size_bytes(self) -> int:
        """Bytes on disk in segment files (acknowledged records included until their segment
        is deleted)."""
        return sum(s.size for s in self._segments)

    @property
    def is_open(self) -> bool:
        return self._lock_fd is not None


    def open(self) -> int:
        """Lock the directory, check what is there, cut a torn tail; returns the number of
        records not yet acknowledged (read them with :meth:`read` or :meth:`pending`)."""
        with self._lock:
            if self.is_open:
                return self._unacked
            self.directory.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(lock_fd)
                raise RuntimeError(
                    f"{self.directory}: journal in use by another process") from None
            self._lock_fd = lock_fd
            try:
                self._committed_fd = os.open(self.directory / "committed",
                                             os.O_RDWR | os.O_CREAT, 0o600)
                self._scan()
            except BaseException:
                self._close_files()
                raise
            return self._unacked

    def close(self) -> None:
        """Fsync the acknowledged position, close the files, release the lock."""
        with self._lock:
            if self._committed_fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._committed_fd)
            self._close_files()

    def _close_files(self) -> None:
        for fd in (self._fd, self._committed_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._committed_fd = self._lock_fd = None
        self._segments = []
        self._unacked = 0

    def _scan(self) -> None:
        ids = sorted(int(m.group(1)) for p in self.directory.iterdir()
                     if (m := _SEGMENT_RE.match(p.name)))
        seg_id, offset = self._read_committed(ids)
        self._segments = []
        for i in ids:
            if i < seg_id:  # fully acknowledged, left behind by a crash during cleanup
                (self.directory / _name(i)).unlink(missing_ok=True)
                continue
            seg = _Segment(i, self.directory / _name(i))
            self._load(seg, offset if i == seg_id else 0, last=i == ids[-1])
            self._segments.append(seg)
            self._unacked += seg.unacked
        if not self._segments:
            self._new_segment(max([*ids, seg_id]) + 1)
        else:
            self._fd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)
        if self._unacked:
            log.info("journal opened", directory=str(self.directory), pending=self._unacked,
                     bytes=self.size_bytes)

    def _read_committed(self, ids: Sequence[int]) -> tuple[int, int]:
        assert self._committed_fd is not None
        raw = os.pread(self._committed_fd, COMMITTED.size, 0)
        if len(raw) == COMMITTED.size:
            magic, seg_id, offset, crc = COMMITTED.unpack(raw)
            if magic == COMMITTED_MAGIC and crc == zlib.crc32(raw[:-4]):
                return seg_id, offset
        if raw and ids:
            log.warning("journal committed position unreadable; replaying all of it "
                        "(writes are idempotent)", directory=str(self.directory))
        return (ids[0] if ids else 0), 0

    def _load(self, seg: _Segment, start: int, *, last: bool) -> None:
        """Index the records of ``seg`` from ``start``; cut what is torn or incomplete."""
        data = seg.path.read_bytes()
        seg.size = len(data)
        start = min(start, len(data))
        seg.start = start
        pos, good_end, pending = start, start, array("q")
        problem = ""
        while pos < len(data):
            if pos + HEADER.size > len(data):
                problem = "torn record header"
                break
            length, crc = HEADER.unpack_from(data, pos)
            body = data[pos + HEADER.size:pos + HEADER.size + length]
            if length < 2 or length > MAX_RECORD or len(body) != length:
                problem = "torn record"
                break
            if zlib.crc32(body) != crc:
                problem = "record checksum mismatch"
                break
            pos += HEADER.size + length
            pending.append(pos)
            if body[0] & END_OF_APPEND:
                seg.ends.extend(pending)
                pending = array("q")
                good_end = pos
        if pending and not problem:
            problem = "append cut short"
        if good_end < len(data):
            # A crash mid-append leaves this at the end of the last segment: expected, and
            # what it held was never acknowledged to anyone. Anywhere else it is damage.
            (log.warning if last else log.error)(
                "journal tail dropped", segment=seg.path.name, reason=problem,
                offset=good_end, bytes=len(data) - good_end, whole_records=len(pending))
            with open(seg.path, "r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
            seg.size = good_end

    def append(self, ops: Iterable[Any]) -> None:
        """Write ``ops`` as one all-or-nothing append: one write, one fsync. Raises
        :class:`JournalFull` if it would take the journal past ``max_bytes``."""
        records = [encode_op(op) for op in ops]
        if not records:
            return
        chunks = []
        for n, payload in enumerate(records, 1):
            body = bytes((END_OF_APPEND if n == len(records) else 0,)) + payload
            chunks.append(HEADER.pack(len(body), zlib.crc32(body)))
            chunks.append(body)
        blob = b"".join(chunks)
        with self._lock:
            if not self.is_open:
                raise RuntimeError("journal is not open")
            seg = self._segments[-1]
            if seg.size and (seg.size + len(blob) > self.segment_bytes or (
                    self.size_bytes + len(blob) > self.max_bytes and not self._unacked)):
                self._rotate()  # a fresh segment; fully acknowledged ones are deleted
            if self.size_bytes + len(blob) > self.max_bytes:
                raise JournalFull(f"journal at {self.size_bytes} bytes, max_bytes "
                                  f"{self.max_bytes}, append of {len(blob)} bytes")
            seg = self._segments[-1]
            assert self._fd is not None
            try:
                written = 0
                while written < len(blob):
                    written += os.write(self._fd, blob[written:])
                os.fsync(self._fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, seg.size)  # drop the partial append
                raise JournalFull(f"journal write failed: {exc}") from exc
            pos = seg.size
            for chunk in chunks[1::2]:
                pos += HEADER.size + len(chunk)
                seg.ends.append(pos)
            seg.size = pos
            self._unacked += len(records)

    def _rotate(self) -> None:
        self._new_segment(self._segments[-1].id + 1)
        self._delete_acknowledged()

    def _new_segment(self, seg_id: int) -> None:
        path = self.directory / _name(seg_id)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        _fsync_dir(self.directory)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._segments.append(_Segment(seg_id, path))

    def _delete_acknowledged(self) -> None:
        done = [s for s in self._segments[:-1] if s.unacked == 0]
        if not done:
            return
        self._segments = [s for s in self._segments if s not in done]
        self._write_committed(*self._position())
        assert self._committed_fd is not None
        os.fsync(self._committed_fd)
        for seg in done:
            seg.path.unlink(missing_ok=True)
        _fsync_dir(self.directory)


    def read(self, limit: int, more: Callable[[Any], bool] | None = None) -> list[Any]:
        """The oldest ``limit`` records not yet acknowledged, decoded, in order (they stay
        unacknowledged). With ``more``, records after those are added while ``more(op)``."""
        out: list[Any] = []
        with self._lock:
            for op in self._unacked_ops():
                if len(out) >= limit and (more is None or not more(op)):
                    break
                out.append(op)
        return out

    def pending(self) -> list[Any]:
        """Every record not yet acknowledged, in order."""
        with self._lock:
            return list(self._unacked_ops())

    def _unacked_ops(self, chunk: int = 256) -> Iterator[Any]:
        for seg in self._segments:
            if seg.unacked == 0:
                continue
            fd = os.open(seg.path, os.O_RDONLY)
            try:
                i = seg.next
                while i < len(seg.ends):
                    j = min(len(seg.ends), i + chunk)
                    begin = seg.ends[i - 1] if i > seg.next else seg.start
                    data = os.pread(fd, seg.ends[j - 1] - begin, begin)
                    pos = 0
                    while pos < len(data):
                        length, _crc = HEADER.unpack_from(data, pos)
                        yield decode_op(data[pos + HEADER.size + 1:pos + HEADER.size + length])
                        pos += HEADER.size + length
                    i = j
            finally:
                os.close(fd)

    def acknowledge(self, count: int) -> None:
        """The oldest ``count`` records are stored elsewhere: never return them again."""
        with self._lock:
            if count > self._unacked:
                raise ValueError(f"acknowledge {count}: only {self._unacked} pending")
            left = count
            for seg in self._segments:
                if left == 0:
                    break
                take = min(left, seg.unacked)
                if take:
                    seg.next += take
                    seg.start = seg.ends[seg.next - 1]
                    left -= take
            self._unacked -= count
            if any(s.unacked == 0 for s in self._segments[:-1]):
                self._delete_acknowledged()
            else:
                self._write_committed(*self._position())

    def _position(self) -> tuple[int, int]:
        """Where the first record not yet acknowledged starts (or the end, if none)."""
        for seg in self._segments:
            if seg.unacked:
                return seg.id, seg.start
        last = self._segments[-1]
        return last.id, last.size

    def _write_committed(self, seg_id: int, offset: int) -> None:
        assert self._committed_fd is not None
        head = struct.pack("<4sQQ", COMMITTED_MAGIC, seg_id, offset)
        os.pwrite(self._committed_fd, head + struct.pack("<I", zlib.crc32(head)), 0)


def _name(seg_id: int) -> str:
    return f"seg-{seg_id:012d}.log"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
