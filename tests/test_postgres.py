"""``run --jobs 2`` on a real PostgreSQL server: both workers killed mid-trial, the same command again finishes the
study to the exact target, each dead trial retried exactly once, and the password never printed.

The server: ``.ci/system-deps`` starts a throwaway cluster on 127.0.0.1:55432; the URL comes from
``TOWER_STUDY_PG_URL`` (default ``postgresql://tower:tower@127.0.0.1:55432/tower_test``). Without a reachable server
the test is skipped locally and FAILS in CI (``CI`` set), where the server is part of the set-up.
"""

from __future__ import annotations

import io
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from e2e_util import Background, cli, write_dataset, write_space
from test_parallel import SLOW_SPACE, check_accounted, mid_trial, no_traceback, pg_rows, wait_for, worker_pids

from study.config import RunSettings

PG_URL = os.environ.get("TOWER_STUDY_PG_URL", "postgresql://tower:tower@127.0.0.1:55432/tower_test")


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL for tests/test_postgres.py: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must provide it: .ci/system-deps starts the server)", pytrace=False)
    pytest.skip(message + "; run .ci/system-deps (as root) to start a local test server")


@pytest.fixture(scope="module")
def pg() -> Any:
    """An autocommit psycopg2 connection to the test server (skip locally / fail in CI when there is none)."""
    from study.storage import mask_url

    try:
        import psycopg2
    except ImportError:
        _unavailable("the driver psycopg2 is not installed (pip install -e '.[postgres]')")
    try:
        conn = psycopg2.connect(PG_URL, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        _unavailable(f"{mask_url(PG_URL)} is unreachable ({str(exc).strip().splitlines()[0]})")
    conn.autocommit = True
    yield conn
    conn.close()


def _password() -> str:
    from urllib.parse import urlsplit

    return urlsplit(PG_URL).password or ""


def _optuna_url() -> str:
    # Optuna's own URL, as a user would pass it: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, so name the
    # driver the project's [postgres] extra installs.
    return PG_URL.replace("postgresql://", "postgresql+psycopg2://", 1) if "+" not in PG_URL.split("://")[0] else PG_URL


def test_a_wrong_password_is_reported_without_the_password(pg: Any) -> None:
    from urllib.parse import urlsplit

    from study.errors import ConfigError
    from study.storage import open_storage

    parts = urlsplit(PG_URL)
    secret = "Wr0ng-" + uuid.uuid4().hex[:10]
    url = parts._replace(netloc=f"{parts.username}:{secret}@{parts.hostname}:{parts.port}").geturl()
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    message = str(info.value)
    assert secret not in message and f"{parts.username}:***@" in message, message
    assert "password authentication failed" in message, message


def test_the_start_lock_is_a_postgresql_advisory_lock_per_study(pg: Any) -> None:
    from test_locks import _blocks

    from study.locks import StartLock
    from study.storage import open_storage

    engines = [open_storage(_optuna_url()).engine for _ in range(3)]  # as three processes would
    name = f"lock-{uuid.uuid4().hex[:8]}"
    a, b = StartLock(_optuna_url(), name, engines[0]), StartLock(_optuna_url(), name, engines[1])
    other = StartLock(_optuna_url(), name + "-other", engines[2])
    assert a.kind == "postgresql"
    try:
        assert _blocks(a, b)
        assert _blocks(b, a)
        assert not _blocks(a, other)  # another study's workers are not held up
    finally:
        for lock in (a, b, other):
            lock.close()
        for engine in engines:
            engine.dispose()


@pytest.mark.slow
def test_two_workers_killed_then_resumed_account_for_every_trial(pg: Any, tmp_path: Path) -> None:
    import optuna

    write_dataset(tmp_path / "data.csv", n_rows=6000)
    write_space(tmp_path / "slow.yaml", SLOW_SPACE)  # trials of a few seconds, so both kills land mid-trial
    name = f"pg-{uuid.uuid4().hex[:12]}"
    target = 8
    argv = ["run", "--jobs", "2", "--trials", str(target), "--space", str(tmp_path / "slow.yaml")]
    argv += ["--dataset", f"csv:{tmp_path / 'data.csv'}", "--storage", PG_URL, "--study-name", name]
    argv += ["--pruner", "none", "--no-test"]
    secret = _password()
    try:
        with Background(argv, tmp_path, "pg") as bg:
            running = wait_for(
                lambda: pg_rows(pg, name), bg, mid_trial(min_finished=1, count=2), "2 trials mid-training"
            )
            assert sorted(pid for _, pid in running) == sorted(worker_pids(bg.stdout))
            finished_then = {n: s for n, s, _, _ in pg_rows(pg, name) if s in ("COMPLETE", "PRUNED")}
            for _, pid in running:
                os.kill(pid, signal.SIGKILL)
            rc = bg.wait(timeout=120)
            first_out, first_err = bg.stdout, bg.stderr
        # No worker left: the parent says so, fails the dead trials, queues them again and exits non-zero.
        assert rc == 1, first_out + first_err
        no_traceback(first_out, first_err)
        killed = sorted(number for number, _ in running)
        assert f"trials {killed} were running in a worker that died; marked FAIL and queued again" in first_out
        assert "run the same command to resume" in first_err, first_err

        # The same command again: the two queued retries are claimed once each, and the target is met exactly.
        second = cli(argv, cwd=tmp_path, timeout=240)
        assert second.returncode == 0, second.stdout + second.stderr
        no_traceback(second.stdout, second.stderr)
        assert f"done: {target}/{target} finished" in second.stdout

        for text in (first_out, first_err, second.stdout, second.stderr):
            assert f":{secret}@" not in text and f"password={secret}" not in text, text
        assert ":***@" in first_out, first_out

        study = optuna.load_study(study_name=name, storage=_optuna_url())
        check_accounted(study, target)
        by_number = {t.number: t for t in study.trials}
        for number in killed:
            assert by_number[number].state.name == "FAIL"
            assert "died" in by_number[number].user_attrs["fail_reason"]
            retries = [t for t in study.trials if t.user_attrs.get("retried_from") == number]
            assert len(retries) == 1 and retries[0].state.name == "COMPLETE", [t.user_attrs for t in retries]
        for number, state in finished_then.items():
            assert by_number[number].state.name == state
    finally:
        try:
            optuna.delete_study(study_name=name, storage=_optuna_url())
        except KeyError:
            pass


def test_a_password_with_url_characters_never_shows(pg: Any, tmp_path: Path) -> None:
    """A password holding ``/``, ``#`` and ``?`` (written unencoded, as users do): the run's first line, ``list`` and
    the errors show it masked whole."""
    from urllib.parse import urlsplit

    import optuna

    from study.runner import prepare

    parts = urlsplit(PG_URL)
    special = "to/we#r?" + uuid.uuid4().hex[:6]
    url = f"postgresql://{parts.username}:{special}@{parts.hostname}:{parts.port}{parts.path}"
    name = f"pg-secret-{uuid.uuid4().hex[:8]}"
    write_dataset(tmp_path / "data.csv", n_rows=2000)
    with pg.cursor() as cur:
        cur.execute(f"ALTER ROLE {parts.username} PASSWORD %s", (special,))
    try:
        out = io.StringIO()
        settings = RunSettings(space="quick", dataset=f"csv:{tmp_path / 'data.csv'}", storage=url, study_name=name)
        prepare(settings, out=out)
        listed = cli(["list", "--storage", url], cwd=tmp_path, timeout=120)
        refused = cli(["best", "--storage", url, "--study", "nosuch"], cwd=tmp_path, timeout=120)
        shown = f"postgresql://{parts.username}:***@{parts.hostname}:{parts.port}{parts.path}"
        assert shown in out.getvalue(), out.getvalue()
        assert listed.returncode == 0 and name in listed.stdout, listed.stderr
        assert refused.returncode == 1 and shown in refused.stderr, refused.stderr
        for text in (out.getvalue(), listed.stdout, listed.stderr, refused.stdout, refused.stderr):
            assert special not in text and "we#r" not in text, text
    finally:
        with pg.cursor() as cur:
            cur.execute(f"ALTER ROLE {parts.username} PASSWORD %s", (_password(),))
        try:
            optuna.delete_study(study_name=name, storage=_optuna_url())
        except KeyError:
            pass
