"""What must never happen to a user's storage or secrets: a study this tool did not make is not touched, read-only
commands write nothing, a password never shows, and commands that train nothing do not load TensorFlow.

Each storage case compares the storage before and after (its bytes, or everything Optuna reads from it).
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from e2e_util import dump
from test_report import ROOT, small_study

from study import cli as study_cli
from study.config import RunSettings
from study.errors import ConfigError

SECRET_URL = "postgresql://user:se/cr#e?t@127.0.0.1:1/db"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_study_this_tool_did_not_make_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "foreign.db"
    url = f"sqlite:///{db}"
    foreign = optuna.create_study(study_name="foreign", storage=url)
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    before = dump(db)

    from study.runner import prepare

    settings = RunSettings(space="quick", storage=url, study_name="foreign", trials=2)
    with pytest.raises(ConfigError) as info:
        prepare(settings, out=io.StringIO())
    message = str(info.value)
    assert "study 'foreign'" in message and "was not made by `python -m study run`" in message, message
    assert "--study-name" in message
    assert dump(db) == before


def test_another_space_is_refused_naming_both_space_files(tmp_path: Path) -> None:
    s = small_study()
    before = dump(Path(s.storage[len("sqlite:///") :]))
    from study.runner import prepare

    settings = RunSettings(space="quick", dataset=f"csv:{s.csv}", storage=s.storage, study_name=s.name, trials=9)
    with pytest.raises(ConfigError) as info:
        prepare(settings, out=io.StringIO())
    message = str(info.value)
    assert "space_fingerprint" in message, message
    assert f"stored: {s.folder / 'space.yaml'}" in message and "given: " in message and "quick.yaml" in message
    assert dump(Path(s.storage[len("sqlite:///") :])) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["best"],
        ["report", "--out", "r.html"],
        ["export", "--out", "m"],
        ["evaluate"],
        ["dashboard", "--port", "1"],
    ],
    ids=lambda a: a[0],
)
def test_read_only_commands_leave_an_unrelated_sqlite_file_as_it_was(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    db = tmp_path / "unrelated.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    before = _digest(db)
    monkeypatch.chdir(tmp_path)
    assert study_cli.main([*argv, "--storage", "sqlite:///unrelated.db"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "error: --storage sqlite:///unrelated.db: not an Optuna storage (no studies table); pass the file `run` wrote"
    )
    assert _digest(db) == before and _files(tmp_path) == ["unrelated.db"]  # no tables, no WAL, no lock, no output


@pytest.mark.parametrize("command", ["list", "best", "report"])
def test_read_only_commands_do_not_create_a_missing_journal(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert study_cli.main([command, "--storage", "journal:nothere.log"]) == 1
    assert "journal:nothere.log: no such file" in capsys.readouterr().err
    assert _files(tmp_path) == []


def test_passwords_are_masked_on_every_printing_path() -> None:
    from study.artifacts import study_note
    from study.report import collect, esc, render_html
    from study.results import retrain_command
    from study.storage import mask_secrets, mask_url

    assert mask_url(SECRET_URL) == "postgresql://user:***@127.0.0.1:1/db"
    assert mask_url("postgresql://user:p@ss@h/db") == "postgresql://user:***@h/db"  # an unencoded @ too
    assert mask_secrets(f"cannot connect to {SECRET_URL}: refused") == (
        "cannot connect to postgresql://user:***@127.0.0.1:1/db: refused"
    )
    optuna_study = small_study().load()
    best = optuna_study.best_trial
    data = collect(optuna_study, storage_url=SECRET_URL)
    page = render_html(data, figures={})
    for text in (
        retrain_command(optuna_study, best, SECRET_URL),
        study_note(optuna_study, storage_url=SECRET_URL),
        str(data.storage),
        page,
        esc(f"a cell naming {SECRET_URL}"),
    ):
        assert "se/cr#e?t" not in text and "cr#e" not in text
    assert "user:***@127.0.0.1:1/db" in page


def test_commands_that_train_nothing_do_not_import_tensorflow() -> None:
    s = small_study()
    code = (
        "import io, sys, contextlib\n"
        "from study.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    codes = [main(['list', '--storage', {s.storage!r}]), main(['best', '--storage', {s.storage!r}]),\n"
        "             main(['run', '--trials', '0']), main(['run', '--space', 'no_such_space'])]\n"
        "print(codes, sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 0, 1, 1] []"


def test_report_to_an_unwritable_place_names_the_path(capsys: pytest.CaptureFixture) -> None:
    s = small_study()
    assert study_cli.main(["report", "--storage", s.storage, "--out", "/proc/no/report.html"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out /proc/no/report.html: cannot write the report there"), err
    assert "\n" not in err


def test_the_dashboard_says_it_stopped_on_ctrl_c(tmp_path: Path) -> None:
    import signal
    import socket
    import time

    s = small_study()
    with socket.socket() as sock:  # a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "study", "dashboard", "--storage", s.storage, "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # printed once the storage is open, just before the server starts
    assert "optuna-dashboard for" in first, first
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "dashboard stopped", out
