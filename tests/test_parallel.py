"""``run --jobs N`` for real: worker processes on one SQLite study, SIGKILL of a worker, Ctrl-C of the parent, and
trials that fail (an exception, a NaN loss, ``--trial-timeout``) while the study goes on.

Real processes, real SQLite, real TensorFlow; nothing is mocked. Every process pays the TensorFlow import, so each
test starts as few as it can. ``tests/test_postgres.py`` reuses the storage helpers below on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_util import Background, cli, write_dataset, write_space

# Very short trials: tiny towers over the id embeddings only, one epoch (the 40-trial contention test).
ONE_EPOCH_SPACE = """\
model:
  layers: [8]
  embedding_dim: {type: categorical, choices: [4, 8]}
  use_timestamp: false
  use_title_words: false
  use_genres: false
train:
  learning_rate: {type: float, low: 0.05, high: 0.5, log: true}
  batch_size: {type: categorical, choices: [256, 512]}
  epochs: 1
  eval_every: 1
  jit: false
"""

# Longer trials (SLOW_EPOCHS epochs of small batches) so that a signal reliably lands in the middle of one: it is sent
# while at least 4 epochs are left (see mid_trial).
# Epochs of ~0.1 s after ~1 s of set-up (tracing): a trial is mid-training (epochs 1..SLOW_EPOCHS-4 reported) for most
# of its time, so two workers are both there at once on every trial. With 10 epochs one worker's set-up tended to
# overlap the other's epochs, and a test waiting to kill both mid-trial sometimes saw the run end first.
SLOW_EPOCHS = 30
SLOW_SPACE = f"""\
model:
  layers: [16]
  embedding_dim: {{type: categorical, choices: [8, 16]}}
train:
  learning_rate: {{type: float, low: 0.05, high: 0.5, log: true}}
  batch_size: 16
  epochs: {SLOW_EPOCHS}
  eval_every: 1
  jit: false
"""

# A quotient-remainder embedding with the ``concat`` combiner splits each vector into two halves, so it cannot be
# built with embedding_dim 1: the space admits the value (1..8), and such a trial raises a genuine ValueError when its
# model is built. The other trials learn normally.
FAIL_SPACE = """\
model:
  layers: [8]
  embedding: quotient_remainder
  qr_combiner: concat
  embedding_dim: {type: int, low: 1, high: 8}
train:
  learning_rate: {type: float, low: 0.05, high: 0.3, log: true}
  batch_size: 256
  epochs: {type: int, low: 2, high: 3}
  eval_every: 1
  jit: false
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with data.csv (6000 synthetic interactions) and the spaces above."""
    d = tmp_path_factory.mktemp("parallel")
    write_dataset(d / "data.csv", n_rows=6000)
    for name, text in {"one_epoch": ONE_EPOCH_SPACE, "slow": SLOW_SPACE, "fail": FAIL_SPACE}.items():
        write_space(d / f"{name}.yaml", text)
    return d


# ------------------------------------------------------------------------------------------------ storage helpers

_TRIALS_SQL = (
    "SELECT t.number, t.state,"
    " (SELECT COUNT(*) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id),"
    " (SELECT a.value_json FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'worker')"
    " FROM trials t JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = {p} ORDER BY t.number"
)


def sqlite_rows(db: Path, study_name: str) -> list[tuple[int, str, int, str | None]]:
    """``(number, state, epochs reported, worker "host:pid")`` of every trial, read-only from a SQLite file."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute(_TRIALS_SQL.format(p="?"), (study_name,)).fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or busy for a moment
        return []
    return [(n, str(state), steps, json.loads(w) if w else None) for n, state, steps, w in rows]


def pg_rows(conn: Any, study_name: str) -> list[tuple[int, str, int, str | None]]:
    """The same rows from a PostgreSQL storage (``conn``: an autocommit psycopg2 connection)."""
    try:
        with conn.cursor() as cur:
            cur.execute(_TRIALS_SQL.format(p="%s"), (study_name,))
            rows = cur.fetchall()
    except Exception as exc:  # tables not created yet
        if "does not exist" in str(exc):
            return []
        raise
    return [(n, str(state), steps, json.loads(w) if w else None) for n, state, steps, w in rows]


Rows = Callable[[], list[tuple[int, str, int, str | None]]]


def wait_for(rows: Rows, bg: Background, ready: Callable[[list], Any], what: str, timeout: float = 180) -> Any:
    """Poll ``rows()`` until ``ready(rows)`` is truthy (returned); fail if the run ends first or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bg.proc.poll() is not None:
            raise AssertionError(f"the run ended before {what} (rc={bg.proc.returncode}):\n{bg.stdout}\n{bg.stderr}")
        found = ready(rows())
        if found:
            return found
        time.sleep(0.03)
    raise AssertionError(f"no {what} after {timeout} s: {rows()}\n{bg.stdout}")


def mid_trial(min_finished: int = 1, count: int = 1) -> Callable[[list], list[tuple[int, int]]]:
    """``ready`` for :func:`wait_for`: ``count`` trials RUNNING in different workers, each past its first epoch and
    with at least 4 epochs to go (so a signal sent now lands inside it), once ``min_finished`` trials finished.

    Returns ``[(trial number, worker pid)]``.
    """

    def ready(rows: list) -> list[tuple[int, int]]:
        finished = sum(state in ("COMPLETE", "PRUNED") for _, state, _, _ in rows)
        running = {}
        for number, state, steps, worker in rows:
            if state == "RUNNING" and worker and 1 <= steps <= SLOW_EPOCHS - 4:
                running.setdefault(int(worker.rpartition(":")[2]), number)
        if finished < min_finished or len(running) < count:
            return []
        return [(number, pid) for pid, number in list(running.items())[:count]]

    return ready


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_pids(stdout: str) -> list[int]:
    """The pids the parent printed: ``started N workers (...): pids [1, 2]``."""
    match = re.search(r"started \d+ workers .*: pids \[([\d, ]+)\]", stdout)
    assert match, stdout
    return [int(p) for p in match.group(1).split(",")]


def check_accounted(study: Any, target: int) -> dict[str, int]:
    """Every trial accounted for: exactly ``target`` finished, nothing RUNNING or WAITING, numbers 0..n-1 once each,
    and each retried trial retried exactly once with its own parameters. Returns the state counts."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == target, counts
    assert counts.get("RUNNING", 0) == 0 and counts.get("WAITING", 0) == 0, counts
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    retried_from = [t.user_attrs["retried_from"] for t in trials if "retried_from" in t.user_attrs]
    assert len(retried_from) == len(set(retried_from)), f"a trial was retried twice: {retried_from}"
    by_number = {t.number: t for t in trials}
    for t in trials:
        if "retried_from" in t.user_attrs:
            original = by_number[t.user_attrs["retried_from"]]
            assert original.state.name == "FAIL" and original.number < t.number
            assert t.params == original.params
    return counts


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


# ------------------------------------------------------------------------------------------------ tests


def test_trial_timeout_flag_is_parsed_and_validated(work: Path) -> None:
    from study.cli import build_parser, run_settings_from_args
    from study.errors import ConfigError

    base = ["run", "--space", str(work / "fail.yaml"), "--dataset", "csv:data.csv"]
    assert run_settings_from_args(build_parser().parse_args(base)).trial_timeout is None
    assert run_settings_from_args(build_parser().parse_args([*base, "--trial-timeout", "90s"])).trial_timeout == 90
    assert run_settings_from_args(build_parser().parse_args([*base, "--trial-timeout", "2m"])).trial_timeout == 120
    for bad in ("0", "soon"):
        with pytest.raises(ConfigError, match="^--trial-timeout: "):
            run_settings_from_args(build_parser().parse_args([*base, "--trial-timeout", bad]))


_THREADS = """
import study
from study.workers import limit_threads
limit_threads()
import tensorflow as tf
tf.constant(1.0) + 1.0  # starts the runtime with the configuration
from tensorflow.python.eager import context
config = context.context().config
print(config.experimental.disable_thread_spinning, config.intra_op_parallelism_threads,
      config.inter_op_parallelism_threads)
"""


@pytest.mark.parametrize("threads", ["", "1"])
def test_workers_get_their_threads_and_do_not_spin(threads: str) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TOWER_STUDY_THREADS"}
    if threads:
        env["TOWER_STUDY_THREADS"] = threads  # what Workers sets for each --jobs worker
    proc = subprocess.run([sys.executable, "-c", _THREADS], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    spinning_off, intra, inter = proc.stdout.split()
    if threads:
        assert (spinning_off, intra, inter) == ("True", threads, threads)
    else:  # a single process keeps TensorFlow's defaults: spinning, 0 threads (all cores)
        assert (spinning_off, intra, inter) == ("False", "0", "0")


# One process claiming enqueued trials (WAITING -> RUNNING) as Optuna does; prints the trial ids it won.
_CLAIM = """
import sys, time
from optuna.trial import TrialState
from study.storage import open_storage

storage = open_storage(sys.argv[1])
start, ids = float(sys.argv[2]), [int(i) for i in sys.argv[3].split(",")]
while time.time() < start:
    pass
print(" ".join(str(i) for i in ids if storage.set_trial_state_values(i, state=TrialState.RUNNING)))
"""


def test_concurrent_workers_claim_each_enqueued_trial_once(tmp_path: Path) -> None:
    """Claiming an enqueued trial (a retry of a dead worker's trial) is atomic across processes on SQLite too:
    without ``BEGIN IMMEDIATE`` two processes read WAITING and both "win" the same trial."""
    import subprocess
    import sys

    import optuna

    from study.storage import open_storage

    url = f"sqlite:///{tmp_path / 'claim.db'}"
    study = optuna.create_study(study_name="claim", storage=open_storage(url))
    for i in range(20):
        study.enqueue_trial({"x": i})
    ids = [t._trial_id for t in study.get_trials(deepcopy=False)]
    start = time.time() + 4  # after every process has imported Optuna and opened the storage
    procs = [
        subprocess.Popen([sys.executable, "-c", _CLAIM, url, str(start), ",".join(map(str, ids))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    won = [int(i) for out, _ in outs for i in out.split()]
    assert sorted(won) == sorted(ids), f"claimed more than once: {sorted(won)}"


def test_worker_argv_and_sampler_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    from study.workers import ENV_GENERATION, ENV_WORKER, sampler_seed, worker_argv

    assert worker_argv(["run", "--jobs", "2", "--trials", "5"]) == ["run", "--trials", "5", "--no-test"]
    assert worker_argv(["run", "--jobs=2"], 50) == ["run", "--no-test", "--recycle-after", "50"]
    monkeypatch.delenv(ENV_WORKER, raising=False)
    assert sampler_seed(7) == 7 and sampler_seed(None) is None
    seeds = set()
    for label in ("1", "2", "3"):
        for generation in ("0", "1", "2"):
            monkeypatch.setenv(ENV_WORKER, label)
            monkeypatch.setenv(ENV_GENERATION, generation)
            seeds.add(sampler_seed(7))
            assert sampler_seed(None) is None
    assert len(seeds) == 9  # every worker and every replacement draws its own sequence
    monkeypatch.setenv(ENV_WORKER, "1")
    monkeypatch.setenv(ENV_GENERATION, "0")
    assert sampler_seed(7) == 7  # worker 1's first process samples as a single process does


@pytest.mark.slow
@pytest.mark.parametrize("jobs, trials", [(2, 7), (1, 5)])
def test_workers_are_replaced_after_recycle_after_trials(work: Path, tmp_path: Path, jobs: int, trials: int) -> None:
    """Each worker process runs at most K trials, then a fresh one takes its place; every trial is accounted for and,
    with a seeded random sampler, no replacement replays its predecessor's parameters."""
    import optuna

    db = tmp_path / "recycle.db"
    argv = ["run", "--jobs", str(jobs), "--trials", str(trials), "--recycle-after", "2", "--space"]
    argv += [str(work / "one_epoch.yaml"), "--dataset", f"csv:{work / 'data.csv'}", "--storage", f"sqlite:///{db}"]
    argv += ["--pruner", "none", "--sampler", "random", "--seed", "3", "--no-test"]
    proc = cli(argv, cwd=tmp_path, timeout=280)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    no_traceback(out)
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{db}")[0], storage=f"sqlite:///{db}")
    assert check_accounted(study, trials) == {"COMPLETE": trials}
    assert len(study.trials) == trials
    per_process: dict[str, int] = {}
    for t in study.trials:
        per_process[t.user_attrs["worker"]] = per_process.get(t.user_attrs["worker"], 0) + 1
    assert max(per_process.values()) <= 2, per_process
    assert len(per_process) >= -(-trials // 2), per_process  # ceil(trials / 2) processes at least
    # (a replacement may find the last trial taken by the other worker meanwhile and run none)
    assert out.count("takes its place") >= len(per_process) - jobs, out
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params), params
    assert f"done: {trials}/{trials} finished" in out


@pytest.mark.slow
def test_four_workers_share_one_sqlite_study_without_lock_errors(work: Path, tmp_path: Path) -> None:
    import optuna

    db = tmp_path / "four.db"
    argv = ["run", "--jobs", "4", "--trials", "40", "--space", str(work / "one_epoch.yaml")]
    argv += ["--dataset", f"csv:{work / 'data.csv'}", "--storage", f"sqlite:///{db}", "--pruner", "none", "--no-test"]
    proc = cli(argv, cwd=tmp_path, timeout=280)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "locked" not in out.lower(), out
    no_traceback(out)
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{db}")[0], storage=f"sqlite:///{db}")
    counts = check_accounted(study, 40)
    assert counts == {"COMPLETE": 40}, counts
    assert len(study.trials) == 40  # the workers stopped at the target: no trial beyond it was started
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 4, workers  # every worker ran trials
    assert out.count("done: 40/40 finished") >= 1
    for i in range(1, 5):
        assert f"[worker {i}] " in proc.stdout


@pytest.mark.slow
def test_sigkill_of_one_worker_its_trial_is_retried_by_the_others(work: Path, tmp_path: Path) -> None:
    import optuna

    db = tmp_path / "kill.db"
    name = "kill"
    argv = ["run", "--jobs", "3", "--trials", "6", "--space", str(work / "slow.yaml"), "--study-name", name]
    argv += ["--dataset", f"csv:{work / 'data.csv'}", "--storage", f"sqlite:///{db}", "--pruner", "none", "--no-test"]
    with Background(argv, tmp_path, "kill") as bg:
        [(killed, pid)] = wait_for(lambda: sqlite_rows(db, name), bg, mid_trial(min_finished=1), "trial mid-training")
        assert pid in worker_pids(bg.stdout) and pid != bg.proc.pid
        finished_then = {n: s for n, s, _, _ in sqlite_rows(db, name) if s in ("COMPLETE", "PRUNED")}
        os.kill(pid, signal.SIGKILL)
        rc = bg.wait(timeout=240)
        out, err = bg.stdout, bg.stderr
    # The other workers finished the study, so the run succeeded; the parent says what happened to the one.
    assert rc == 0, out + err
    no_traceback(out, err)
    assert re.search(rf"worker \d \(pid {pid}\) was killed by SIGKILL", out), out
    assert "done: 6/6 finished" in out

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    check_accounted(study, 6)
    trial = study.trials[killed]
    assert trial.state.name == "FAIL", trial
    # Reaped by a surviving worker within seconds (its pid is gone); the heartbeat (30 s grace) is the fallback.
    assert trial.user_attrs["fail_reason"] == f"worker {trial.user_attrs['worker']} died during the trial"
    retries = [t for t in study.trials if t.user_attrs.get("retried_from") == killed]
    assert len(retries) == 1, [(t.number, t.user_attrs) for t in study.trials]
    assert retries[0].params == trial.params and retries[0].state.name == "COMPLETE"
    assert retries[0].user_attrs["worker"] != trial.user_attrs["worker"]
    for number, state in finished_then.items():  # no finished trial lost or changed
        assert study.trials[number].state.name == state


def slow_jobs_argv(work: Path, db: Path, name: str) -> list[str]:
    """``run --jobs 2`` of 8 slow-space trials on SQLite, every trial to its last epoch, no test score."""
    argv = ["run", "--jobs", "2", "--trials", "8", "--space", str(work / "slow.yaml"), "--study-name", name]
    return argv + [
        "--dataset",
        f"csv:{work / 'data.csv'}",
        "--storage",
        f"sqlite:///{db}",
        "--pruner",
        "none",
        "--no-test",
    ]


@pytest.mark.slow
def test_ctrl_c_of_the_parent_stops_every_worker_cleanly(work: Path, tmp_path: Path) -> None:
    import optuna

    db, name = tmp_path / "sigint.db", "sigint"
    with Background(slow_jobs_argv(work, db, name), tmp_path, name) as bg:
        [(running, _)] = wait_for(lambda: sqlite_rows(db, name), bg, mid_trial(min_finished=0), "trial mid-training")
        pids = worker_pids(bg.stdout)
        os.kill(bg.proc.pid, signal.SIGINT)
        rc = bg.wait(timeout=90)
        out, err = bg.stdout, bg.stderr
    assert rc == 130, out + err
    no_traceback(out, err)
    assert "run the same command again to resume" in out, out
    assert not [p for p in pids if pid_alive(p)]  # no worker left behind
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and "WAITING" not in states, states
    assert study.trials[running].state.name == "FAIL"
    assert study.trials[running].user_attrs["fail_reason"] == "interrupted"
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) < 8  # it really stopped early


@pytest.mark.slow
def test_sigkill_of_the_parent_ends_every_worker(work: Path, tmp_path: Path) -> None:
    """``kill -9`` of the ``--jobs`` parent: its workers (in a session of their own) stop within seconds, each
    marking its running trial FAIL."""
    import optuna

    db, name = tmp_path / "orphans.db", "orphans"
    with Background(slow_jobs_argv(work, db, name), tmp_path, name) as bg:
        [(running, _)] = wait_for(lambda: sqlite_rows(db, name), bg, mid_trial(min_finished=0), "trial mid-training")
        pids = worker_pids(bg.stdout)
        os.kill(bg.proc.pid, signal.SIGKILL)
        assert bg.wait(timeout=30) == -signal.SIGKILL
        deadline = time.monotonic() + 20
        while [p for p in pids if _running(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if _running(p)], f"workers outlived their parent: {pids}"
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states, states
    assert study.trials[running].state.name == "FAIL"
    assert study.trials[running].user_attrs["fail_reason"] == "interrupted"


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whichever process adopted it, maybe not at once)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:
        return False


@pytest.mark.slow
def test_failing_trials_are_recorded_with_a_reason_and_the_study_goes_on(work: Path, tmp_path: Path) -> None:
    """An exception while building the model, a NaN loss and a trial past ``--trial-timeout``: each FAIL with its
    ``fail_reason`` (also printed), and the study still reaches its target."""
    import optuna

    db = tmp_path / "fail.db"
    name = "fail"
    argv = ["run", "--space", str(work / "fail.yaml"), "--dataset", f"csv:{work / 'data.csv'}", "--study-name", name]
    argv += ["--storage", f"sqlite:///{db}", "--sampler", "random", "--seed", "3", "--pruner", "none", "--no-test"]
    # The first run only creates the study: no --trial-timeout there, since its first trial pays the tracing of a
    # fresh process (over 4 s on a slow shared 2-core machine). Sampled trials of the second run stay well under 6 s.
    first = cli([*argv, "--trials", "1"], cwd=tmp_path)
    argv += ["--trial-timeout", "6s"]
    assert first.returncode == 0, first.stdout + first.stderr

    # Configs a user queued to try (Optuna's enqueue_trial); the values outside the space's ranges are used as given.
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    queued = len(study.trials)
    study.enqueue_trial({"embedding_dim": 1, "learning_rate": 0.1, "epochs": 2})  # cannot build the model
    study.enqueue_trial({"embedding_dim": 8, "learning_rate": 1e12, "epochs": 2})  # diverges: NaN loss
    study.enqueue_trial({"embedding_dim": 8, "learning_rate": 0.1, "epochs": 1000})  # runs past --trial-timeout
    raised, nan, timed_out = queued, queued + 1, queued + 2

    proc = cli([*argv, "--trials", "3"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    no_traceback(out)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    check_accounted(study, 3)
    trials = study.trials
    assert [trials[n].state.name for n in (raised, nan, timed_out)] == ["FAIL"] * 3
    reasons = {n: trials[n].user_attrs.get("fail_reason", "") for n in (raised, nan, timed_out)}
    assert reasons[raised] == "ValueError: qr_combiner 'concat' needs embedding_dim >= 2, but got 1", reasons
    assert re.fullmatch(r"training diverged: loss=(nan|inf|-inf) at epoch 1; .*", reasons[nan]), reasons
    assert re.fullmatch(r"exceeded --trial-timeout 6s: stopped after epoch (\d+) at (\d+\.\d)s", reasons[timed_out])
    epochs = trials[timed_out].user_attrs["epochs_run"]
    assert 1 <= epochs < 1000 and reasons[timed_out].startswith(
        f"exceeded --trial-timeout 6s: stopped after epoch {epochs} "
    )
    assert 6 < trials[timed_out].user_attrs["seconds"] < 60
    assert len(trials[timed_out].user_attrs["learning_curve"]) == epochs  # what it learned until then is kept
    for n, reason in reasons.items():
        assert f"trial {n:>4} FAIL" in proc.stdout and f"reason: {reason}" in proc.stdout, proc.stdout
    for t in trials:  # any other failure is a sampled embedding_dim of 1: the same genuine error
        if t.state.name == "FAIL" and t.number not in reasons:
            assert t.params["embedding_dim"] == 1 and t.user_attrs["fail_reason"] == reasons[raised]
    assert [t.state.name for t in trials if t.number > timed_out].count("COMPLETE") >= 1  # the study went on
    assert "done: 3/3 finished" in proc.stdout


def test_bad_input_with_jobs_is_reported_once_and_the_waiting_workers_leave_nothing(work: Path, tmp_path: Path) -> None:
    """The workers start before the parent validates (so they import TensorFlow meanwhile); on a bad input only the
    parent speaks, the workers are stopped before they touch the storage, and none is left running."""
    import optuna

    db = tmp_path / "bad.db"
    argv = ["run", "--jobs", "2", "--trials", "2", "--space", str(work / "one_epoch.yaml"), "--metric", "top7x"]
    argv += ["--dataset", f"csv:{work / 'data.csv'}", "--storage", f"sqlite:///{db}", "--no-test"]
    proc = cli(argv, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    no_traceback(proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --metric: ") and "top7x" in lines[0], proc.stderr
    assert "[worker" not in proc.stdout and "started" not in proc.stdout, proc.stdout
    assert not db.exists() or not optuna.get_all_study_names(f"sqlite:///{db}")
    leftover = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(db).encode() in (entry / "cmdline").read_bytes():
                    leftover.append(int(entry.name))
            except OSError:
                pass
    assert not leftover, f"worker processes left running: {leftover}"
