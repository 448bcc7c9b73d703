"""Bad inputs to the CLI: a one-line ``error:`` message naming the file/field/value, exit code 1 (2 for argparse usage
errors), no traceback unless ``--debug``, and nothing written.

Most cases call ``study.cli.main`` in-process (they fail before any training, but a subprocess would pay the
TensorFlow import each time); a few go through ``python -m study`` in a subprocess to check the real entry point.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_util import TINY_SPACE, cli, last_line, write_dataset, write_space

from study import cli as study_cli

GOOD = TINY_SPACE
SPACES = {
    "malformed_yaml": "model: {depth: [1, 2\n",
    "unknown_key": GOOD.replace("  embedding_dim:", "  embeding_dim:"),
    "low_ge_high": GOOD.replace("low: 0.05, high: 0.5", "low: 0.5, high: 0.5"),
    "log_low_le_0": GOOD.replace("low: 0.05, high: 0.5", "low: 0.0, high: 0.5"),
    "empty_choices": GOOD.replace("choices: [256, 512]", "choices: []"),
    "unknown_activation": GOOD.replace(
        "model:\n", "model:\n  activation: {type: categorical, choices: [relu, swish2]}\n"
    ),
    "unknown_optimizer": GOOD.replace("train:\n", "train:\n  optimizer: adamm\n"),
    # 190 bytes of nested YAML anchors that expand to 9**5 strings: the error must not quote it whole
    "negative_rating_weight": GOOD.replace("model:\n", "model:\n  rating_head: true\n  rating_weight: -1.0\n"),
    "anchor_bomb": "run:\n  protocol: [&a [x, x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a], "
    "&c [*b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c], "
    "[*d, *d, *d, *d, *d, *d, *d, *d, *d]]\n",
}

# id → (argv after `python -m study`, expected exit code, substrings of the error line).
# In argv: SPACE = this case's space file (SPACES[id], or the good space), DATA = the good CSV.
RUN = ["run", "--trials", "2", "--no-test"]
CASES: dict[str, tuple[list[str], int, list[str]]] = {
    "malformed_yaml": (RUN + ["--space", "SPACE"], 1, ["malformed_yaml.yaml", "line 2", "invalid YAML syntax"]),
    "unknown_key": (RUN + ["--space", "SPACE"], 1, ["unknown_key.yaml", "model.embeding_dim", "unknown key"]),
    "low_ge_high": (
        RUN + ["--space", "SPACE"],
        1,
        ["low_ge_high.yaml", "train.learning_rate.high", "low=0.5, high=0.5"],
    ),
    "log_low_le_0": (RUN + ["--space", "SPACE"], 1, ["log_low_le_0.yaml", "train.learning_rate.low", "low=0.0"]),
    "empty_choices": (RUN + ["--space", "SPACE"], 1, ["empty_choices.yaml", "train.batch_size.choices", "empty"]),
    "unknown_activation": (
        RUN + ["--space", "SPACE"],
        1,
        ["unknown_activation.yaml", "model.activation.choices[1]", "unknown activation", "'swish2'"],
    ),
    "unknown_optimizer": (
        RUN + ["--space", "SPACE"],
        1,
        ["unknown_optimizer.yaml", "train.optimizer", "unknown optimizer", "'adamm'", "did you mean 'adam'"],
    ),
    "missing_space_name": (RUN + ["--space", "no_such_space"], 1, ["no_such_space", "no search space", "quick"]),
    "unknown_dataset_spec": (RUN + ["--space", "SPACE", "--dataset", "foo:bar"], 1, ["'foo:bar'", "csv:PATH"]),
    "missing_data_file": (RUN + ["--space", "SPACE", "--dataset", "csv:nope.csv"], 1, ["nope.csv", "file not found"]),
    "csv_missing_column": (
        RUN + ["--space", "SPACE", "--dataset", "csv:NO_TS"],
        1,
        ["no_timestamp.csv", "missing column 'timestamp'", "user_id,item_id,title,genres,rating"],
    ),
    "one_row_csv": (
        RUN + ["--space", "SPACE", "--dataset", "csv:ONE_ROW"],
        1,
        ["one_row.csv", "leaves 1 training row", "0 validation rows and 0 test rows", "at least 10 training rows"],
    ),
    "unknown_sampler": (
        RUN + ["--space", "SPACE", "--dataset", "csv:DATA", "--sampler", "tpee"],
        1,
        ["sampler 'tpee'"],
    ),
    "unknown_pruner": (
        RUN + ["--space", "SPACE", "--dataset", "csv:DATA", "--pruner", "medain"],
        1,
        ["pruner 'medain'"],
    ),
    "bad_timeout": (RUN + ["--space", "SPACE", "--timeout", "soon"], 1, ["--timeout", "'soon'"]),
    "zero_timeout": (RUN + ["--space", "SPACE", "--timeout", "0m"], 1, ["--timeout", "> 0", "'0m'"]),
    "trials_0": (["run", "--trials", "0", "--space", "SPACE"], 1, ["--trials", "must be >= 1", "got 0"]),
    "max_epochs_0": (RUN + ["--space", "SPACE", "--max-epochs", "0"], 1, ["--max-epochs", "got 0"]),
    # (--timeout: were the value accepted, the run would stop after its first trial instead of looping on failures)
    "eval_every_0": (RUN + ["--space", "SPACE", "--eval-every", "0", "--timeout", "1s"], 1, ["--eval-every", "got 0"]),
    "negative_patience": (
        RUN + ["--space", "SPACE", "--patience", "-1", "--timeout", "1s"],
        1,
        ["--patience", "got -1"],
    ),
    "negative_validation_sample": (
        RUN + ["--space", "SPACE", "--validation-sample", "-1"],
        1,
        ["--validation-sample", "got -1"],
    ),
    "negative_seed": (RUN + ["--space", "SPACE", "--seed", "-1"], 1, ["--seed", "got -1"]),
    "negative_recycle_after": (
        RUN + ["--space", "SPACE", "--recycle-after", "-2"],
        1,
        ["--recycle-after", ">= 0", "got -2"],
    ),
    "jobs_0_with_recycle_after": (
        RUN + ["--space", "SPACE", "--jobs", "0", "--recycle-after", "3"],
        1,
        ["--jobs", "got 0"],
    ),
    "unknown_metric": (RUN + ["--space", "SPACE", "--metric", "hits10"], 1, ["--metric", "'hits10'"]),
    "unknown_objective": (
        RUN + ["--space", "SPACE", "--objectives", "top100,speed"],
        1,
        ["--objectives", "'speed'", "embedding_bytes", "seconds_per_epoch"],  # the cost objectives are listed too
    ),
    "metric_top0": (RUN + ["--space", "SPACE", "--metric", "top0"], 1, ["--metric", "cut-off k must be >= 1", "got 0"]),
    "metric_k_beyond_items": (
        RUN + ["--space", "SPACE", "--metric", "top99999999"],
        1,
        ["--metric top99999999", "cut-off 99999999 is not below the", "items"],
    ),
    "objective_twice": (
        RUN + ["--space", "SPACE", "--objectives", "top100,top100"],
        1,
        ["--objectives", "top100 is given twice"],
    ),
    "negative_embedding_budget": (
        RUN + ["--space", "SPACE", "--max-embedding-mb", "-5"],
        1,
        ["--max-embedding-mb", "must be > 0", "got -5.0"],
    ),
    "absurd_jobs": (RUN + ["--space", "SPACE", "--jobs", "100000"], 1, ["--jobs", "100000 processes", "cores"]),
    "memory_storage": (
        RUN + ["--space", "SPACE", "--storage", "sqlite:///:memory:"],
        1,
        ["sqlite:///:memory:", "in-memory SQLite storage cannot be shared", "sqlite:///study.db"],
    ),
    "two_slash_sqlite": (
        RUN + ["--space", "SPACE", "--storage", "sqlite://s.db"],
        1,
        ["--storage sqlite://s.db", "write sqlite:///s.db"],
    ),
    "password_with_slash": (
        RUN + ["--space", "SPACE", "--storage", "postgresql://user:sec/ret@127.0.0.1:1/db"],
        1,
        ["postgresql://user:***@127.0.0.1:1/db", "cannot open storage"],
    ),
    "anchor_bomb": (RUN + ["--space", "SPACE"], 1, ["anchor_bomb.yaml", "run.protocol", "must be a fixed scalar", "…"]),
    "unknown_storage_scheme": (
        RUN + ["--space", "SPACE", "--dataset", "csv:DATA", "--storage", "redis://localhost/0"],
        1,
        ["--storage redis://localhost/0", "scheme 'redis'"],
    ),
    "storage_missing_folder": (
        RUN + ["--space", "SPACE", "--dataset", "csv:DATA", "--storage", "sqlite:///nofolder/s.db"],
        1,
        ["sqlite:///nofolder/s.db", "folder nofolder does not exist"],
    ),
    "best_missing_db": (["best", "--storage", "sqlite:///missing.db"], 1, ["sqlite:///missing.db", "no such file"]),
    "list_missing_db": (["list", "--storage", "sqlite:///missing.db"], 1, ["sqlite:///missing.db", "no such file"]),
    "rating_head_without_ratings": (
        RUN + ["--space", "multitask", "--dataset", "csv:CLICKS"],
        1,
        ["multitask.yaml", "model.rating_head", "clicks.csv has no rating column", "add a 'rating' column"],
    ),
    "train_rating_head_without_ratings": (
        ["train", "--config", "MT_CONFIG", "--dataset", "csv:CLICKS", "--epochs", "1"],
        1,
        ["rating_head.yaml", "clicks.csv has no rating column", "add a 'rating' column"],
    ),
    "rmse_without_rating_head": (
        RUN + ["--space", "SPACE", "--metric", "rmse"],
        1,
        ["--metric rmse", "scores the rating head", "does not fix model.rating_head: true", "--space multitask"],
    ),
    "rmse_objective_without_rating_head": (
        RUN + ["--space", "SPACE", "--objectives", "top100,rmse"],
        1,
        ["--objectives rmse", "does not fix model.rating_head: true"],
    ),
    "negative_rating_weight": (
        RUN + ["--space", "SPACE"],
        1,
        ["negative_rating_weight.yaml", "model.rating_weight", "must be >= 0", "-1.0"],
    ),
    "trials_not_an_int": (["run", "--trials", "many"], 2, ["error: argument --trials", "invalid int value: 'many'"]),
    "unknown_command": (["fly"], 2, ["error: argument COMMAND", "invalid choice: 'fly'"]),
}
SUBPROCESS_CASES = ["malformed_yaml", "missing_data_file", "best_missing_db", "trials_not_an_int"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad_inputs")
    data = write_dataset(d / "data.csv", n_rows=2000)
    no_ts = d / "no_timestamp.csv"
    no_ts.write_text(
        "\n".join(
            ",".join(f for i, f in enumerate(line.split(",")) if i != 3)  # drop the timestamp column
            for line in data.read_text().splitlines()[:50]
        )
        + "\n"
    )
    assert no_ts.read_text().startswith("user_id,item_id,title,genres,rating\n")
    one_row = d / "one_row.csv"
    one_row.write_text("\n".join(data.read_text().splitlines()[:2]) + "\n")
    clicks = d / "clicks.csv"  # interactions without a rating column
    clicks.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in data.read_text().splitlines()))
    assert clicks.read_text().startswith("user_id,item_id,title,timestamp,genres\n")
    mt_config = write_space(d / "rating_head.yaml", "model:\n  rating_head: true\n")
    out = {
        "DATA": data,
        "NO_TS": no_ts,
        "ONE_ROW": one_row,
        "CLICKS": clicks,
        "MT_CONFIG": mt_config,
        "good": write_space(d / "good.yaml", GOOD),
    }
    for name, text in SPACES.items():
        out[name] = write_space(d / f"{name}.yaml", text)
    return out


def argv_for(case: str, files: dict[str, Path]) -> list[str]:
    args, _, _ = CASES[case]
    space = files[case] if case in SPACES else files["good"]
    out = []
    for a in args:
        a = a.replace("SPACE", str(space))
        for key in ("DATA", "NO_TS", "ONE_ROW", "CLICKS"):
            a = a.replace(f"csv:{key}", f"csv:{files[key]}")
        a = a.replace("MT_CONFIG", str(files["MT_CONFIG"]))
        out.append(a)
    if args[0] == "run" and "--dataset" not in args:
        out += ["--dataset", f"csv:{files['DATA']}"]
    return out


def check_error(case: str, rc: int, out: str, err: str, cwd: Path) -> None:
    _, expected_rc, needles = CASES[case]
    assert rc == expected_rc, (rc, out, err)
    assert "Traceback" not in out + err, err
    line = last_line(err)
    if expected_rc == 2:  # argparse: usage, then "prog: error: ..." as the last line
        assert line.startswith("python -m study") and ": error: " in line, err
    else:
        assert err.strip() == line, f"more than one line on stderr:\n{err}"
        assert line.startswith("error: "), err
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert len(line) <= 1100, f"an error line of {len(line)} characters"
    assert "sec/ret" not in out + err, "a password was printed"
    assert "--debug" not in line, "reported as an unexpected failure, not as a bad input"
    assert sorted(p.name for p in cwd.iterdir()) == [], "a failed command wrote files"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_in_process(
    case: str, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        rc = study_cli.main(argv_for(case, files))
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    check_error(case, rc, out, err, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_subprocess(case: str, files: dict[str, Path], tmp_path: Path) -> None:
    proc = cli(argv_for(case, files), cwd=tmp_path, timeout=120)
    check_error(case, proc.returncode, proc.stdout, proc.stderr, tmp_path)


@pytest.mark.slow
def test_debug_shows_traceback(files: dict[str, Path], tmp_path: Path) -> None:
    proc = cli(argv_for("unknown_pruner", files) + ["--debug"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert last_line(proc.stderr).startswith("study.errors.ConfigError: --pruner medain: unknown pruner 'medain'"), (
        proc.stderr
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []
