"""Helpers for the end-to-end CLI tests: a small CSV dataset, tiny search spaces, and the real CLI in a subprocess.

Every subprocess pays the TensorFlow import (~5 s), so the tests keep their number small.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthetic import make_table

# A fast space: tiny towers, 3-4 epochs, no XLA (compiling costs more than these epochs take).
TINY_SPACE = """\
model:
  depth: {type: int, low: 1, high: 2}
  units: {type: int, low: 8, high: 32, log: true}
  output_dim: {type: categorical, choices: [8, 16]}
  embedding_dim: {type: categorical, choices: [8, 16]}
train:
  learning_rate: {type: float, low: 0.05, high: 0.5, log: true}
  batch_size: {type: categorical, choices: [256, 512]}
  epochs: {type: int, low: 3, high: 4}
  eval_every: 1
  jit: false
"""

# Longer trials (10 short epochs) so that a signal reliably lands in the middle of one.
LONG_SPACE = """\
model:
  layers: [16]
  embedding_dim: {type: categorical, choices: [8, 16]}
train:
  learning_rate: {type: float, low: 0.05, high: 0.5, log: true}
  batch_size: 64
  epochs: 10
  eval_every: 1
  jit: false
"""

# Half the trials (optimizer adam) get a learning rate far too small to learn anything in 4 epochs.
PRUNE_SPACE = """\
model:
  layers: [16]
  embedding_dim: 8
train:
  optimizer: {type: categorical, choices: [adagrad, adam]}
  learning_rate: {type: float, low: 1.0e-7, high: 1.0e-6, log: true, when: {optimizer: adam}}
  batch_size: 256
  epochs: 4
  eval_every: 1
  jit: false
"""

# A learning rate of 1e12 diverges (NaN loss) in the first epoch; 0.1 learns (Adagrad, the default optimizer).
NAN_SPACE = """\
model:
  layers: [16]
  embedding_dim: 8
train:
  learning_rate: {type: categorical, choices: [0.1, 1.0e+12]}
  batch_size: 256
  epochs: 3
  eval_every: 1
  jit: false
"""

TRIAL_ATTRS = (
    "config",
    "learning_curve",
    "valid_metrics",
    "best_epoch",
    "total_params",
    "embedding_params",
    "embedding_bytes",
    "seconds_per_epoch",
    "seconds",
    "versions",
    "data_hash",
    "epochs_run",
)
STUDY_ATTRS = ("dataset", "protocol", "space_fingerprint", "data_hash", "test_metrics", "test_trial")


def write_dataset(path: Path, n_rows: int = 6000, seed: int = 0) -> Path:
    """The synthetic table as an interaction CSV: user_id,item_id,title,timestamp,genres ('|'-joined),rating."""
    table = make_table(n_rows=n_rows, seed=seed)
    table["genres"] = table["genres"].map("|".join)
    path.parent.mkdir(parents=True, exist_ok=True)
    table[["user_id", "item_id", "title", "timestamp", "genres", "rating"]].to_csv(path, index=False)
    return path


def write_space(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)  # PYTHONPATH passes through unchanged; the package is importable as installed
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(args: Sequence[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m study ARGS`` in ``cwd``; returns the finished process (stdout/stderr as text)."""
    return subprocess.run(
        [sys.executable, "-m", "study", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _default_sigint() -> None:
    # A process started with SIGINT ignored (e.g. a background CI job) would keep ignoring it after exec, and
    # Python would then not turn SIGINT into KeyboardInterrupt. Restore the default in the child.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Background:
    """``python -m study ARGS`` started in the background, its output going to files in ``cwd``."""

    def __init__(self, args: Sequence[str], cwd: Path, tag: str = "bg") -> None:
        self.out_path = cwd / f"{tag}.stdout"
        self.err_path = cwd / f"{tag}.stderr"
        self._out = self.out_path.open("w")
        self._err = self.err_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "study", *args],
            cwd=cwd,
            env=_env(),
            stdout=self._out,
            stderr=self._err,
            preexec_fn=_default_sigint,
        )

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.close()
            self._err.close()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def stop(self) -> None:
        """Kill the process if it is still running (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(timeout=30)

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def trial_rows(db: Path) -> list[tuple[int, str, int, bool]]:
    """``(number, state, epochs reported, worker recorded)`` of every trial, read straight from the SQLite file.

    Read-only, so polling never creates the file or its tables while the CLI is still setting them up.
    """
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute(
                "SELECT t.number, t.state,"
                " (SELECT COUNT(*) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id),"
                " EXISTS (SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'worker')"
                " FROM trials t ORDER BY t.number"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return []
    return [(n, state, steps, bool(worker)) for n, state, steps, worker in rows]


def wait_mid_trial(db: Path, bg: Background, min_finished: int = 1, timeout: float = 180) -> int:
    """Wait until ``min_finished`` trials are COMPLETE/PRUNED and another one is RUNNING in the worker.

    "In the worker" = the trial has its ``worker`` attr, i.e. it is past sampling and into building/training
    the model (the first epoch alone, which traces the training function, takes seconds).

    Returns:
        The number of the running trial.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bg.proc.poll() is not None:
            raise AssertionError(f"the run ended early (rc={bg.proc.returncode}):\n{bg.stdout}\n{bg.stderr}")
        rows = trial_rows(db)
        finished = sum(state in ("COMPLETE", "PRUNED") for _, state, _, _ in rows)
        running = [n for n, state, _, worker in rows if state == "RUNNING" and worker]
        if finished >= min_finished and running:
            return running[0]
        time.sleep(0.05)
    raise AssertionError(f"no running trial after {timeout} s: {trial_rows(db)}")


def load(db: Path, study_name: str | None = None) -> Any:
    """``optuna.load_study`` on a SQLite file (the only study when no name is given)."""
    import optuna

    url = f"sqlite:///{db}"
    if study_name is None:
        names = optuna.get_all_study_names(url)
        assert len(names) == 1, names
        study_name = names[0]
    return optuna.load_study(study_name=study_name, storage=url)


def dump(db: Path) -> str:
    """Everything a storage holds about its studies and trials, as canonical JSON (to compare before/after)."""
    import optuna

    url = f"sqlite:///{db}"
    studies = []
    for name in sorted(optuna.get_all_study_names(url)):
        s = optuna.load_study(study_name=name, storage=url)
        trials = [
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "values": t.values,
                "user_attrs": t.user_attrs,
                "system_attrs": t.system_attrs,
                "intermediate": {str(k): v for k, v in t.intermediate_values.items()},
                "start": str(t.datetime_start),
                "complete": str(t.datetime_complete),
            }
            for t in s.get_trials(deepcopy=False)
        ]
        studies.append({"name": name, "user_attrs": s.user_attrs, "trials": trials})
    return json.dumps(studies, sort_keys=True, default=str)


def states(study: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def finished_count(study: Any) -> int:
    c = states(study)
    return c.get("COMPLETE", 0) + c.get("PRUNED", 0)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
