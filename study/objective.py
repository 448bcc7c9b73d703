"""A trial: sample → config → train → report to Optuna each evaluation → value and user attrs."""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from study.config import VALIDATION_SAMPLE_SEED, RunSettings, TrialConfig
from study.data import EncodedData, Interactions
from study.errors import ConfigError, NonFiniteLossError, StudyError
from study.names import RATING_METRICS, TrialAttr, metric_direction
from study.search_space import SearchSpace, suggest

# Objectives a (multi-objective) study can optimise besides the validation metrics, and their directions.
COST_OBJECTIVES: dict[str, str] = {
    "embedding_bytes": "minimize",
    "embedding_params": "minimize",
    "id_embedding_bytes": "minimize",
    "id_embedding_params": "minimize",
    "total_params": "minimize",
    "seconds_per_epoch": "minimize",
}


def objective_direction(name: str) -> str:
    """``maximize`` for a top-k validation metric (``top100``, ``ndcg10``, …), ``minimize`` for ``rmse`` and costs."""
    if name in COST_OBJECTIVES:
        return COST_OBJECTIVES[name]
    try:
        return metric_direction(name)
    except ValueError as exc:
        if "cut-off" in str(exc):
            raise
        raise ValueError(
            f"unknown objective {name!r}; valid objectives are a validation metric such as top100, recall50, "
            f"ndcg10 or rmse (with a rating head), or a cost: {', '.join(COST_OBJECTIVES)}"
        ) from None


def check_rating_head(space: SearchSpace, data: EncodedData, settings: RunSettings) -> None:
    """Refuse a run whose rating head cannot work, before anything is stored.

    Raises:
        ConfigError: the space may sample ``model.rating_head: true`` but the data has no ratings, or ``rmse`` is
            the metric or an objective while the space does not fix ``rating_head: true``.
    """
    entry = space.entry("rating_head")
    if entry is None:
        may, always = False, False
    elif entry.distribution is None:
        may, always = bool(entry.value), bool(entry.value) and not entry.when
    else:
        choices = getattr(entry.distribution, "choices", ())
        may, always = True in choices, False
    if may and not data.has_ratings:
        raise ConfigError(
            f"{space.path}: model.rating_head: the rating head trains on ratings, but {data.dataset} has no rating "
            "column; add a 'rating' column to the data, or set rating_head: false"
        )
    flag = "--objectives" if settings.objectives else "--metric"
    for name in settings.objectives or (settings.metric,):
        if name in RATING_METRICS and not always:
            raise ConfigError(
                f"{flag} {name}: scores the rating head, but {space.path} does not fix model.rating_head: true; "
                "use --space multitask or a space with rating_head: true"
            )


class TrialTimeoutError(StudyError):
    """A trial trained for longer than ``--trial-timeout`` (checked after every epoch); the trial is marked FAIL."""

    def __init__(self, epoch: int, seconds: float, limit: float) -> None:
        super().__init__(f"exceeded --trial-timeout {limit:g}s: stopped after epoch {epoch} at {seconds:.1f}s")
        self.epoch = epoch


def worker_id() -> str:
    """``host:pid`` of this process, stored on each trial so a dead local worker's trial can be detected."""
    return f"{socket.gethostname()}:{os.getpid()}"


def apply_overrides(cfg: TrialConfig, settings: RunSettings) -> TrialConfig:
    """Run-level settings that override what the space fixed or sampled (max epochs, eval cadence, metric, seed)."""
    train: dict[str, Any] = {"metric": settings.metric}
    if settings.max_epochs is not None:
        train["epochs"] = settings.max_epochs
    if settings.eval_every is not None:
        train["eval_every"] = settings.eval_every
    if settings.patience is not None:
        train["patience"] = settings.patience
    if settings.seed is not None:
        train["seed"] = settings.seed
    return cfg.replace(train=train)


@dataclass
class Objective:
    """Callable Optuna objective over one search space and one encoded dataset.

    Single-objective studies report ``settings.metric`` every evaluation and may be pruned; the trial's value is the
    best evaluated value. Multi-objective studies return one value per name in ``settings.objectives``.
    """

    space: SearchSpace
    data: EncodedData
    settings: RunSettings
    versions: dict[str, str]
    on_epoch: Callable[[optuna.Trial, Any], None] | None = None

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.settings.objectives or (self.settings.metric,)

    @functools.cached_property
    def validation_sample(self) -> Interactions:
        """The validation rows every epoch is scored on (the same rows for every trial of the study)."""
        return self.data.valid.sample(self.settings.validation_rows, VALIDATION_SAMPLE_SEED)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        cfg = apply_overrides(suggest(trial, self.space), self.settings)
        trial.set_user_attr(TrialAttr.CONFIG, cfg.to_dict())
        trial.set_user_attr(TrialAttr.WORKER, worker_id())
        trial.set_user_attr(TrialAttr.DATA_HASH, self.data.data_hash)
        trial.set_user_attr(TrialAttr.VERSIONS, dict(self.versions))
        trial.set_user_attr(TrialAttr.MAX_EPOCHS, cfg.train.epochs)
        try:
            return self.run(trial, cfg)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # Optuna marks the trial FAIL; keep why (NaN loss and timeouts set their own)
            if TrialAttr.FAIL_REASON not in trial.user_attrs:
                trial.set_user_attr(TrialAttr.FAIL_REASON, f"{type(exc).__name__}: {exc}"[:500])
            raise
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: Optuna marks the trial FAIL and the run stops
            trial.set_user_attr(TrialAttr.FAIL_REASON, "interrupted")
            raise

    def run(self, trial: optuna.Trial, cfg: TrialConfig) -> float | tuple[float, ...]:
        from study.train import Trainer, build_model

        metric = self.settings.metric
        multi = len(self.objectives) > 1
        start = time.perf_counter()
        model = build_model(cfg, self.data)
        counts = model.param_counts()
        for key, value in counts.items():
            trial.set_user_attr(key, value)
        limit = self.settings.max_embedding_mb
        if limit is not None and counts["embedding_bytes"] > limit * 2**20:
            reason = f"embedding tables {counts['embedding_bytes'] / 2**20:.2f} MiB > --max-embedding-mb {limit}"
            trial.set_user_attr(TrialAttr.PRUNED_REASON, reason)
            trial.set_user_attr(TrialAttr.EPOCHS_RUN, 0)
            raise optuna.TrialPruned(reason)
        trainer = Trainer(model, self.data, cfg.train)
        sample = self.validation_sample
        trial.set_user_attr(
            TrialAttr.VALIDATION_SAMPLE,
            {"rows": len(sample), "of": len(self.data.valid), "seed": VALIDATION_SAMPLE_SEED},
        )
        curve: list[list[float]] = []
        losses: list[list[float]] = []
        # with a rating head, both the top-100 and the RMSE curve (the report draws both)
        curves: dict[str, list[list[float]]] | None = {"top100": [], "rmse": []} if cfg.model.rating_head else None
        state: dict[str, Any] = {}

        def record(result: Any, pruned_at: int | None = None) -> None:
            trial.set_user_attr(TrialAttr.LEARNING_CURVE, curve)
            trial.set_user_attr(TrialAttr.LOSS_CURVE, losses)
            if curves is not None:
                trial.set_user_attr(TrialAttr.CURVES, curves)
            trial.set_user_attr(TrialAttr.EPOCHS_RUN, len(losses))
            trial.set_user_attr(TrialAttr.SECONDS, round(time.perf_counter() - start, 3))
            epoch_times = [h.train_seconds for h in result.history[1:]] or [h.train_seconds for h in result.history]
            if epoch_times:
                trial.set_user_attr(TrialAttr.SECONDS_PER_EPOCH, round(sorted(epoch_times)[len(epoch_times) // 2], 4))
            trial.set_user_attr(TrialAttr.COMPILE_SECONDS, round(result.compile_seconds, 3))
            if result.best_metrics:
                trial.set_user_attr(TrialAttr.BEST_EPOCH, result.best_epoch)
                trial.set_user_attr(TrialAttr.VALID_METRICS, {k: round(v, 6) for k, v in result.best_metrics.items()})
            if pruned_at is not None:
                trial.set_user_attr(TrialAttr.PRUNED_AT_EPOCH, pruned_at)

        def callback(epoch_result: Any) -> bool:
            losses.append([epoch_result.epoch, round(epoch_result.loss, 4)])
            elapsed = time.perf_counter() - start
            if self.settings.trial_timeout is not None and elapsed > self.settings.trial_timeout:
                if epoch_result.metrics is not None:
                    curve.append([epoch_result.epoch, round(epoch_result.metrics[metric], 6)])
                raise TrialTimeoutError(epoch_result.epoch, elapsed, self.settings.trial_timeout)
            if epoch_result.metrics is None:
                return False
            value = epoch_result.metrics[metric]
            curve.append([epoch_result.epoch, round(value, 6)])
            if curves is not None:
                for name, points in curves.items():
                    if name in epoch_result.metrics:
                        points.append([epoch_result.epoch, round(epoch_result.metrics[name], 6)])
            if self.on_epoch is not None:
                self.on_epoch(trial, epoch_result)
            if multi:
                return False
            trial.report(value, step=epoch_result.epoch)
            if trial.should_prune():
                state["pruned_at"] = epoch_result.epoch
                raise optuna.TrialPruned(f"pruned at epoch {epoch_result.epoch} with {metric}={value:.4f}")
            return False

        try:
            result = trainer.fit(eval_split=sample, callback=callback, metric=metric, exact_split=self.data.valid)
        except optuna.TrialPruned:
            record(trainer.result, pruned_at=state.get("pruned_at"))
            raise
        except TrialTimeoutError as exc:
            record(trainer.result)
            trial.set_user_attr(TrialAttr.FAIL_REASON, str(exc))
            raise
        except NonFiniteLossError as exc:
            trial.set_user_attr(TrialAttr.FAIL_REASON, str(exc))
            trial.set_user_attr(TrialAttr.EPOCHS_RUN, exc.epoch)
            raise
        record(result)
        trial.set_user_attr(TrialAttr.STOPPED_EARLY, result.stopped_early)
        values = []
        for name in self.objectives:
            if name in COST_OBJECTIVES:
                values.append(float(counts.get(name, trial.user_attrs.get(name, 0.0))))
            else:
                values.append(float(result.best_metrics.get(name, result.best_value)))
        return tuple(values) if multi else values[0]
