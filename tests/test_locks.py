"""``study.locks.StartLock``: the lock that keeps workers from starting more than ``--trials`` between them.

Two locks on the same storage and study exclude each other (two file descriptions, as two worker processes would
hold); a lock on another storage file does not. (The PostgreSQL advisory lock is tested in ``test_postgres.py``.)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from study.locks import StartLock


def _blocks(first: StartLock, second: StartLock) -> bool:
    """True when ``second.acquire()`` waits while ``first`` holds the lock and gets it once ``first`` releases."""
    first.acquire()
    got = threading.Event()

    def take() -> None:
        second.acquire()
        got.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    waited = not got.wait(0.5)
    first.release()
    assert got.wait(10), "the second lock was never granted after the first was released"
    second.release()
    thread.join(5)
    return waited


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_file_locks_exclude_each_other_and_only_on_the_same_study(tmp_path: Path, scheme: str) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}" if scheme == "sqlite" else f"journal:{tmp_path / 's.log'}"
    a, b, other = StartLock(url, "s"), StartLock(url, "s"), StartLock(url + "x", "s")
    assert a.kind == "file"
    assert not list(tmp_path.iterdir())  # nothing is created until a trial is started
    try:
        assert _blocks(a, b)
        assert _blocks(b, a)
        assert not _blocks(a, other)
    finally:
        for lock in (a, b, other):
            lock.close()
    assert (tmp_path / ("s.db-trials.lock" if scheme == "sqlite" else "s.log-trials.lock")).exists()


def test_acquire_and_release_twice_are_harmless(tmp_path: Path) -> None:
    lock = StartLock(f"sqlite:///{tmp_path / 's.db'}", "s")
    lock.acquire()
    lock.acquire()  # no self-deadlock
    lock.release()
    lock.release()
    assert _blocks(StartLock(f"sqlite:///{tmp_path / 's.db'}", "s"), lock)  # released for real
    lock.close()


def test_in_memory_storage_needs_no_lock() -> None:
    lock = StartLock("sqlite://", "s")
    assert lock.kind == "none"
    lock.acquire()
    assert lock.held
    lock.close()
    assert not lock.held


def test_a_lock_held_by_a_stopped_holder_is_free_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    a, b = StartLock(url, "s"), StartLock(url, "s")
    a.acquire()
    a.close()  # what a process's death does to its descriptor
    start = time.monotonic()
    b.acquire()
    assert time.monotonic() - start < 5
    b.close()
