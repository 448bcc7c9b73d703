"""``export`` → standalone SavedModels → ``recommend``, on a real small study (test_report.small_study)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_report import _cli, small_study

from study.cli import main
from study.errors import ConfigError
from study.export import encode_time, export_model, time_constants
from study.results import resolve_trial


def test_time_constants_reproduce_the_encoding_of_raw_timestamps() -> None:
    from study import data as data_mod

    s = small_study()
    study = s.load()
    data = data_mod.load(study.user_attrs["dataset"], study.user_attrs["protocol"])
    splits = data_mod.split_table(data_mod.load_table(study.user_attrs["dataset"]), data.protocol, seed=42)
    constants = time_constants(data)
    for frame, part in ((splits.train, data.train), (splits.test, data.test)):
        bucket, norm = encode_time(frame["timestamp"].to_numpy(), constants)
        np.testing.assert_array_equal(bucket, part.time_bucket)
        np.testing.assert_array_equal(norm, part.time_norm)


def test_export_and_evaluate_refuse_a_study_whose_data_changed(tmp_path: Path) -> None:
    """``export``/``evaluate`` re-split the recorded dataset: a missing record or another data hash is refused."""
    import optuna
    from e2e_util import write_dataset

    from study.evaluate import evaluate_study
    from study.results import load_study_data

    csv = write_dataset(tmp_path / "data.csv", n_rows=2000)
    optuna_study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = optuna_study.ask()
    trial.set_user_attr("config", {"model": {}, "train": {}})
    optuna_study.tell(trial, 0.5)
    for call in (lambda: export_model(optuna_study, "best", tmp_path / "m"), lambda: load_study_data(optuna_study)):
        with pytest.raises(ConfigError, match="does not record its dataset"):
            call()
    optuna_study.set_user_attr("dataset", f"csv:{csv}")
    optuna_study.set_user_attr("protocol", "random")
    assert load_study_data(optuna_study).data_hash  # no hash recorded: nothing to compare
    recorded = load_study_data(optuna_study).data_hash
    optuna_study.set_user_attr("data_hash", recorded)
    assert load_study_data(optuna_study).data_hash == recorded
    write_dataset(csv, n_rows=2000, seed=1)  # the file is edited after the study ran
    with pytest.raises(ConfigError, match=f"changed since study 's' ran .* recorded {recorded}"):
        load_study_data(optuna_study)
    with pytest.raises(ConfigError, match="changed since study 's' ran"):
        evaluate_study(optuna_study, top=1, seeds=2)


def test_resolve_trial_rejects_bad_choices() -> None:
    study = small_study().load()
    assert resolve_trial(study, "best").number == study.best_trial.number
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    for bad, message in (("abc", "expected 'best'"), ("999", "has trials"), (str(failed.number), "FAIL")):
        with pytest.raises(ConfigError, match=message):
            resolve_trial(study, bad)


@pytest.mark.slow
def test_export_then_recommend_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import tensorflow as tf

    from study.train import Evaluator

    s = small_study()
    study = s.load()
    best = study.best_trial
    out_dir = tmp_path / "models" / "small"
    result = export_model(study, "best", out_dir, storage_url=s.storage, out=io.StringIO())
    card = json.loads((out_dir / "card.json").read_text())
    data = result.data
    assert card["trial"] == best.number and card["params"] == best.params
    assert card["epochs"] == best.user_attrs["best_epoch"] == card["config"]["train"]["epochs"]
    assert card["data"]["data_hash"] == study.user_attrs["data_hash"]
    assert card["trained_on"] == "train + valid" and card["train_rows"] == len(data.train) + len(data.valid)
    assert 0.0 < card["metrics"]["test"]["top100"] <= 1.0
    assert card["metrics"]["valid_search"] == best.user_attrs["valid_metrics"]
    assert card["versions"]["tensorflow"] == tf.__version__
    assert (out_dir / "index" / "saved_model.pb").exists() and (out_dir / "query_model" / "saved_model.pb").exists()

    # The exported index returns the in-process model's top k (same ids, same order).
    k = 10
    users = list(data.user_vocab[1:7])
    const = card["time"]
    stamps = np.array(
        [const["max"], const["min"], (const["min"] + const["max"]) // 2, const["max"] + 10**6, 0, const["max"]]
    )
    bucket, norm = encode_time(stamps, const)
    model = result.model
    query = model.query_tower(
        {
            "user": tf.constant(np.arange(1, 7, dtype=np.int32)),
            "time_bucket": tf.constant(bucket),
            "time_norm": tf.constant(norm),
        }
    ).numpy()
    scores = query @ Evaluator(model).candidate_embeddings().numpy().T
    expected = [[data.item_vocab[1 + j] for j in np.argsort(-row, kind="stable")[:k]] for row in scores]
    loaded = tf.saved_model.load(str(out_dir / "index"))
    got = loaded(user_id=tf.constant(users), timestamp=tf.constant(stamps, tf.int64), k=tf.constant(k))
    assert [[v.decode() for v in row] for row in got["item_ids"].numpy()] == expected
    assert got["known_user"].numpy().all()
    titles = {item: title for item, title in zip(data.item_vocab, data.titles, strict=True)}
    assert [v.decode() for v in got["titles"].numpy()[0]] == [titles[i] for i in expected[0]]

    # `recommend` prints the same titles from the saved artifacts alone (default time: the data's latest).
    run = _cli("recommend", "--model", str(out_dir), "--user", users[0], "--k", "5", "-q")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == [titles[i] for i in expected[0][:5]]
    # The same command in-process (a second TensorFlow import would cost more than the check).
    capsys.readouterr()
    assert main(["recommend", "--model", str(out_dir), "--user", "no-such-user"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown user" in errors[0]

    # Loads with TensorFlow alone: no study, TFRS or Keras package.
    code = (
        "import sys\n"
        "for name in ('study', 'tensorflow_recommenders', 'tf_keras'):\n"
        "    sys.modules[name] = None\n"
        "import tensorflow as tf\n"
        f"m = tf.saved_model.load({str(out_dir / 'index')!r})\n"
        f"r = m(user_id=tf.constant([{users[0]!r}]), timestamp=tf.constant([{int(stamps[0])}], tf.int64), k=tf.constant(3))\n"
        "print(' '.join(v.decode() for v in r['item_ids'].numpy()[0]))\n"
        f"q = tf.saved_model.load({str(out_dir / 'query_model')!r})\n"
        f"print(q({{'user_id': tf.constant([{users[0]!r}]), 'timestamp': tf.constant([{int(stamps[0])}], tf.int64)}}).shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    bare = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=180)
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert bare.stdout.split("\n")[0].split() == expected[0][:3]
    assert bare.stdout.split("\n")[1] == f"(1, {query.shape[1]})"

    # An incomplete copy (the index's variables lost): one line naming the missing path, no TensorFlow error.
    broken = tmp_path / "broken"
    shutil.copytree(out_dir, broken)
    shutil.rmtree(broken / "index" / "variables")
    incomplete = _cli("recommend", "--model", str(broken), "--user", users[0])
    assert incomplete.returncode == 1
    assert incomplete.stderr.strip().splitlines() == [
        f"error: --model {broken}: {broken / 'index' / 'variables'} is missing (an incomplete copy?); export the "
        "model again with `python -m study export`"
    ]
