"""A single-process run (``--jobs 1``) replaces itself with a fresh process every K trials (exec, same PID), which
resumes the study: what bounds a long run's memory, since TensorFlow's XLA cache never evicts."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_util import TINY_SPACE, load, write_dataset, write_space

from study.names import StudyAttr, TrialAttr
from study.workers import ENV_RESTART_AFTER

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "study", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


@pytest.mark.slow
def test_single_process_run_restarts_itself_and_finishes_the_study(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data.csv", n_rows=2000)
    space = write_space(tmp_path / "tiny.yaml", TINY_SPACE)
    db = tmp_path / "s.db"
    args = ["run", "--trials", "2", "--space", str(space), "--dataset", f"csv:{data}", "--storage", f"sqlite:///{db}"]
    proc = run_cli([*args, "--study-name", "r", "--seed", "1"], tmp_path, **{ENV_RESTART_AFTER: "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # one restart (after trial 1) that resumes the stored study; none after the last trial
    assert proc.stdout.count("restarting as a fresh process") == 1, proc.stdout
    assert proc.stdout.count("resuming study 'r'") == 1, proc.stdout
    optuna_study = load(db, "r")
    assert len(optuna_study.trials) == 2
    assert all(t.state.is_finished() and t.state.name != "FAIL" for t in optuna_study.trials)
    # the same process (exec keeps the PID) ran both: no worker processes were started
    assert len({t.user_attrs[TrialAttr.WORKER] for t in optuna_study.trials}) == 1
    # the end of the run happens once, in the last image: the best trial scored on test, the summary line
    assert StudyAttr.TEST_METRICS in optuna_study.user_attrs
    assert proc.stdout.count("\ndone: 2/2 finished") == 1, proc.stdout


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], None, 10),  # the default with --jobs 1
        ([], "3", 3),
        ([], "0", 0),
        (["--recycle-after", "0"], "3", 0),  # off
        (["--recycle-after", "5"], None, 0),  # one worker process recycles instead
        (["--jobs", "2"], None, 0),  # workers recycle instead
    ],
)
def test_restart_after_settings(argv: list[str], env: str | None, expected: int, monkeypatch) -> None:
    from study import cli

    if env is None:
        monkeypatch.delenv(ENV_RESTART_AFTER, raising=False)
    else:
        monkeypatch.setenv(ENV_RESTART_AFTER, env)
    args = cli.build_parser().parse_args(["run", *argv])
    assert cli.restart_after(args) == expected


def test_a_run_whose_every_trial_fails_stops_with_the_reason(tmp_path: Path) -> None:
    """Failed trials do not count towards --trials: a cause that fails every trial must stop the run, not loop."""
    from study.config import RunSettings
    from study.errors import StudyError
    from study.runner import MAX_FAILED_IN_A_ROW, run_study

    data = write_dataset(tmp_path / "data.csv", n_rows=1500)
    space = write_space(tmp_path / "tiny.yaml", TINY_SPACE)
    settings = RunSettings(
        space=str(space),
        dataset=f"csv:{data}",
        storage=f"sqlite:///{tmp_path / 'f.db'}",
        study_name="f",
        trials=3,
        trial_timeout=1e-6,  # every trial fails after its first epoch
        quiet=True,
    )
    with pytest.raises(StudyError, match=f"{MAX_FAILED_IN_A_ROW} trials in a row failed.*exceeded --trial-timeout"):
        run_study(settings, io.StringIO())
    trials = load(tmp_path / "f.db", "f").trials
    assert len(trials) == MAX_FAILED_IN_A_ROW and all(t.state.name == "FAIL" for t in trials)


def test_the_progress_bar_counts_the_time_before_a_restart() -> None:
    """After a restart the bar's elapsed time includes the earlier process's (the ETA uses this process's rate)."""
    import optuna

    from study.progress import Progress

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_study = optuna.create_study()
    optuna_study.add_trial(optuna.trial.create_trial(value=0.5))
    out = io.StringIO()
    bar = Progress(10, 0, "top100", quiet=False, stream=out, elapsed_before=3723.0)
    bar.bar(optuna_study, 1)
    assert "1/10 finished" in out.getvalue() and "elapsed 1:02:03" in out.getvalue(), out.getvalue()
