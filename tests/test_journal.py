"""The on-disk journal of call log ops: plain file tests, no database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keypress_ari.calllog.ops import (
    CallerBlocked,
    CallEvent,
    CallOpened,
    CallUpdated,
    Op,
    WebhookQueued,
)
from keypress_ari.store.journal import Journal, JournalFull

CALL = "7d5e3c52-5a3c-4b8e-9a35-4f51b0c1e001"


def event(seq: int) -> CallEvent:
    return CallEvent(CALL, seq, datetime(2024, 5, 1, 12, 0, seq % 60, tzinfo=UTC), "caller",
                     "key_press", str(seq % 10), "g/f", {"n": seq, "nested": {"a": [1, 2]}})


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal", max_bytes=1 << 20)
    j.open()
    yield j
    j.close()


def reopen(j: Journal, **kw: int) -> Journal:
    j.close()
    again = Journal(j.directory, kw.get("max_bytes", j.max_bytes),
                    segment_bytes=kw.get("segment_bytes", j.segment_bytes))
    again.open()
    return again


def test_every_op_kind_round_trips(journal: Journal) -> None:
    now = datetime.now(UTC)
    ops: list[Op] = [
        CallOpened(CALL, "18005550100", "5551234", None, "chan-1", "entering", now),
        event(1),
        CallUpdated(CALL, "ended", {"a": "b"}, {"caller": "chan-1"}, "sale", {"x": 1},
                    ended_at=now, ended_by="caller", end_reason="bye"),
        CallUpdated(CALL, "bridged", {}, {}, None, {}),
        CallerBlocked("5551234", "asked", None),
        WebhookQueued(CALL, "g/f", "http://127.0.0.1:1/h", "POST", {"X": "y"}, "{}",
                      "0b7c1f9e-3d1c-4a47-8d5f-8a3f3a1e0c11"),
    ]
    journal.append(ops)
    assert journal.unacked == len(ops)
    assert journal.pending() == ops
    assert reopen(journal).pending() == ops


def test_acknowledged_records_are_not_replayed(journal: Journal) -> None:
    journal.append([event(s) for s in range(1, 11)])
    journal.append([event(s) for s in range(11, 16)])
    assert journal.read(4) == [event(s) for s in range(1, 5)]
    journal.acknowledge(4)
    assert journal.read(3) == [event(s) for s in range(5, 8)]
    journal.acknowledge(8)  # across the two appends
    again = reopen(journal)
    assert again.unacked == 3
    assert again.pending() == [event(s) for s in range(13, 16)]
    again.acknowledge(3)
    assert reopen(again).pending() == []


def test_read_extends_while_asked(journal: Journal) -> None:
    journal.append([event(s) for s in range(1, 8)])
    got = journal.read(2, more=lambda op: op.seq < 5)
    assert [op.seq for op in got] == [1, 2, 3, 4]


def test_torn_last_record_is_dropped_with_its_append(journal: Journal) -> None:
    journal.append([event(1), event(2)])
    journal.append([event(3), event(4), event(5)])
    seg = sorted(journal.directory.glob("seg-*.log"))[-1]
    journal.close()
    size = seg.stat().st_size
    with open(seg, "r+b") as f:  # a crash in the middle of the second append's last record
        f.truncate(size - 7)
    again = Journal(journal.directory, journal.max_bytes)
    assert again.open() == 2
    assert again.pending() == [event(1), event(2)]
    again.append([event(6)])  # appends continue right after the good part
    assert reopen(again).pending() == [event(1), event(2), event(6)]


def test_corrupt_record_is_detected(journal: Journal) -> None:
    journal.append([event(1)])
    journal.append([event(2)])
    seg = sorted(journal.directory.glob("seg-*.log"))[-1]
    journal.close()
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the last record's payload
    seg.write_bytes(bytes(data))
    again = Journal(journal.directory, journal.max_bytes)
    assert again.open() == 1
    assert again.pending() == [event(1)]
    again.close()


def test_full_journal_raises_and_keeps_what_it_has(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", max_bytes=4096, segment_bytes=4096)
    j.open()
    appended = 0
    with pytest.raises(JournalFull):
        while True:
            j.append([event(appended + 1)])
            appended += 1
    assert 10 < appended < 100
    assert j.size_bytes <= 4096
    assert [op.seq for op in j.pending()] == list(range(1, appended + 1))
    j.acknowledge(appended)  # written elsewhere: the space comes back
    j.append([event(1000)])
    assert j.pending() == [event(1000)]
    j.close()


def test_rotation_deletes_acknowledged_segments(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", max_bytes=1 << 20, segment_bytes=1024)
    j.open()
    for s in range(1, 101):
        j.append([event(s)])
    segments = sorted(j.directory.glob("seg-*.log"))
    assert len(segments) > 5
    j.acknowledge(60)
    left = sorted(j.directory.glob("seg-*.log"))
    assert len(left) < len(segments) and left[-1] == segments[-1]
    assert not set(left) - set(segments)
    again = reopen(j)
    assert [op.seq for op in again.pending()] == list(range(61, 101))
    again.acknowledge(40)
    again.append([event(101)])
    assert [op.seq for op in reopen(again).pending()] == [101]


def test_one_journal_one_process(journal: Journal) -> None:
    other = Journal(journal.directory)
    with pytest.raises(RuntimeError, match="in use"):
        other.open()


def test_committed_position_survives_a_crash_without_close(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    j.open()
    j.append([event(s) for s in range(1, 6)])
    j.acknowledge(2)
    # A killed process: its descriptors go away without close() (the lock with them).
    for fd in (j._fd, j._committed_fd, j._lock_fd):
        assert fd is not None
        os.close(fd)
    again = Journal(tmp_path / "j")
    assert again.open() == 3
    assert [op.seq for op in again.pending()] == [3, 4, 5]
    again.close()
