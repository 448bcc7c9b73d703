"""``export`` of a multi-task trial (a rating head) and ``recommend --rerank``, on a tiny real study.

One study of two trials (rating head on, rating head off), each exported once and shared by every test here.
Real TF/TFRS/Optuna; ratings depend on the item so the head has something to learn.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from e2e_util import write_space
from synthetic import make_table

from study.cli import main
from study.errors import ConfigError
from study.export import ExportResult, encode_time, export_model, recommend

pytestmark = pytest.mark.slow

MT_SPACE = """\
model:
  layers: [8]
  embedding_dim: 8
  rating_head: {type: categorical, choices: [true, false]}
  rating_layers: [8]
  rating_weight: 10.0
train:
  learning_rate: 0.1
  batch_size: 512
  epochs: 2
  eval_every: 1
  jit: false
"""


@dataclasses.dataclass(frozen=True)
class Exports:
    head: ExportResult  # the trial with a rating head
    plain: ExportResult  # the trial without


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    from study.config import RunSettings
    from study.runner import prepare, run_trials

    folder = tmp_path_factory.mktemp("export-mt")
    table = make_table(n_users=60, n_items=120, n_rows=3000)
    rng = np.random.default_rng(0)
    item_rating = 1.0 + table["item_id"].str[1:].astype(int).to_numpy() % 5
    table["rating"] = (item_rating + rng.normal(0.0, 0.3, len(table))).astype(np.float32)
    table["genres"] = table["genres"].map("|".join)
    csv = folder / "rated.csv"
    table[["user_id", "item_id", "title", "timestamp", "genres", "rating"]].to_csv(csv, index=False)
    settings = RunSettings(
        space=str(write_space(folder / "mt.yaml", MT_SPACE)),
        dataset=f"csv:{csv}",
        storage=f"sqlite:///{folder / 'mt.db'}",
        study_name="mt",
        pruner="none",
        trials=2,
        seed=0,
        test_best=False,
        quiet=True,
    )
    run = prepare(settings, io.StringIO())
    run.optuna_study.enqueue_trial({"rating_head": True})
    run.optuna_study.enqueue_trial({"rating_head": False})
    run_trials(run, io.StringIO())
    head_trial, plain_trial = run.optuna_study.trials
    assert head_trial.params == {"rating_head": True} and plain_trial.params == {"rating_head": False}
    return Exports(
        head=export_model(run.optuna_study, head_trial.number, folder / "models" / "head", out=io.StringIO()),
        plain=export_model(run.optuna_study, plain_trial.number, folder / "models" / "plain", out=io.StringIO()),
    )


def _queries(result: ExportResult, n: int) -> tuple[list[str], np.ndarray, Any]:
    """``n`` users, timestamps spread over the data (one past it), and their in-process query embeddings."""
    data, const = result.data, result.card["time"]
    users = list(data.user_vocab[1 : n + 1])
    stamps = np.linspace(const["min"], const["max"] + 10**6, n).astype(np.int64)
    bucket, norm = encode_time(stamps, const)
    query = result.model.query_tower(
        {
            "user": tf.constant(np.arange(1, n + 1, dtype=np.int32)),
            "time_bucket": tf.constant(bucket),
            "time_norm": tf.constant(norm),
        },
        training=False,
    )
    return users, stamps, query


def test_a_multitask_export_saves_the_head_and_its_ratings_match_in_process(exports: Exports) -> None:
    result = exports.head
    card = json.loads((result.path / "card.json").read_text())
    assert card["rating_head"] is True and card["config"]["model"]["rating_head"] is True
    assert 0.0 < card["metrics"]["test"]["rmse"] < 10.0
    assert json.loads((exports.plain.path / "card.json").read_text())["rating_head"] is False

    k = 7
    users, stamps, query = _queries(result, 6)
    loaded = tf.saved_model.load(str(result.path / "index"))
    got = loaded(user_id=tf.constant(users), timestamp=tf.constant(stamps, tf.int64), k=tf.constant(k))
    assert got["ratings"].dtype == tf.float32 and got["ratings"].shape == (6, k)
    data, model = result.data, result.model
    # Retrieval is the in-process top k, as for a model without a head.
    from study.train import Evaluator

    scores = query.numpy() @ Evaluator(model).candidate_embeddings().numpy().T
    expected_ids = [[data.item_vocab[1 + j] for j in np.argsort(-row, kind="stable")[:k]] for row in scores]
    assert [[v.decode() for v in row] for row in got["item_ids"].numpy()] == expected_ids
    # Each retrieved item's rating is the in-process head on (the user's query, the item's candidate embedding).
    row_of = {item: row for row, item in enumerate(data.item_vocab)}
    rows = np.array([[row_of[i] for i in line] for line in expected_ids], np.int32).reshape(-1)
    candidate = model.candidate_tower(tf.constant(rows), training=False)
    expected = model.rating_model(tf.repeat(query, k, axis=0), candidate).numpy().reshape(6, k)
    np.testing.assert_allclose(got["ratings"].numpy(), expected, rtol=1e-4, atol=1e-5)
    assert np.ptp(expected) > 0.1  # the head predicts different ratings for different items

    plain = tf.saved_model.load(str(exports.plain.path / "index"))
    out = plain(user_id=tf.constant(users[:1]), timestamp=tf.constant(stamps[:1], tf.int64), k=tf.constant(3))
    assert "ratings" not in out and set(out) == {"scores", "item_ids", "titles", "known_user"}

    # The ratings come from the SavedModel with TensorFlow alone (no study, TFRS or Keras package).
    code = (
        "import sys\n"
        "for name in ('study', 'tensorflow_recommenders', 'tf_keras'):\n"
        "    sys.modules[name] = None\n"
        "import tensorflow as tf\n"
        f"m = tf.saved_model.load({str(result.path / 'index')!r})\n"
        f"r = m(user_id=tf.constant({users[:2]!r}), timestamp=tf.constant({stamps[:2].tolist()!r}, tf.int64),"
        f" k=tf.constant({k}))\n"
        "import json; print(json.dumps(r['ratings'].numpy().tolist()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    bare = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=180)
    assert bare.returncode == 0, bare.stderr[-2000:]
    np.testing.assert_allclose(
        np.array(json.loads(bare.stdout.strip().splitlines()[-1])), expected[:2], rtol=1e-4, atol=1e-5
    )


def test_recommend_rerank_orders_the_same_top_k_by_predicted_rating(
    exports: Exports, capsys: pytest.CaptureFixture[str]
) -> None:
    path, user = exports.head.path, exports.head.data.user_vocab[3]
    plain = recommend(path, user, k=8)
    reranked = recommend(path, user, k=8, rerank=True)
    assert plain["known_user"] and reranked["known_user"]
    assert len(plain["items"]) == len(plain["ratings"]) == 8 and all(len(item) == 3 for item in plain["items"])
    # The same k items, each with its retrieval score and rank, ordered by non-increasing predicted rating.
    by_id = {
        item[0]: (rank, item, rating)
        for rank, (item, rating) in enumerate(zip(plain["items"], plain["ratings"], strict=True))
    }
    assert sorted(item[0] for item in reranked["items"]) == sorted(by_id)
    for item_id, title, score, rating, score_rank in reranked["items"]:
        rank, (_, plain_title, plain_score), plain_rating = by_id[item_id]
        assert (title, score, rating, score_rank) == (plain_title, plain_score, plain_rating, rank + 1)
    ratings = [item[3] for item in reranked["items"]]
    assert ratings == sorted(ratings, reverse=True)
    assert [item[0] for item in reranked["items"]] != [item[0] for item in plain["items"]]  # it does re-order

    # The CLI prints the re-ranked list with a header that says which order it is, and both numbers per item.
    assert main(["recommend", "--model", str(path), "--user", user, "--k", "8", "--rerank"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"top 8 by retrieval score for user {user} at time ")
    assert lines[0].endswith("re-ranked by predicted rating (highest first):")
    assert lines[1].split() == ["#", "rating", "score", "score", "rank", "title", "[item]"]
    assert len(lines) == 10
    for line, (item_id, title, score, rating, score_rank) in zip(lines[2:], reranked["items"], strict=True):
        assert line.split()[1:4] == [f"{rating:.3f}", f"{score:.3f}", str(score_rank)]
        assert line.endswith(f"{title}  [{item_id}]")
    # Plain recommend prints as before: retrieval order, score only.
    assert main(["recommend", "--model", str(path), "--user", user, "--k", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"top 8 for user {user} at time ")
    assert lines[1:] == [f"{r:>3}. {t}  [{i}]  {s:.3f}" for r, (i, t, s) in enumerate(plain["items"], start=1)]
    assert main(["recommend", "--model", str(path), "--user", user, "--k", "3", "--rerank", "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        item[1] for item in recommend(path, user, k=3, rerank=True)["items"]
    ]


def test_rerank_without_a_rating_head_is_a_one_line_error(exports: Exports, capsys: pytest.CaptureFixture[str]) -> None:
    path = exports.plain.path
    user = exports.plain.data.user_vocab[1]
    assert main(["recommend", "--model", str(path), "--user", user, "--rerank"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: --rerank: the model in {path} was exported without a rating head, so it predicts no ratings; "
        "export a trial trained with `model.rating_head: true` (e.g. from a study run with `--space multitask`) and "
        "recommend from that folder"
    ]
    with pytest.raises(ConfigError, match="exported without a rating head"):
        recommend(path, user, rerank=True)
    assert len(recommend(path, user, k=4)["items"]) == 4 and recommend(path, user, k=4)["ratings"] is None
