"""The validation sample: each epoch (pruning, curves) is scored on a fixed sample of the validation rows, the best
epoch of a complete trial on every row."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import optuna
import pytest
from e2e_util import TINY_SPACE, write_space
from synthetic import make_table, small_data

from study.config import DEFAULT_VALIDATION_SAMPLE, RunSettings, TrainConfig, TrialConfig
from study.names import StudyAttr, TrialAttr
from study.runner import finish, prepare, run_trials
from study.train import Evaluator, Trainer, build_model


def test_sample_is_fixed_sorted_and_bounded() -> None:
    valid = small_data().valid
    n = len(valid)
    first, again = valid.sample(50, seed=0), valid.sample(50, seed=0)
    assert len(first) == 50
    assert np.array_equal(first.item, again.item) and np.array_equal(first.time_norm, again.time_norm)
    assert not np.array_equal(first.user, valid.sample(50, seed=1).user)
    rows = np.sort(np.random.default_rng(0).choice(n, 50, replace=False))
    assert np.array_equal(first.user, valid.user[rows]) and np.array_equal(first.rating, valid.rating[rows])
    assert valid.sample(0) is valid and valid.sample(n) is valid and valid.sample(n + 5) is valid


def test_best_epoch_from_the_sample_is_scored_on_every_row() -> None:
    """``fit(eval_split=sample, exact_split=valid)``: the best epoch is the sample's best; its weights (kept while
    training goes on) are scored on all rows; the model ends with the last epoch's weights."""
    data = small_data()
    sample = data.valid.sample(60)
    cfg = TrialConfig(train=TrainConfig(epochs=4, batch_size=256, learning_rate=0.2, jit=False))
    model = build_model(cfg, data)
    weights: dict[int, list[np.ndarray]] = {}

    def keep(epoch_result) -> bool:
        weights[epoch_result.epoch] = model.get_weights()
        return False

    result = Trainer(model, data, cfg.train).fit(eval_split=sample, callback=keep, exact_split=data.valid)
    sample_curve = dict(result.curve("top100"))
    assert result.best_epoch == max(sample_curve, key=sample_curve.get)
    assert result.sample_metrics is not None and result.sample_metrics["top100"] == sample_curve[result.best_epoch]
    last = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(last, weights[4], strict=True))
    model.set_weights(weights[result.best_epoch])
    assert result.best_metrics == Evaluator(model).evaluate(data.valid, cfg.train.ks)
    assert result.best_value == result.best_metrics["top100"]
    assert result.best_metrics != result.sample_metrics  # 60 of ~1200 rows: the two scores differ


def _settings(tmp_path: Path, **kw) -> RunSettings:
    csv = tmp_path / "data.csv"
    if not csv.exists():
        table = make_table(n_rows=4000)
        table["genres"] = table["genres"].map("|".join)
        table.to_csv(csv, index=False)
    return RunSettings(
        space=str(write_space(tmp_path / "tiny.yaml", TINY_SPACE)),
        dataset=f"csv:{csv}",
        storage=f"sqlite:///{tmp_path / 's.db'}",
        study_name="s",
        pruner="none",
        quiet=True,
        test_best=False,
        **kw,
    )


def test_a_study_prunes_on_the_sample_and_scores_complete_trials_on_every_row(tmp_path: Path) -> None:
    settings = _settings(tmp_path, trials=2, validation_sample=40)
    out = io.StringIO()
    run = prepare(settings, out)
    run_trials(run, out)
    finish(run, out)
    assert "each epoch is scored on the same 40 of the" in out.getvalue()
    optuna_study = optuna.load_study(study_name="s", storage=settings.storage)
    assert optuna_study.user_attrs[StudyAttr.VALIDATION_SAMPLE] == 40
    n_valid = len(run.data.valid)
    for trial in optuna_study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.user_attrs[TrialAttr.VALIDATION_SAMPLE] == {"rows": 40, "of": n_valid, "seed": 0}
        # intermediate values: the sample (multiples of 1/40); the value: every row, the best sampled epoch's weights
        assert all(round(v * 40, 6) == round(v * 40) for v in trial.intermediate_values.values())
        assert trial.value == trial.user_attrs[TrialAttr.VALID_METRICS]["top100"]
        assert trial.value != trial.intermediate_values[trial.user_attrs[TrialAttr.BEST_EPOCH]]

    # resumed with another size: the stored one stays, with a note
    out = io.StringIO()
    run = prepare(_settings(tmp_path, trials=3, validation_sample=0), out)
    assert run.settings.validation_sample == 40
    assert "created with --validation-sample 40; --validation-sample 0 is ignored" in out.getvalue()


@pytest.mark.parametrize(("given", "stored"), [(None, DEFAULT_VALIDATION_SAMPLE), (0, 0)])
def test_the_default_and_zero_are_stored(tmp_path: Path, given: int | None, stored: int) -> None:
    run = prepare(_settings(tmp_path, trials=1, validation_sample=given), io.StringIO())
    assert run.optuna_study.user_attrs[StudyAttr.VALIDATION_SAMPLE] == stored
    assert run.settings.validation_sample == stored


def test_a_study_made_before_the_sample_keeps_every_row(tmp_path: Path) -> None:
    """A stored study without the attribute (made by an earlier version) goes on scoring every row."""
    run = prepare(_settings(tmp_path, trials=1), io.StringIO())
    storage = run.optuna_study._storage
    storage.set_study_user_attr(run.optuna_study._study_id, StudyAttr.VALIDATION_SAMPLE, None)
    out = io.StringIO()
    again = prepare(_settings(tmp_path, trials=1), out)
    assert again.settings.validation_sample == 0
    assert "each epoch is scored" not in out.getvalue()
