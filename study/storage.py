"""Storage URLs in one place: parse them, mask their secrets, open them for a run or read-only.

* ``sqlite:///PATH``: WAL journal, a 60 s busy timeout and ``BEGIN IMMEDIATE`` transactions, so the dashboard or
  other workers reading and writing at the same time neither see "database is locked" nor claim one trial twice.
* ``postgresql://…`` / ``mysql://…``: SQLAlchemy with pre-ping; the installed driver is picked when none is named.
* ``journal:PATH``: Optuna's JournalStorage on a file (lock-file based; safe for many local writers).

A run opens its storage with :func:`open_storage` (creates the schema, heartbeats for stale-trial detection);
commands that only read a study (``list``, ``best``, ``report``, ``export``, ``evaluate``, ``dashboard``) use
:func:`open_existing`, which creates, migrates and switches nothing.
"""

from __future__ import annotations

import importlib.util
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from study.errors import ConfigError

HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 30
DEFAULT_STORAGE = "sqlite:///study.db"
SERVER_SCHEMES = ("postgresql", "postgres", "mysql")

# Drivers the extras install, in order of preference, for a URL that names none. SQLAlchemy's own default for
# ``postgresql://`` is psycopg 3 since 2.1 (``mysql://``: mysqlclient), which ``tower-study[postgres]`` does not install.
_DRIVERS = {"postgresql": ("psycopg2", "psycopg"), "mysql": ("pymysql", "MySQLdb")}
# ``scheme://user:password@``: a password anywhere in a text (an error line, a report cell).
_PASSWORD_IN_TEXT = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):\S*@")


def scheme(url: str) -> str:
    """``sqlite``, ``postgresql``, ``mysql``, ``journal`` … (the dialect without its driver); ``""`` for none."""
    return url.split(":", 1)[0].split("+", 1)[0] if ":" in url else ""


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL; None for other schemes and in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :]
    return None if path in ("", ":memory:") else Path(path)


def storage_file(url: str) -> Path | None:
    """The file a storage lives in: ``sqlite:///PATH`` or ``journal:PATH``; None for server databases."""
    if url.startswith("journal:"):
        return Path(url[len("journal:") :]) if url[len("journal:") :] else None
    return sqlite_path(url)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print or store).

    The user info ends at the URL's *last* ``@``, so a password holding ``/``, ``#``, ``?`` or ``@`` is masked whole
    (where SQLAlchemy's own parser would cut it at its first ``@`` and show the rest as the host).
    """
    head, sep, rest = url.partition("://")
    end = rest.rfind("@")
    user, colon, _ = rest[: max(end, 0)].partition(":")
    if not sep or end < 0 or not colon:
        return url
    return f"{head}://{user}:***@{rest[end + 1 :]}"


def mask_secrets(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by ``***``."""
    return _PASSWORD_IN_TEXT.sub(r"\1:***@", text)


def _check_url(url: str) -> str:
    """The scheme of a URL this tool can open, or a ConfigError naming the fix."""
    shown = mask_url(url)
    kind = scheme(url)
    if url.startswith("journal:"):
        if not url[len("journal:") :]:
            raise ConfigError(f"--storage {shown}: journal needs a file path, e.g. journal:study.log")
        return "journal"
    if kind not in ("sqlite", *SERVER_SCHEMES):
        raise ConfigError(
            f"--storage {shown}: unknown storage scheme {kind!r}; use sqlite:///PATH, postgresql://USER@HOST/DB, "
            "mysql+pymysql://USER@HOST/DB or journal:PATH"
        )
    if kind == "sqlite":
        rest = url.split(":", 1)[1]
        if rest in ("", "//", "///", "///:memory:", "//:memory:"):
            raise ConfigError(
                f"--storage {shown}: an in-memory SQLite storage cannot be shared with workers or the dashboard, "
                "nor resumed; use a file, e.g. sqlite:///study.db"
            )
        if not rest.startswith("///"):
            path = rest.lstrip("/")
            raise ConfigError(
                f"--storage {shown}: a SQLite URL has three slashes before a relative path: write sqlite:///{path} "
                f"(four for an absolute one: sqlite:////{path})"
            )
    return kind


def open_storage(
    url: str, *, on_stale_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None, read_only: bool = False
) -> optuna.storages.BaseStorage:
    """Open an Optuna storage (see the module doc for each scheme).

    Args:
        url: the storage URL.
        on_stale_trial: with it, each running trial records a heartbeat, and a trial whose worker stops beating
            is marked FAIL and handed to this callback (a run retries it); without it, no heartbeat.
        read_only: create no schema and switch no journal mode (for commands that only read).

    Raises:
        ConfigError: unknown scheme, missing driver or unreachable server (password masked).
    """
    shown = mask_url(url)
    kind = _check_url(url)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(url[len("journal:") :]))
        except OSError as exc:
            raise ConfigError(f"--storage {shown}: cannot open journal file ({exc.strerror})") from None
    kwargs: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    path = sqlite_path(url)
    if kind == "sqlite":
        if path is not None:
            if path.parent and not path.parent.exists():
                raise ConfigError(f"--storage {shown}: folder {path.parent} does not exist; create it first")
            if not read_only:
                _enable_wal(path)
        engine["connect_args"] = {"timeout": 60}
    else:
        engine["pool_pre_ping"] = True
        engine["connect_args"] = {"connect_timeout": 10}
    if on_stale_trial is not None:
        kwargs.update(
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
            heartbeat_stale_trial_callback=on_stale_trial,
        )
    if read_only:  # Optuna's schema check loads alembic (~0.7 s) and would migrate; open_existing checked the table
        kwargs.update(skip_table_creation=True, skip_compatibility_check=True)
    engine_url = _with_installed_driver(url, kind)
    try:
        storage = optuna.storages.RDBStorage(engine_url, engine_kwargs=engine, **kwargs)
    except ImportError:  # Optuna turns the driver's ModuleNotFoundError into an ImportError
        extra = "postgres" if kind.startswith("postgres") else "mysql"
        raise ConfigError(
            f"--storage {shown}: the database driver is not installed; pip install 'tower-study[{extra}]'"
        ) from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError, ArgumentError, …
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.replace(engine_url, shown).replace(url, shown)
        raise ConfigError(f"--storage {shown}: cannot open storage ({mask_secrets(reason)[:200]})") from None
    if kind == "sqlite":
        _serialize_sqlite_transactions(storage.engine)
    return storage


def open_existing(url: str) -> optuna.storages.BaseStorage:
    """Open a storage that must already hold Optuna's tables, for commands that only read a study.

    Raises:
        ConfigError: a missing SQLite or journal file, a SQLite file without Optuna's tables, or what
            :func:`open_storage` raises.
    """
    _check_url(url)
    path = storage_file(url)
    if path is not None and not path.exists():
        raise ConfigError(f"--storage {mask_url(url)}: no such file; run `python -m study run` first")
    if sqlite_path(url) is not None and not _has_optuna_tables(path):
        raise ConfigError(
            f"--storage {mask_url(url)}: not an Optuna storage (no studies table); pass the file `run` wrote"
        )
    return open_storage(url, read_only=True)


def _has_optuna_tables(path: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60) as conn:
            row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'studies'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"--storage sqlite:///{path}: not a usable SQLite file ({exc})") from None
    return row is not None


def _with_installed_driver(url: str, kind: str) -> str:
    """``postgresql://…`` (or ``postgres://…``) → ``postgresql+psycopg2://…`` when psycopg2 is the installed driver."""
    head, sep, rest = url.partition("://")
    if not sep or "+" in head:
        return url
    dialect = "postgresql" if kind in ("postgresql", "postgres") else kind
    for module in _DRIVERS.get(dialect, ()):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}+{module.lower()}://{rest}"
    return url


def _serialize_sqlite_transactions(engine: Any) -> None:
    """Make every transaction on a SQLite storage ``BEGIN IMMEDIATE`` (SQLAlchemy's pysqlite recipe).

    pysqlite opens a transaction only at the first write, so Optuna's read-check-write steps (claiming an enqueued
    trial WAITING → RUNNING, failing a RUNNING trial) are not atomic across processes: two workers can both claim the
    same enqueued retry. With the write lock taken at BEGIN, the read and the write happen under one lock (other
    workers wait up to the busy timeout; transactions are a few milliseconds).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not pysqlite, emits BEGIN

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna checked the schema predate the hooks


def _enable_wal(path: Path) -> None:
    try:
        with sqlite3.connect(str(path), timeout=60) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"--storage sqlite:///{path}: not a usable SQLite file ({exc})") from None
