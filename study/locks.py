"""A lock that makes "is another trial needed? then start one" atomic across the workers of one study.

Each worker decides to start a trial by counting the finished and running trials in the storage; without a lock,
two workers can both count 39 of 40 and both start the 40th (a real failure seen in CI: 41 complete for
``--trials 40``). The worker holds a :class:`StartLock` from the count until its new trial is RUNNING in the storage
(Optuna's ``ask`` inside ``optimize``), and releases it as the objective begins, so training never runs under it.

* ``sqlite:///PATH`` and ``journal:PATH``: ``fcntl.flock`` on ``PATH-trials.lock`` beside the storage (one lock for
  every study in the file; created at the first trial; harmless to delete when no worker runs).
* ``postgresql://``: a session-level ``pg_advisory_lock`` (keyed by the study name) on a connection of its own;
  ``mysql://``: ``GET_LOCK`` (written to the MySQL manual, not tested here: the suite has no MySQL server).
* anything else (in-memory): no lock, one process.

A worker that dies while holding it (SIGKILL) releases it with its process or database connection.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from study.storage import SERVER_SCHEMES, scheme, storage_file

try:
    import fcntl
except ImportError:  # Windows: no flock; workers on one machine there may overshoot --trials by one
    fcntl = None  # type: ignore[assignment]


def _key(study_name: str) -> int:
    """A signed 64-bit key for ``study_name`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.sha256(f"tower-study:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class StartLock:
    """Mutual exclusion between the workers of ``study_name`` on ``storage_url``. Re-acquiring or releasing twice is
    harmless (the second call does nothing)."""

    def __init__(self, storage_url: str, study_name: str, engine: Any = None) -> None:
        self.study_name = study_name
        self.held = False
        self._path: str | None = None
        self._fd: int | None = None
        self._engine = None
        self._conn: Any = None
        self._scheme = scheme(storage_url)
        path = storage_file(storage_url)
        if path is not None:
            self._path = f"{path}-trials.lock"
        elif self._scheme in SERVER_SCHEMES:
            self._engine = engine

    @property
    def kind(self) -> str:
        """``file``, ``postgresql``, ``mysql`` or ``none``."""
        if self._path is not None:
            return "file" if fcntl is not None else "none"
        if self._engine is not None:
            return "mysql" if self._scheme == "mysql" else "postgresql"
        return "none"

    def acquire(self) -> None:
        """Block until this process holds the lock."""
        if self.held:
            return
        kind = self.kind
        if kind == "file":
            assert self._path is not None
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        elif kind in ("postgresql", "mysql"):
            from sqlalchemy import text

            if self._conn is None:
                self._conn = self._engine.connect()
            if kind == "postgresql":
                self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _key(self.study_name)})
            else:
                self._conn.execute(text("SELECT GET_LOCK(:k, -1)"), {"k": f"tower-study:{self.study_name}"[:64]})
            self._conn.commit()
        self.held = True

    def release(self) -> None:
        """Let the next worker in (no-op when not held)."""
        if not self.held:
            return
        self.held = False
        kind = self.kind
        if kind == "file" and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        elif kind in ("postgresql", "mysql") and self._conn is not None:
            from sqlalchemy import text

            if kind == "postgresql":
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(self.study_name)})
            else:
                self._conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": f"tower-study:{self.study_name}"[:64]})
            self._conn.commit()

    def close(self) -> None:
        """Release and free the file descriptor / connection."""
        self.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
