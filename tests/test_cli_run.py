"""End to end: ``python -m study run/best/list/train`` in a subprocess on a small CSV, with real Optuna, SQLite and
TensorFlow (no mocks). Covers a study landing in SQLite, ``best``/``list``, SIGKILL + resume, Ctrl-C, pruning,
``--seed`` reproducibility, refusing another dataset/space under the same name, a NaN-loss trial, a
multi-objective (accuracy vs memory) study and the embedding-size budget.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_util import (
    LONG_SPACE,
    NAN_SPACE,
    PRUNE_SPACE,
    STUDY_ATTRS,
    TINY_SPACE,
    TRIAL_ATTRS,
    Background,
    cli,
    dump,
    finished_count,
    last_line,
    load,
    states,
    trial_rows,
    wait_mid_trial,
    write_dataset,
    write_space,
)

from study import names

pytestmark = pytest.mark.slow

STUDY = "csv_data.csv-tiny"  # the default name: <dataset>-<space file stem>
BASIC = ["run", "--trials", "3", "--space", "tiny.yaml", "--dataset", "csv:data.csv", "--seed", "7"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with data.csv (6000 synthetic interactions) and the test spaces."""
    d = tmp_path_factory.mktemp("e2e")
    write_dataset(d / "data.csv", n_rows=6000)
    for name, text in {"tiny": TINY_SPACE, "long": LONG_SPACE, "prune": PRUNE_SPACE, "nan": NAN_SPACE}.items():
        write_space(d / f"{name}.yaml", text)
    return d


@pytest.fixture(scope="module")
def basic(work: Path) -> dict[str, Any]:
    """One short study (3 trials, default TPE + Hyperband, test split scored at the end) in basic.db."""
    db = work / "basic.db"
    proc = cli([*BASIC, "--storage", f"sqlite:///{db}"], cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"db": db, "proc": proc}


def _no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


# ------------------------------------------------------------------------------------------------ 1. a short study


def test_short_study_lands_in_sqlite_with_all_attrs(work: Path, basic: dict[str, Any]) -> None:
    from study.data import load as load_data
    from study.search_space import load_space

    proc = basic["proc"]
    _no_traceback(proc.stdout, proc.stderr)
    assert f"study '{STUDY}' in sqlite:///" in proc.stdout
    assert "done: 3/3 finished" in proc.stdout
    study = load(basic["db"])
    assert study.study_name == STUDY
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 3 and finished_count(study) == 3, states(study)

    attrs = study.user_attrs
    for key in STUDY_ATTRS:
        assert key in attrs, key
    assert set(attrs) <= set(names.STUDY_ATTRS), set(attrs) - set(names.STUDY_ATTRS)  # one table names them all
    assert attrs["dataset"] == "csv:data.csv" and attrs["protocol"] == "random"
    assert attrs["space_fingerprint"] == load_space(str(work / "tiny.yaml")).fingerprint()
    assert attrs["data_hash"] == load_data(f"csv:{work / 'data.csv'}").data_hash
    assert attrs["test_trial"] == study.best_trial.number
    assert 0.0 < attrs["test_metrics"]["top100"] <= 1.0
    assert attrs["test_metrics"]["top10"] <= attrs["test_metrics"]["top50"] <= attrs["test_metrics"]["top100"]

    for t in trials:
        for key in TRIAL_ATTRS:
            assert key in t.user_attrs, (t.number, key)
        assert set(t.user_attrs) <= set(names.TRIAL_ATTRS), set(t.user_attrs) - set(names.TRIAL_ATTRS)
        ua, params = t.user_attrs, t.params
        cfg = ua["config"]
        assert cfg["train"]["seed"] == 7  # --seed seeds training too
        assert cfg["train"]["learning_rate"] == params["learning_rate"]
        assert cfg["train"]["batch_size"] == params["batch_size"] and cfg["train"]["epochs"] == params["epochs"]
        assert cfg["model"]["embedding_dim"] == params["embedding_dim"]
        assert cfg["model"]["layers"][-1] == params["output_dim"] and len(cfg["model"]["layers"]) == params["depth"]
        curve = ua["learning_curve"]
        assert [e for e, _ in curve] == list(range(1, ua["epochs_run"] + 1))  # evaluated every epoch
        assert {e: v for e, v in curve} == pytest.approx(t.intermediate_values, abs=1e-6)
        best_epoch, best_value = max(curve, key=lambda ev: (ev[1], -ev[0]))
        assert ua["best_epoch"] == best_epoch
        assert ua["valid_metrics"]["top100"] == pytest.approx(best_value, abs=1e-6)
        if t.state.name == "COMPLETE":
            assert ua["epochs_run"] == params["epochs"]
            assert t.value == pytest.approx(best_value, abs=1e-6)
        else:
            assert ua["pruned_at_epoch"] == ua["epochs_run"] <= params["epochs"]
        assert ua["total_params"] > ua["embedding_params"] > 0
        assert ua["embedding_bytes"] == 4 * ua["embedding_params"]
        assert ua["seconds"] > 0 and ua["seconds_per_epoch"] > 0
        assert set(ua["versions"]) >= {"optuna", "tensorflow"}
        assert ua["data_hash"] == attrs["data_hash"]


def test_best_and_list_print_the_best_trial_and_counts(work: Path, basic: dict[str, Any]) -> None:
    study = load(basic["db"])
    best = study.best_trial
    url = f"sqlite:///{basic['db']}"

    proc = cli(["best", "--storage", url], cwd=work)
    assert proc.returncode == 0, proc.stderr
    _no_traceback(proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    best_epoch = best.user_attrs["best_epoch"]
    assert lines[0] == f"study '{STUDY}': best trial {best.number}, valid top100={best.value:.4f} at epoch {best_epoch}"
    for key, value in best.params.items():
        assert f"  {key}: {value}" in lines
    test_line = next(line for line in lines if line.startswith("test:"))
    assert f"top100={study.user_attrs['test_metrics']['top100']:.4f}" in test_line
    retrain = next(line for line in lines if line.startswith("retrain:"))
    command = retrain[len("retrain:") :].strip()
    # The stored config travels whole through --study/--trial (tests/test_retrain.py re-trains it).
    assert command == f"python -m study train --study {STUDY} --trial {best.number} --storage {url}"
    assert "#" not in command, command  # a runnable command, not a hint

    # The retrain line really retrains the trial: same validation metric at its best epoch.
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "study"]
    proc = cli(argv[3:], cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"best epoch (\d+): valid top100=([0-9.]+)", proc.stdout)
    assert match, proc.stdout
    assert int(match.group(1)) == best_epoch
    assert float(match.group(2)) == pytest.approx(best.value, abs=0.02)

    proc = cli(["list", "--storage", url], cwd=work)
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()
    assert header.split()[:5] == ["study", "complete", "pruned", "failed", "running"]
    counts = states(study)
    fields = row.split()
    assert fields[:5] == [STUDY, str(counts.get("COMPLETE", 0)), str(counts.get("PRUNED", 0)), "0", "0"]
    assert row.endswith(f"{best.value:.4f} (trial {best.number})")


# ------------------------------------------------------------------------------------------------ 5. --seed


def test_same_seed_samples_the_same_params(work: Path, basic: dict[str, Any]) -> None:
    db = work / "seed_again.db"
    proc = cli([*BASIC, "--storage", f"sqlite:///{db}", "--no-test"], cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = [(t.number, t.params) for t in load(basic["db"]).get_trials(deepcopy=False)]
    again = [(t.number, t.params) for t in load(db).get_trials(deepcopy=False)]
    assert len(first) == 3
    assert again == first
    assert len({p["learning_rate"] for _, p in first}) == 3  # really sampled, not a constant


# ------------------------------------------------------------------------------------------------ 6. identity


def test_other_data_under_the_same_name_is_refused(work: Path, basic: dict[str, Any], tmp_path: Path) -> None:
    # Same spec (csv:data.csv, relative) and same space, but the file holds other interactions.
    write_dataset(tmp_path / "data.csv", n_rows=3000, seed=1)
    write_space(tmp_path / "tiny.yaml", TINY_SPACE)
    before = dump(basic["db"])
    proc = cli([*BASIC, "--storage", f"sqlite:///{basic['db']}"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    _no_traceback(proc.stdout, proc.stderr)
    line = last_line(proc.stderr)
    assert proc.stderr.strip() == line
    assert line.startswith(f"error: study '{STUDY}' in sqlite:///{basic['db']} was run with data_hash=")
    assert "--study-name NEW" in line
    assert "trial" not in proc.stdout
    assert dump(basic["db"]) == before


def test_other_space_under_the_same_name_is_refused(work: Path, basic: dict[str, Any]) -> None:
    other = write_space(work / "other.yaml", TINY_SPACE.replace("low: 0.05, high: 0.5", "low: 0.05, high: 0.4"))
    before = dump(basic["db"])
    argv = ["run", "--trials", "3", "--space", str(other), "--dataset", "csv:data.csv", "--study-name", STUDY]
    proc = cli([*argv, "--storage", f"sqlite:///{basic['db']}"], cwd=work)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    _no_traceback(proc.stdout, proc.stderr)
    line = last_line(proc.stderr)
    assert proc.stderr.strip() == line
    assert f"error: study '{STUDY}'" in line and "was run with space_fingerprint=" in line
    assert dump(basic["db"]) == before


# ------------------------------------------------------------------------------------------------ 2. SIGKILL + resume


def test_killed_run_resumes_to_exactly_n_trials(work: Path, tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    argv = ["run", "--trials", "3", "--space", str(work / "long.yaml"), "--dataset", f"csv:{work / 'data.csv'}"]
    argv += ["--storage", f"sqlite:///{db}", "--pruner", "none", "--no-test"]
    with Background(argv, tmp_path, "killed") as bg:
        running = wait_mid_trial(db, bg, min_finished=1)
        time.sleep(0.1)  # into building/training the model
        os.kill(bg.proc.pid, signal.SIGKILL)
        assert bg.wait() == -signal.SIGKILL
    rows = trial_rows(db)
    assert [n for n, state, _, _ in rows if state == "RUNNING"] == [running], rows  # left RUNNING by the dead worker
    before = load(db)
    done_before = {t.number: (t.state.name, t.values) for t in before.trials if t.state.name in ("COMPLETE", "PRUNED")}
    assert len(done_before) >= 1
    killed_params = before.trials[running].params

    proc = cli(argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _no_traceback(proc.stdout, proc.stderr)
    assert "resuming study" in proc.stdout
    assert f"trials [{running}] were running in a worker that died; marked FAIL and queued again" in proc.stdout
    assert f"{len(done_before)} finished" in proc.stdout and f"{3 - len(done_before)} to go" in proc.stdout

    after = load(db)
    assert finished_count(after) == 3, states(after)
    killed = after.trials[running]
    assert killed.state.name == "FAIL"
    assert "died" in killed.user_attrs["fail_reason"]
    retries = [t for t in after.trials if t.user_attrs.get("retried_from") == running]
    assert len(retries) == 1 and retries[0].number > running
    assert retries[0].params == killed_params
    assert retries[0].state.name == "COMPLETE"
    for number, (state, values) in done_before.items():  # nothing finished was lost or changed
        assert (after.trials[number].state.name, after.trials[number].values) == (state, values)


# ------------------------------------------------------------------------------------------------ 3. Ctrl-C


def test_ctrl_c_stops_cleanly_and_marks_the_running_trial_failed(work: Path, tmp_path: Path) -> None:
    db = tmp_path / "sigint.db"
    argv = ["run", "--trials", "3", "--space", str(work / "long.yaml"), "--dataset", f"csv:{work / 'data.csv'}"]
    argv += ["--storage", f"sqlite:///{db}", "--pruner", "none", "--no-test"]
    with Background(argv, tmp_path, "sigint") as bg:
        running = wait_mid_trial(db, bg, min_finished=1)
        snapshot = {n: s for n, s, _, _ in trial_rows(db) if s in ("COMPLETE", "PRUNED")}
        time.sleep(0.1)  # into building/training the model
        os.kill(bg.proc.pid, signal.SIGINT)
        rc = bg.wait(timeout=60)
        out, err = bg.stdout, bg.stderr
    assert rc == 130, out + err
    _no_traceback(out, err)
    assert "interrupted:" in out and "To resume, run the same command again." in out
    study = load(db)
    assert study.trials[running].state.name == "FAIL"
    assert states(study).get("RUNNING", 0) == 0
    assert len(study.trials) == running + 1  # no trial started after Ctrl-C
    for number, state in snapshot.items():
        assert study.trials[number].state.name == state
        assert state == "PRUNED" or math.isfinite(study.trials[number].value)


# ------------------------------------------------------------------------------------------------ 4. pruning


def test_pruning_prunes_the_bad_trials(work: Path, tmp_path: Path) -> None:
    db = tmp_path / "prune.db"
    argv = ["run", "--trials", "7", "--space", str(work / "prune.yaml"), "--dataset", f"csv:{work / 'data.csv'}"]
    argv += ["--storage", f"sqlite:///{db}", "--pruner", "median", "--sampler", "random", "--seed", "4", "--no-test"]
    proc = cli(argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load(db)
    trials = study.trials
    assert finished_count(study) == 7 and len(trials) == 7, states(study)
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert len(pruned) >= 1, [(t.number, t.state.name, t.params) for t in trials]
    for t in pruned:
        assert t.user_attrs["epochs_run"] < 4
        assert t.user_attrs["pruned_at_epoch"] == t.user_attrs["epochs_run"] == max(t.intermediate_values)
        assert len(t.user_attrs["learning_curve"]) == t.user_attrs["epochs_run"]
        assert f"trial {t.number:>4} PRUNED" in proc.stdout
    # MedianPruner(n_startup_trials=5): once 5 trials are complete, every trial with the useless learning rate
    # (adam at 1e-7..1e-6) is pruned, and there is at least one such trial.
    fifth = [t.number for t in trials if t.state.name == "COMPLETE"][4]
    late_bad = [t for t in trials if t.number > fifth and t.params["optimizer"] == "adam"]
    assert late_bad, [(t.number, t.params) for t in trials]
    assert all(t.state.name == "PRUNED" for t in late_bad)
    good = [t.user_attrs["valid_metrics"]["top100"] for t in trials if t.params["optimizer"] == "adagrad"]
    bad = [t.user_attrs["valid_metrics"]["top100"] for t in trials if t.params["optimizer"] == "adam"]
    assert min(good) > max(bad) + 0.2  # the bad range really is bad


# ------------------------------------------------------------------------------------------------ 8. NaN loss


def test_nan_loss_trial_fails_and_the_study_reaches_its_target(work: Path, tmp_path: Path) -> None:
    db = tmp_path / "nan.db"
    argv = ["run", "--trials", "3", "--space", str(work / "nan.yaml"), "--dataset", f"csv:{work / 'data.csv'}"]
    argv += ["--storage", f"sqlite:///{db}", "--sampler", "random", "--seed", "8", "--pruner", "none", "--no-test"]
    proc = cli(argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _no_traceback(proc.stdout, proc.stderr)
    study = load(db)
    assert finished_count(study) == 3
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) >= 1
    for t in failed:
        assert t.params["learning_rate"] == 1e12
        assert re.fullmatch(r"training diverged: loss=(nan|inf|-inf) at epoch 1; .*", t.user_attrs["fail_reason"])
        assert t.user_attrs["epochs_run"] == 1
        assert f"reason: {t.user_attrs['fail_reason']}" in proc.stdout
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and all(t.params["learning_rate"] == 0.1 for t in complete)
    assert f"done: 3/3 finished (3 complete, 0 pruned, {len(failed)} failed)" in proc.stdout
    assert study.best_trial.number in {t.number for t in complete}


# ------------------------------------------------------------------------------------------------ multi-objective

# Full tables vs hashing at two dims: the trials differ a lot in embedding bytes, so there is a real Pareto front.
MEMORY_SPACE = """\
model:
  layers: [16]
  embedding: {type: categorical, choices: [full, hashing]}
  hash_bucket_fraction: {type: float, low: 0.05, high: 0.3, when: {embedding: hashing}}
  embedding_dim: {type: categorical, choices: [4, 16]}
train:
  learning_rate: {type: float, low: 0.05, high: 0.5, log: true}
  batch_size: 256
  epochs: 3
  eval_every: 1
  jit: false
"""


def _dominates(a: list[float], b: list[float]) -> bool:
    """a dominates b for (maximize, minimize)."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def test_multi_objective_run_yields_a_pareto_front_readable_with_load_study(work: Path) -> None:
    import optuna

    write_space(work / "memory.yaml", MEMORY_SPACE)
    db = work / "multi.db"
    args = ["run", "--trials", "6", "--space", "memory.yaml", "--dataset", "csv:data.csv", "--seed", "1",
            "--objectives", "top100,embedding_bytes", "--storage", f"sqlite:///{db}"]  # fmt: skip
    proc = cli(args, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _no_traceback(proc.stdout, proc.stderr)
    assert "pruning is not available for multi-objective studies" in proc.stdout

    study = optuna.load_study(study_name="csv_data.csv-memory", storage=f"sqlite:///{db}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 6, states(study)  # no pruning in a multi-objective study: every trial runs to the end
    for t in complete:
        assert t.values[0] == pytest.approx(t.user_attrs["valid_metrics"]["top100"], abs=1e-6)
        assert t.values[1] == t.user_attrs["embedding_bytes"] == 4 * t.user_attrs["embedding_params"]
        assert t.user_attrs["epochs_run"] == 3
    assert len({t.values[1] for t in complete}) > 1, "every trial had the same embedding size"
    front = study.best_trials
    assert front
    front_numbers = {t.number for t in front}
    for t in complete:  # exactly the non-dominated trials, checked by hand
        dominated = any(_dominates(o.values, t.values) for o in complete if o.number != t.number)
        assert (t.number in front_numbers) == (not dominated), (t.number, t.values)

    best = cli(["best", "--storage", f"sqlite:///{db}"], cwd=work)
    assert best.returncode == 0, best.stderr
    assert f"{len(front)} Pareto-optimal trials" in best.stdout


def test_max_embedding_mb_rejects_over_budget_configs_before_training(work: Path) -> None:
    db = work / "budget.db"
    args = [*BASIC, "--trials", "2", "--no-test", "--max-embedding-mb", "0.001", "--storage", f"sqlite:///{db}"]
    proc = cli(args, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load(db)
    assert states(study) == {"PRUNED": 2}
    for t in study.trials:
        assert t.user_attrs["embedding_bytes"] > 0.001 * 2**20
        assert "> --max-embedding-mb 0.001" in t.user_attrs["pruned_reason"]
        assert t.user_attrs["epochs_run"] == 0 and not t.intermediate_values  # never trained
