"""The commit journal's framing: a crash mid-write never turns into events."""

from __future__ import annotations

import errno
import resource
import signal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import taskcast.store.journal
from taskcast.store.journal import Journal, frame_rows, header_frame, read_frames

rows_strategy = st.lists(
    st.tuples(
        st.integers(1, 2**62),
        st.text(max_size=40),
        st.text(max_size=40),
        st.sampled_from(["api_action", "tool_result"]),
        st.none() | st.text(max_size=20),
        st.none() | st.text(max_size=10),
        st.integers(0, 2**62),
        st.binary(max_size=300),
        st.text(max_size=20),
    ),
    max_size=12,
)


@given(st.lists(rows_strategy, max_size=5), st.data())
def test_any_cut_reads_back_the_commits_written_whole(
    commits: list[list[tuple[object, ...]]], data: st.DataObject
) -> None:
    """A commit is one frame: a cut anywhere gives back exactly the commits before it."""
    frames = [frame_rows(rows) for rows in commits]
    framed = b"".join(frames)
    cut = data.draw(st.integers(0, len(framed)))
    found, valid = read_frames(framed[:cut])
    whole = 0
    while whole < len(frames) and sum(map(len, frames[: whole + 1])) <= cut:
        whole += 1
    assert found == [row for rows in commits[:whole] for row in rows]
    assert valid == sum(map(len, frames[:whole]))
    assert read_frames(framed) == ([row for rows in commits for row in rows], len(framed))


@given(st.lists(rows_strategy.filter(bool), min_size=1, max_size=4), st.data())
def test_a_damaged_byte_never_reads_as_a_row(
    commits: list[list[tuple[object, ...]]], data: st.DataObject
) -> None:
    framed = bytearray(b"".join(frame_rows(rows) for rows in commits))
    where = data.draw(st.integers(0, len(framed) - 1))
    framed[where] ^= data.draw(st.integers(1, 255))
    found, _ = read_frames(bytes(framed))
    every = [row for rows in commits for row in rows]
    assert found == every[: len(found)]  # reading stops at the damage (CRC-32 per frame)


def test_segments_roll_and_go_once_sqlite_holds_them(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "log.db", segment_bytes=100)
    journal.start(1, "log-1")
    row = (1, "id", "tasks.t", "api_action", "t", None, 0, b"x" * 80, "anonymous")
    for seq in range(1, 6):
        journal.write(frame_rows([(seq, *row[1:])]), seq)
    assert len(journal.segment_paths()) == 5  # each write past 100 bytes starts a new one
    journal.release(3)  # SQLite holds seqs 1-3: their closed files go, the rest stay
    names = [path.name for path in journal.segment_paths()]
    assert names == [f"log.db.journal-{seq:020d}" for seq in (4, 5)]
    journal.close()
    assert [r[0] for r in Journal(tmp_path / "log.db").recover("log-1")] == [4, 5]


def test_a_failed_write_is_undone_so_later_entries_still_read_back(tmp_path: Path) -> None:
    """A write the disk refuses halfway (full; here the file size limit) leaves no torn
    frame before the next write's, which recovery would take for the journal's end."""
    journal = Journal(tmp_path / "log.db")
    journal.start(1, "log-1")

    def entry(seq: int, size: int) -> bytes:
        return frame_rows([(seq, f"e{seq}", "c", "note", None, None, 0, b"x" * size, "p")])

    journal.write(entry(1, 10), 1)
    (path,) = journal.segment_paths()
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))
    try:
        with pytest.raises(OSError):
            journal.write(entry(2, 1000), 2)  # 100 bytes go in, then the limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert path.stat().st_size == size
    journal.write(entry(2, 20), 2)  # the seq the failed write never took
    journal.close()
    assert [row[1] for row in Journal(tmp_path / "log.db").recover("log-1")] == ["e1", "e2"]


def test_a_journal_left_by_another_log_is_not_read_into_this_one(tmp_path: Path) -> None:
    """The log was deleted and made anew beside its old journal: the new log (another
    log id) takes none of the old one's events, and the old files go."""
    old = Journal(tmp_path / "log.db")
    old.start(1, "log-old")
    old.write(frame_rows([(1, "e1", "c", "note", None, None, 0, b"{}", "p")]), 1)
    old.close()
    assert Journal(tmp_path / "log.db").recover("log-old") != []
    new = Journal(tmp_path / "log.db")
    assert new.recover("log-new") == []
    (aside,) = tmp_path.glob("*.not-this-log-*")  # kept for whoever wants to look
    assert aside.name.startswith(f"log.db.journal-{1:020d}.not-this-log-")
    new.start(1, "log-new")
    new.close()
    assert Journal(tmp_path / "log.db").recover("log-new") == []
    (path,) = new.segment_paths()
    path.write_bytes(b"")  # made, never written: read as nothing, quietly
    assert Journal(tmp_path / "log.db").recover("log-new") == []


def test_a_segment_that_cannot_be_started_leaves_the_journal_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk is full just as a segment is full: the new segment's header fails, that
    append is refused, and the appends after it (acknowledged) are all read back."""
    journal = Journal(tmp_path / "log.db", segment_bytes=200)
    journal.start(1, "log-1")

    def entry(seq: int) -> bytes:
        return frame_rows([(seq, f"e{seq}", "c", "note", None, None, 0, b"x" * 50, "p")])

    seq = 0
    while journal._size < 200:
        seq += 1
        journal.write(entry(seq), seq)
    write_all = taskcast.store.journal._write_all
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def full_once(fd: int, data: bytes) -> None:
        if failures:
            raise failures.pop()
        write_all(fd, data)

    monkeypatch.setattr(taskcast.store.journal, "_write_all", full_once)
    with pytest.raises(OSError):
        journal.write(entry(seq + 1), seq + 1)  # the new segment's header fails
    for more in (seq + 1, seq + 2):
        journal.write(entry(more), more)
    journal.close()
    assert [row[0] for row in Journal(tmp_path / "log.db").recover("log-1")] == list(
        range(1, seq + 3)
    )


def test_damage_is_told_from_a_torn_tail_and_kept_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash cuts a last write short (never acknowledged): cut off, a warning. A byte
    damaged in the middle (the disk, a hand) loses what follows it: the log says from
    which seq, and the file is copied aside before it is cut; a damaged first entry
    moves the file aside. Nothing is overwritten by a second such start."""

    def segment(seqs: range) -> bytes:
        rows = [(seq, f"e{seq}", "c", "note", None, None, 0, b"x" * 40, "p") for seq in seqs]
        return header_frame("log-1") + b"".join(frame_rows([row]) for row in rows)

    log_path = tmp_path / "log.db"
    path = tmp_path / f"log.db.journal-{1:020d}"
    whole = segment(range(1, 11))
    path.write_bytes(whole + frame_rows([(11, "e11", "c", "n", None, None, 0, b"y", "p")])[:-3])
    assert [row[0] for row in Journal(log_path).recover("log-1")] == list(range(1, 11))
    assert "cut short" in caplog.text and not list(tmp_path.glob("*.damaged-*"))
    damaged = bytearray(whole)
    damaged[len(damaged) // 2] ^= 0xFF
    for _ in range(2):
        path.write_bytes(bytes(damaged))
        kept = [row[0] for row in Journal(log_path).recover("log-1")]
        assert kept and kept == list(range(1, len(kept) + 1)) and len(kept) < 10
    assert "is damaged after seq" in caplog.text
    assert sorted(p.read_bytes() for p in tmp_path.glob("*.damaged-*")) == [bytes(damaged)] * 2
    caplog.clear()
    path.write_bytes(b"\x00" * 4 + whole[4:])  # the header's length gone
    assert Journal(log_path).recover("log-1") == []
    assert "damaged from its first entry on" in caplog.text and not path.exists()
