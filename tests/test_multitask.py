"""Multi-task towers: the rating head's loss against TFRS, ``rmse`` in validation, and studies that optimise it.

Real TF/TFRS/Optuna on small synthetic data whose ratings depend on the item (so a rating head can learn them).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import optuna
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
from e2e_util import write_space
from synthetic import make_table

from study.config import ModelConfig, RunSettings, TrainConfig, TrialConfig
from study.data import encode, split_table
from study.errors import ConfigError
from study.model import rating_loss
from study.names import TrialAttr
from study.runner import finish, prepare, run_study, run_trials
from study.train import Evaluator, Trainer, build_model, fold_batches, rmse


def rated_table(n_rows: int = 6000, seed: int = 0):
    """The synthetic table with each item's rating fixed by its id (1..5), plus a little noise."""
    table = make_table(n_rows=n_rows, seed=seed)
    rng = np.random.default_rng(seed)
    item_rating = 1.0 + table["item_id"].str[1:].astype(int).to_numpy() % 5
    table["rating"] = (item_rating + rng.normal(0.0, 0.3, len(table))).astype(np.float32)
    return table


@pytest.fixture(scope="module")
def data():
    return encode(split_table(rated_table(), "random", seed=42), dataset="rated")


def tiny_cfg(**model) -> TrialConfig:
    base = {"layers": (16,), "embedding_dim": 8, "rating_head": True, "rating_layers": (16,)}
    return TrialConfig(
        model=ModelConfig(**{**base, **model}),
        train=TrainConfig(batch_size=256, epochs=3, jit=False, learning_rate=0.1),
    )


def test_rating_loss_by_hand_and_against_tfrs_ranking() -> None:
    predictions = tf.constant([1.0, 2.0, 4.0])
    ratings = tf.constant([2.0, 4.0, 4.0])
    # ((2-1)^2 + (4-2)^2 + 0) / 3 = 5/3
    assert float(rating_loss(predictions, ratings)) == pytest.approx(5.0 / 3.0)
    task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError())
    # the TFRS tutorial's head outputs [batch, 1]; Ranking's loss is the same mean
    assert float(task(labels=ratings, predictions=predictions[:, None])) == pytest.approx(5.0 / 3.0)


def test_rmse_by_hand() -> None:
    assert rmse(np.array([1.0, 2.0, 4.0, 3.0]), np.array([2.0, 4.0, 4.0, 3.0])) == pytest.approx(np.sqrt(5.0 / 4.0))
    assert np.isnan(rmse(np.array([]), np.array([])))


@pytest.mark.parametrize(
    ("rating_weight", "retrieval_weight", "fast_options"),
    [
        (1.0, 1.0, {}),
        (1.0, 0.0, {}),
        (0.0, 1.0, {}),
        (2.5, 0.3, {"remove_accidental_hits": True, "sampling_bias_correction": True}),
    ],
)
def test_fast_losses_equal_the_tfrs_multitask_loss(data, rating_weight, retrieval_weight, fast_options) -> None:
    """``rating_weight * Ranking + retrieval_weight * Retrieval`` (TFRS's compute_loss) equals the fast trainer's
    plain and folded losses on the same batch, and their gradients agree."""
    cfg = tiny_cfg(rating_weight=rating_weight, retrieval_weight=retrieval_weight, **fast_options)
    model = build_model(cfg, data)
    rows = np.arange(128)
    batch = {
        "user": tf.constant(data.train.user[rows]),
        "time_bucket": tf.constant(data.train.time_bucket[rows]),
        "time_norm": tf.constant(data.train.time_norm[rows]),
        "item": tf.constant(data.train.item[rows]),
        "rating": tf.constant(data.train.rating[rows]),
    }
    unique, log_counts, positions, _ = fold_batches(np.asarray(data.train.item[rows]), 1, 128)
    losses, grads = [], []
    for compute in (
        lambda: model.compute_loss(batch, training=True),
        lambda: model.batch_loss(batch, training=True),
        lambda: model.folded_batch_loss(
            batch, tf.constant(unique[0]), tf.constant(log_counts[0]), tf.constant(positions[0])
        ),
    ):
        with tf.GradientTape() as tape:
            loss = compute()
        losses.append(float(loss))
        grads.append([tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert losses[2] == pytest.approx(losses[0], rel=1e-5)
    head = model.rating_model.trainable_variables
    assert any(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads[0][-len(head) :]) == (rating_weight > 0)
    for other in grads[1:]:
        for a, b in zip(grads[0], other, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-4, atol=1e-5)


def test_the_combined_loss_is_the_weighted_sum_of_its_parts(data) -> None:
    """Hand-combined: the loss at weights (a, b) = a * rating-only loss + b * retrieval-only loss (same weights)."""
    batch_rows = np.arange(64)
    batch = {k: tf.constant(getattr(data.train, k)[batch_rows]) for k in ("user", "time_bucket", "time_norm", "item")}
    batch["rating"] = tf.constant(data.train.rating[batch_rows])

    def loss_at(rating_weight: float, retrieval_weight: float) -> float:
        model = build_model(tiny_cfg(rating_weight=rating_weight, retrieval_weight=retrieval_weight), data)
        return float(model.batch_loss(batch, training=False))

    rating_only, retrieval_only = loss_at(1.0, 0.0), loss_at(0.0, 1.0)
    assert loss_at(3.0, 0.5) == pytest.approx(3.0 * rating_only + 0.5 * retrieval_only, rel=1e-5)


def test_validation_reports_rmse_of_the_heads_predictions(data) -> None:
    cfg = tiny_cfg(rating_weight=10.0)
    model = build_model(cfg, data)
    result = Trainer(model, data, cfg.train).fit()
    metrics = result.history[-1].metrics
    assert set(metrics) >= {"top100", "rmse"}
    # the same number from the towers and the head called directly
    valid = data.valid
    query = model.query_tower(
        {"user": valid.user, "time_bucket": valid.time_bucket, "time_norm": valid.time_norm}, training=False
    )
    candidate = model.candidate_tower(tf.constant(valid.item), training=False)
    predicted = model.rating_model(query, candidate).numpy()
    assert metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean((predicted - valid.rating) ** 2))), rel=1e-4)
    # it learned: better than predicting the training mean for everyone
    baseline = float(np.sqrt(np.mean((valid.rating - data.train.rating.mean()) ** 2)))
    assert metrics["rmse"] < 0.8 * baseline, (metrics["rmse"], baseline)
    assert Evaluator(build_model(tiny_cfg(rating_head=False), data)).evaluate(valid).get("rmse") is None


def test_best_epoch_by_rmse_is_the_lowest(data) -> None:
    cfg = tiny_cfg(rating_weight=10.0)
    cfg = cfg.replace(train={"epochs": 4, "metric": "rmse", "learning_rate": 0.3})
    result = Trainer(build_model(cfg, data), data, cfg.train).fit()
    curve = dict(result.curve("rmse"))
    assert result.best_epoch == min(curve, key=curve.get)
    assert result.best_value == pytest.approx(min(curve.values()))


def test_rmse_needs_a_rating_head(data) -> None:
    cfg = tiny_cfg(rating_head=False)
    with pytest.raises(ValueError, match="rating head"):
        Trainer(build_model(cfg, data), data, cfg.train).fit(metric="rmse")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"rating_weight": -1.0}, "model.rating_weight: must be >= 0"),
        ({"rating_head": True, "rating_weight": 0.0, "retrieval_weight": 0.0}, "at least one must be > 0"),
        ({"rating_head": False, "retrieval_weight": 0.0}, "trains nothing"),
        ({"rating_layers": (16, 0)}, "model.rating_layers"),
    ],
)
def test_bad_weights_and_widths(model, message) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**model)


MT_SPACE = """\
model:
  layers: [16]
  embedding_dim: 8
  rating_head: true
  rating_layers: [16]
  rating_weight: 10.0
train:
  optimizer: {type: categorical, choices: [adagrad, adam]}
  learning_rate: {type: float, low: 1.0e-7, high: 0.1, log: true}
  batch_size: 256
  epochs: 4
  eval_every: 1
  jit: false
"""


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mt") / "rated.csv"
    table = rated_table(n_rows=4000)
    table["genres"] = table["genres"].map("|".join)
    table[["user_id", "item_id", "title", "timestamp", "genres", "rating"]].to_csv(path, index=False)
    return path


def test_a_study_minimises_rmse_and_prunes_on_it(csv: Path, tmp_path: Path) -> None:
    """``--metric rmse``: the study minimises; each trial reports its RMSE curve; a trial whose learning rate is far
    too small is pruned on RMSE behind a good one (successive halving keeps only the best at the first rung)."""
    space = write_space(tmp_path / "mt.yaml", MT_SPACE)
    settings = RunSettings(
        space=str(space),
        dataset=f"csv:{csv}",
        storage=f"sqlite:///{tmp_path / 'mt.db'}",
        study_name="mt",
        pruner="successive-halving",
        metric="rmse",
        trials=2,
        quiet=True,
    )
    out = io.StringIO()
    run = prepare(settings, out)
    run.optuna_study.enqueue_trial({"optimizer": "adagrad", "learning_rate": 0.1})
    run.optuna_study.enqueue_trial({"optimizer": "adam", "learning_rate": 1.0e-7})
    run_trials(run, out)
    finish(run, out)
    optuna_study = optuna.load_study(study_name="mt", storage=settings.storage)
    assert optuna_study.direction == optuna.study.StudyDirection.MINIMIZE
    good, bad = optuna_study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert bad.state == optuna.trial.TrialState.PRUNED, out.getvalue()
    rmse_curve = dict(good.user_attrs[TrialAttr.CURVES]["rmse"])
    assert {int(k): v for k, v in good.intermediate_values.items()} == pytest.approx(rmse_curve, rel=1e-5)
    assert good.value == pytest.approx(min(rmse_curve.values()), rel=1e-5)
    assert good.user_attrs[TrialAttr.BEST_EPOCH] == min(rmse_curve, key=rmse_curve.get)
    assert len(good.user_attrs[TrialAttr.CURVES]["top100"]) == len(rmse_curve)
    assert bad.intermediate_values[1] > good.intermediate_values[1]
    # the best trial's test score carries rmse too
    assert "rmse" in optuna_study.user_attrs["test_metrics"]


def test_shipped_multitask_space_finds_a_top100_rmse_front() -> None:
    """``python -m study run --space multitask --objectives top100,rmse`` on the embedded data (2 one-epoch
    trials): a two-direction study whose values are each trial's validation top-100 and RMSE."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        settings = RunSettings(
            space="multitask",
            storage=f"sqlite:///{Path(tmp) / 'front.db'}",
            objectives=("top100", "rmse"),
            trials=2,
            max_epochs=1,
            seed=3,
            quiet=True,
        )
        summary = run_study(settings, io.StringIO())
        assert summary.complete == 2
        optuna_study = optuna.load_study(study_name=summary.study_name, storage=settings.storage)
        assert [d.name for d in optuna_study.directions] == ["MAXIMIZE", "MINIMIZE"]
        assert 1 <= len(optuna_study.best_trials) <= 2
        for trial in optuna_study.trials:
            valid = trial.user_attrs[TrialAttr.VALID_METRICS]
            assert trial.values == pytest.approx([valid["top100"], valid["rmse"]], abs=1e-6)  # stored to 6 decimals
            assert trial.user_attrs[TrialAttr.CONFIG]["model"]["rating_head"] is True
            assert 0.5 < valid["rmse"] < 3.0


def test_multitask_benchmark_runs_and_reports(csv: Path, capsys: pytest.CaptureFixture) -> None:
    """benchmarks/multitask.py in-process on the small rated CSV (1 epoch, 1 seed): the three models run and the last
    line's ratios are the quotients of its own figures."""
    import re

    from benchmarks.multitask import main

    assert main(["--epochs", "1", "--seeds", "1", "--batch-size", "256", "--dataset", f"csv:{csv}"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [m[1] for line in lines if (m := re.match(r"^seed 0 (\S+) +weights", line))] == [
        "rating-only",
        "retrieval-only",
        "joint",
    ]
    fields = dict(pair.split("=") for pair in lines[-1].removeprefix("multitask: ").split())
    values = {k: float(v) for k, v in fields.items()}
    assert lines[-1].startswith("multitask: ") and len(values) == 9, lines[-1]
    assert values["rating_vs_retrieval_top100"] == pytest.approx(
        values["rating_top100"] / values["retrieval_top100"], abs=2e-3
    )
    assert values["joint_vs_rating_rmse"] == pytest.approx(values["joint_rmse"] / values["rating_rmse"], abs=2e-3)
    # the retrieval-only model never trains its head: its RMSE is the worst of the three
    assert values["retrieval_rmse"] > max(values["rating_rmse"], values["joint_rmse"])
