"""``python -m study train --study NAME --trial N``: a stored trial re-trained from its full stored config.

``best``, the report and the dashboard note print that command; pasted into a shell it must re-train the trial and
reach its validation value.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_report import ROOT, small_study

from study.cli import base_train_config, build_parser, main
from study.config import TrialConfig
from study.results import TrialAttr, retrain_command


def _train_args(*argv: str):
    return build_parser().parse_args(["train", *argv])


def test_the_stored_config_round_trips_exactly() -> None:
    s = small_study()
    optuna_study = s.load()
    trials = [t for t in optuna_study.get_trials(deepcopy=False) if t.user_attrs.get(TrialAttr.CONFIG)]
    assert len(trials) >= 5
    defaults = TrialConfig().to_dict()
    differs = 0
    for trial in trials:
        cfg, from_study = base_train_config(
            _train_args("--study", s.name, "--trial", str(trial.number), "--storage", s.storage)
        )
        assert from_study.study_name == s.name
        assert cfg.to_dict() == trial.user_attrs[TrialAttr.CONFIG]
        differs += cfg.to_dict() != defaults
    assert differs == len(trials)  # every trial trained something other than the defaults: flags alone would lose it


def test_best_prints_a_command_that_retrains_the_best_trial_to_its_value(tmp_path: Path) -> None:
    s = small_study()
    best = s.load().best_trial
    done = subprocess.run(
        [sys.executable, "-m", "study", "best", "--storage", s.storage, "--study", s.name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("retrain:"))
    command = line.split(":", 1)[1].strip()
    assert command == f"python -m study train --study {s.name} --trial {best.number} --storage {s.storage}"
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "study"]
    trained = subprocess.run(
        [sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )  # another folder: the command names everything it needs
    assert trained.returncode == 0, trained.stderr
    match = re.search(r"best epoch (\d+): valid top100=([0-9.]+)", trained.stdout)
    assert match, trained.stdout
    assert int(match.group(1)) == best.user_attrs[TrialAttr.BEST_EPOCH]
    assert float(match.group(2)) == pytest.approx(best.value, abs=0.01)


def test_the_report_and_the_dashboard_note_carry_the_same_command() -> None:
    from study.artifacts import study_note
    from study.report import collect

    s = small_study()
    optuna_study = s.load()
    expected = retrain_command(optuna_study, optuna_study.best_trial, s.storage)
    assert collect(optuna_study, storage_url=s.storage).retrain_command == expected
    assert expected in study_note(optuna_study, storage_url=s.storage)


def test_the_command_masks_a_password_and_leaves_out_the_default_storage() -> None:
    optuna_study = small_study().load()
    best = optuna_study.best_trial
    assert "--storage" not in retrain_command(optuna_study, best, "sqlite:///study.db")
    shown = retrain_command(optuna_study, best, "postgresql://u:se/cr#et@127.0.0.1:5432/db")
    assert "se/cr#et" not in shown and "u:***@127.0.0.1" in shown


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trial", "1"], "--trial: needs --study NAME"),
        (["--study", "small"], "--study: needs --trial N"),
        (["--study", "small", "--trial", "999"], "--trial 999: study 'small' has trials 0.."),
        (["--study", "small", "--trial", "one"], "--trial: expected 'best' or a trial number, but got 'one'"),
        (["--study", "small", "--trial", "1", "--dataset", "embedded"], "--dataset: not with --study"),
        (["--study", "nosuch", "--trial", "1"], "no study 'nosuch' in"),
    ],
)
def test_bad_retrain_flags_are_one_line_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    s = small_study()
    assert main(["train", *argv, "--storage", s.storage]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
