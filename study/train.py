"""Fast training loop and exact top-k evaluation.

Where the time goes (measured, see docs/benchmarks.md): all string work is done once in :mod:`study.data`; the training
split lives in memory as int tensors; each epoch draws one permutation on the host and runs *all* its batches inside
one compiled ``tf.function`` (optionally XLA), so there is no per-step Python, no tf.data and no retracing between
epochs. Evaluation scores every eval interaction against every candidate with one matmul per chunk and counts the
true item's rank.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from study.config import ALL_KS, TrainConfig, TrialConfig
from study.data import EncodedData, Interactions
from study.errors import NonFiniteLossError
from study.model import TwoTowerModel
from study.names import (  # noqa: F401  (also re-exported here)
    METRIC_KINDS,
    METRIC_NAMES,
    RATING_METRICS,
    check_metric,
    metric_cutoff,
    metric_direction,
    metric_k,
)

OPTIMIZERS: dict[str, Callable[[TrainConfig], tf.keras.optimizers.Optimizer]] = {
    "adagrad": lambda c: tf.keras.optimizers.Adagrad(learning_rate=c.learning_rate),
    "adam": lambda c: tf.keras.optimizers.Adam(learning_rate=c.learning_rate),
    "adamw": lambda c: tf.keras.optimizers.AdamW(learning_rate=c.learning_rate, weight_decay=c.weight_decay),
    "sgd": lambda c: tf.keras.optimizers.SGD(learning_rate=c.learning_rate, momentum=c.momentum),
    "rmsprop": lambda c: tf.keras.optimizers.RMSprop(learning_rate=c.learning_rate, momentum=c.momentum),
}

tf.get_logger().setLevel("ERROR")  # per-trial models trace their own functions; retracing warnings are noise here


def build_optimizer(cfg: TrainConfig) -> tf.keras.optimizers.Optimizer:
    """Build the optimizer named by ``cfg.optimizer``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        factory = OPTIMIZERS[cfg.optimizer]
    except KeyError:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid optimizers are {sorted(OPTIMIZERS)}") from None
    return factory(cfg)


# --------------------------------------------------------------------------------------------- evaluation


def _features(split: Interactions) -> dict[str, np.ndarray]:
    return {
        "user": split.user,
        "time_bucket": split.time_bucket,
        "time_norm": split.time_norm,
        "item": split.item,
        "rating": split.rating,
    }


def ranks_of(query: np.ndarray, candidates: np.ndarray, item: np.ndarray) -> np.ndarray:
    """int [chunk]: how many other candidates score >= the true item.

    In numpy: its BLAS ran this skinny ``[chunk, dim] x [dim, items]`` product 2.5x faster than TensorFlow's kernels
    (with or without XLA) on a 2-core CPU, and the pass is bound by writing the score matrix (docs/benchmarks.md).

    Args:
        query: [chunk, dim] query embeddings.
        candidates: [num_items - 1, dim] every real candidate (row ``i`` is item ``i + 1``).
        item: int [chunk], the true item of each query (1-based).
    """
    scores = query @ candidates.T  # [chunk, num_items - 1]
    true = scores[np.arange(len(scores)), np.asarray(item) - 1]  # [chunk], read from the same matrix: ties are exact
    # Candidates scoring >= the true item, less the true item itself: ties count against the model, so a collapsed
    # model that scores every item the same ranks last, not first. One pass over the scores.
    return (np.count_nonzero(scores >= true[:, None], axis=1) - 1).astype(np.int32)


def rmse(predictions: np.ndarray, ratings: np.ndarray) -> float:
    """Root mean squared error of predicted against true ratings (``[n]`` each); NaN for no rows."""
    if len(ratings) == 0:
        return float("nan")
    diff = np.asarray(predictions, np.float64) - np.asarray(ratings, np.float64)
    return float(np.sqrt(np.mean(diff * diff)))


class Evaluator:
    """Exact ranks of the true items among all candidates (row 0, the OOV item, is never a candidate).

    ``rank`` = number of other candidates scoring higher than or equal to the true item, from one matmul, so the true
    item is scored exactly like every other candidate (``tfrs.metrics.FactorizedTopK`` scores it separately, so rounding can
    put it below its own copy). Top-k accuracy is ``mean(rank < k)``, FactorizedTopK's definition.

    A model with a rating head is also scored on its rating predictions (``rmse``), from the same query embeddings.
    """

    def __init__(self, model: TwoTowerModel, chunk: int = 1024) -> None:
        self.model = model
        self.chunk = chunk
        spec = {
            "user": tf.TensorSpec([None], tf.int32),
            "time_bucket": tf.TensorSpec([None], tf.int32),
            "time_norm": tf.TensorSpec([None], tf.float32),
            "item": tf.TensorSpec([None], tf.int32),
            "rating": tf.TensorSpec([None], tf.float32),
        }

        @tf.function(input_signature=[spec])
        def _queries(features: dict[str, tf.Tensor]) -> tf.Tensor:
            return model.query_tower(features, training=False)  # [chunk, dim]

        head = getattr(model, "rating_model", None)
        self._predict_fn = None
        if head is not None:

            @tf.function(
                input_signature=[tf.TensorSpec([None, None], tf.float32)] * 2 + [tf.TensorSpec([None], tf.int32)]
            )
            def _predict(queries: tf.Tensor, candidates: tf.Tensor, item: tf.Tensor) -> tf.Tensor:
                # row i of ``candidates`` is item i + 1; item 0 (unknown) never occurs in a split
                return head(queries, tf.gather(candidates, tf.maximum(item - 1, 0)))  # [chunk]

            self._predict_fn = _predict

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
        def _candidates(items: tf.Tensor) -> tf.Tensor:
            return model.candidate_tower(items, training=False)

        self._queries_fn = _queries
        self._candidates_fn = _candidates

    def candidate_embeddings(self) -> tf.Tensor:
        """``[num_items - 1, dim]``: every real candidate (rows 1..num_items-1)."""
        return self._candidates_fn(tf.range(1, self.model.num_items, dtype=tf.int32))

    def ranks(self, split: Interactions) -> np.ndarray:
        """int [n]: 0-based rank of each interaction's true item among all candidates."""
        return self.score(split)[0]

    def score(self, split: Interactions) -> tuple[np.ndarray, np.ndarray | None]:
        """``(ranks int [n], predicted ratings float [n] or None without a rating head)``, chunk by chunk.

        The query tower's function takes any chunk length (its signature is ``[None]``), so it traces once per model.
        """
        n = len(split)
        if n == 0:
            return np.zeros([0], np.int32), (None if self._predict_fn is None else np.zeros([0], np.float32))
        candidates = self.candidate_embeddings()  # [num_items - 1, dim]
        candidates_np = candidates.numpy()
        feats = _features(split)
        ranks, predictions = [], []
        for start in range(0, n, self.chunk):
            chunk = {k: tf.constant(v[start : start + self.chunk]) for k, v in feats.items()}
            queries = self._queries_fn(chunk)  # [chunk, dim]
            ranks.append(ranks_of(queries.numpy(), candidates_np, feats["item"][start : start + self.chunk]))
            if self._predict_fn is not None:
                predictions.append(self._predict_fn(queries, candidates, chunk["item"]).numpy())
        rated = np.concatenate(predictions) if predictions else None
        return np.concatenate(ranks), rated

    def evaluate(self, split: Interactions, ks: tuple[int, ...] = ALL_KS) -> dict[str, float]:
        """Top-k accuracy, recall@k and NDCG@k for each k (see :func:`metrics_from_ranks`), and ``rmse`` of the
        rating head's predictions when the model has one."""
        ranks, predictions = self.score(split)
        metrics = metrics_from_ranks(ranks, split.user, ks)
        if predictions is not None:
            metrics["rmse"] = rmse(predictions, split.rating)
        return metrics


def metrics_from_ranks(ranks: np.ndarray, users: np.ndarray, ks: tuple[int, ...] = ALL_KS) -> dict[str, float]:
    """Metrics from 0-based ranks of the true items.

    * ``top{k}``: fraction of interactions whose true item ranks in the top k (FactorizedTopK's top-k accuracy).
    * ``recall{k}``: per user, the fraction of their eval interactions hit in the top k; averaged over users.
    * ``ndcg{k}``: per user, ``sum_hits 1/log2(rank+2)`` over the ideal ``sum_{i<min(k, n_u)} 1/log2(i+2)``;
      averaged over users.

    Each interaction is ranked with its own query (the query tower sees the interaction's time).

    Args:
        ranks: int [n].
        users: int [n], the user of each interaction.
        ks: cut-offs.
    """
    ranks = np.asarray(ranks)
    out: dict[str, float] = {}
    if ranks.size == 0:
        return {f"{kind}{k}": 0.0 for kind in METRIC_KINDS for k in ks}
    _, user_idx, per_user = np.unique(users, return_inverse=True, return_counts=True)
    discounts = 1.0 / np.log2(np.arange(max(ks)) + 2.0)
    ideal_cumsum = np.cumsum(discounts)
    for k in ks:
        hit = ranks < k
        out[f"top{k}"] = float(hit.mean())
        user_hits = np.bincount(user_idx, weights=hit, minlength=per_user.size)
        out[f"recall{k}"] = float(np.mean(user_hits / per_user))
        gains = np.where(hit, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0)
        dcg = np.bincount(user_idx, weights=gains, minlength=per_user.size)
        idcg = ideal_cumsum[np.minimum(per_user, k) - 1]
        out[f"ndcg{k}"] = float(np.mean(dcg / idcg))
    return out


# --------------------------------------------------------------------------------------------- training


@dataclass
class EpochResult:
    """What one epoch produced; ``metrics`` is None for epochs without evaluation."""

    epoch: int
    loss: float
    train_seconds: float
    eval_seconds: float = 0.0
    metrics: dict[str, float] | None = None


@dataclass
class TrainResult:
    """A finished (or early-stopped) training run."""

    history: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_value: float = float("nan")
    stopped_early: bool = False
    param_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    compile_seconds: float = 0.0
    sample_metrics: dict[str, float] | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def seconds_per_epoch(self) -> float:
        """Median training seconds per epoch (the first epoch, which compiles, excluded when possible)."""
        times = [h.train_seconds for h in self.history[1:]] or [h.train_seconds for h in self.history]
        return float(np.median(times)) if times else float("nan")

    def curve(self, metric: str) -> list[tuple[int, float]]:
        """``[(epoch, value)]`` of a metric over the evaluated epochs."""
        return [(h.epoch, h.metrics[metric]) for h in self.history if h.metrics is not None and metric in h.metrics]


EpochCallback = Callable[[EpochResult], Any]


class Trainer:
    """Trains a :class:`TwoTowerModel` on the training split of an :class:`EncodedData`.

    The training split is held as constant int tensors. Each epoch: one host permutation of the rows (the last
    partial batch is dropped, so every step has the same static shape and nothing retraces; with a fresh permutation
    each epoch every row is still seen), then one compiled call runs every step of the epoch.
    """

    def __init__(self, model: TwoTowerModel, data: EncodedData, cfg: TrainConfig) -> None:
        self.model = model
        self.data = data
        self.cfg = cfg
        n = len(data.train)
        self.batch_size = min(cfg.batch_size, n)
        self.num_batches = max(1, n // self.batch_size)
        self.rng = np.random.default_rng(cfg.seed)
        self.optimizer = build_optimizer(cfg)
        self.variables = model.trainable_variables
        self.optimizer.build(self.variables)
        # Ratings go into the compiled epoch only for a model that trains on them.
        rated = getattr(model, "rating_model", None) is not None
        self._train = {k: tf.constant(v) for k, v in _features(data.train).items() if rated or k != "rating"}
        self._train_items = np.asarray(data.train.item)
        self.unique_cap = 0
        self.epochs_done = 0
        self._jit = cfg.jit and cfg.jit_warmup == 0
        self.fresh_function = False  # whether the last epoch traced (and compiled) its function
        self._next_perm: np.ndarray | None = None
        if cfg.fold:
            # Distinct items per batch vary little between random batches; size the (static) unique axis from the
            # first epoch's batches plus a margin. A later batch with more distinct items re-sizes it (one retrace).
            self._next_perm = self._permutation()
            needed = int(fold_batches(self._train_items[self._next_perm], self.num_batches, 1)[3])
            self.unique_cap = _round_up(min(self.batch_size, int(needed * 1.06) + 8), 8, self.batch_size)
        self._epoch_fn = self._make_epoch_fn()
        self.result = TrainResult()

    def _permutation(self) -> np.ndarray:
        return self.rng.permutation(len(self.data.train))[: self.num_batches * self.batch_size].astype(np.int32)

    def _make_epoch_fn(self) -> Callable[..., tf.Tensor]:
        model, optimizer, variables, train = self.model, self.optimizer, self.variables, self._train
        batch_size, num_batches, cap = self.batch_size, self.num_batches, self.unique_cap

        def apply(tape: tf.GradientTape, loss: tf.Tensor) -> None:
            grads = tape.gradient(loss, variables)
            # Dense gradients: same math for the embedding tables (rows with zero gradient do not move under
            # Adagrad/SGD; Adam-family optimizers decay every row's moments either way) and no tf.unique under XLA.
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
            optimizer.apply_gradients(zip(grads, variables, strict=True))

        if not self.cfg.fold:

            @tf.function(jit_compile=self._jit, input_signature=[tf.TensorSpec([num_batches * batch_size], tf.int32)])
            def run_epoch(perm: tf.Tensor) -> tf.Tensor:
                total = tf.constant(0.0)
                for i in tf.range(num_batches):
                    # static size (a Python slice is not, under XLA)
                    idx = tf.slice(perm, [i * batch_size], [batch_size])
                    batch = {k: tf.gather(v, idx) for k, v in train.items()}
                    with tf.GradientTape() as tape:
                        loss = model.batch_loss(batch, training=True)
                    apply(tape, loss)
                    total += loss
                return total

            return run_epoch

        @tf.function(
            jit_compile=self._jit,
            input_signature=[
                tf.TensorSpec([num_batches * batch_size], tf.int32),  # permutation
                tf.TensorSpec([num_batches, cap], tf.int32),  # distinct items per batch (padded with row 0)
                tf.TensorSpec([num_batches, cap], tf.float32),  # log(count), padding -1e9
                tf.TensorSpec([num_batches, batch_size], tf.int32),  # column of each row's item
            ],
        )
        def run_folded_epoch(perm: tf.Tensor, unique: tf.Tensor, log_counts: tf.Tensor, positions: tf.Tensor):
            total = tf.constant(0.0)
            for i in tf.range(num_batches):
                idx = tf.slice(perm, [i * batch_size], [batch_size])
                batch = {k: tf.gather(v, idx) for k, v in train.items()}
                with tf.GradientTape() as tape:
                    loss = model.folded_batch_loss(batch, unique[i], log_counts[i], positions[i])
                apply(tape, loss)
                total += loss
            return total

        return run_folded_epoch

    def train_epoch(self) -> float:
        """Run one epoch; returns the summed loss over its batches. ``fresh_function`` says afterwards whether it
        traced (and compiled) the epoch function."""
        if self.cfg.jit and not self._jit and self.epochs_done >= self.cfg.jit_warmup:
            self._jit = True  # past the warm-up: from now on the XLA-compiled epoch
            self._epoch_fn = self._make_epoch_fn()
        self.epochs_done += 1
        fn = self._epoch_fn
        traced = fn.experimental_get_tracing_count()
        loss = self._run_epoch()  # may re-size the fold and make a new function
        self.fresh_function = self._epoch_fn is not fn or fn.experimental_get_tracing_count() > traced
        return loss

    def _run_epoch(self) -> float:
        perm = self._next_perm if self._next_perm is not None else self._permutation()
        self._next_perm = None
        if not self.cfg.fold:
            return float(self._epoch_fn(tf.constant(perm)).numpy())
        unique, log_counts, positions, needed = fold_batches(self._train_items[perm], self.num_batches, self.unique_cap)
        if needed > self.unique_cap:
            self.unique_cap = _round_up(int(needed * 1.06) + 8, 8, self.batch_size)
            self._epoch_fn = self._make_epoch_fn()
            unique, log_counts, positions, _ = fold_batches(self._train_items[perm], self.num_batches, self.unique_cap)
        total = self._epoch_fn(tf.constant(perm), tf.constant(unique), tf.constant(log_counts), tf.constant(positions))
        return float(total.numpy())

    def fit(
        self,
        eval_split: Interactions | None = None,
        callback: EpochCallback | None = None,
        metric: str | None = None,
        exact_split: Interactions | None = None,
    ) -> TrainResult:
        """Train for ``cfg.epochs`` epochs, evaluating every ``cfg.eval_every`` epochs and after the last one.

        Args:
            eval_split: the split to evaluate on each time and pick the best epoch with (default: validation).
            exact_split: when given (e.g. all validation rows, with ``eval_split`` a sample of them): the weights of
                the best epoch are kept and, once training ends, scored on it; those are ``best_metrics`` and
                ``best_value`` (the sample's go to ``sample_metrics``). Not done when a callback raises.
            callback: called after every epoch with its :class:`EpochResult`; a truthy return stops training.
                It may raise (e.g. ``optuna.TrialPruned``), which propagates.
            metric: the metric that picks the best epoch (default ``cfg.metric``).

        Raises:
            NonFiniteLossError: the loss became NaN/inf (carries the epoch).
        """
        cfg = self.cfg
        metric = metric or cfg.metric
        cutoff = metric_cutoff(metric)
        if cutoff is None and getattr(self.model, "rating_model", None) is None:
            raise ValueError(f"metric {metric!r} needs a model with a rating head (model.rating_head: true)")
        lower_is_better = metric_direction(metric) == "minimize"
        eval_split = self.data.valid if eval_split is None else eval_split
        evaluator = Evaluator(self.model)
        exact = exact_split is not None and exact_split is not eval_split
        best_weights: list[np.ndarray] | None = None
        ks = tuple(sorted(set(cfg.ks) | ({cutoff} if cutoff else set())))
        result = TrainResult(param_counts=self.model.param_counts())
        self.result = result  # readable after an exception raised by the callback (e.g. pruning)
        since_best = 0
        start = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            loss = self.train_epoch()
            train_seconds = time.perf_counter() - t0
            if self.fresh_function:  # the first epoch, the first XLA epoch after a warm-up, a re-sized fold
                result.compile_seconds += train_seconds
            mean_loss = loss / self.num_batches
            if not math.isfinite(loss):
                result.history.append(EpochResult(epoch, mean_loss, train_seconds))
                result.seconds = time.perf_counter() - start
                raise NonFiniteLossError(epoch, loss)
            record = EpochResult(epoch, mean_loss, train_seconds)
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                t1 = time.perf_counter()
                record.metrics = evaluator.evaluate(eval_split, ks)
                record.eval_seconds = time.perf_counter() - t1
                value = record.metrics[metric]
                better = value < result.best_value if lower_is_better else value > result.best_value
                if not result.best_metrics or better:
                    result.best_value, result.best_epoch, result.best_metrics = value, epoch, dict(record.metrics)
                    since_best = 0
                    if exact:
                        best_weights = self.model.get_weights()
                else:
                    since_best += 1
            result.history.append(record)
            result.seconds = time.perf_counter() - start
            if callback is not None and callback(record):
                result.stopped_early = True
                break
            if cfg.patience and since_best >= cfg.patience:
                result.stopped_early = True
                break
        if exact and best_weights is not None:
            last_weights = self.model.get_weights()
            self.model.set_weights(best_weights)
            result.sample_metrics = result.best_metrics
            result.best_metrics = evaluator.evaluate(exact_split, ks)
            result.best_value = result.best_metrics[metric]
            self.model.set_weights(last_weights)  # the model ends where training ended, with or without a sample
        result.seconds = time.perf_counter() - start
        return result


def _round_up(value: int, multiple: int, cap: int) -> int:
    return min(cap, -(-value // multiple) * multiple)


def fold_batches(items: np.ndarray, num_batches: int, cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Distinct items of each batch, for :func:`study.model.folded_softmax_loss` (host side, vectorised).

    Args:
        items: int [num_batches * B], the item of every row in epoch order.
        num_batches: number of batches B-row batches.
        cap: width of the padded distinct-item axis U.

    Returns:
        ``(unique [nb, U] int32, log_counts [nb, U] float32, positions [nb, B] int32, needed)`` where ``needed`` is the
        largest number of distinct items in one batch; when ``needed > cap`` the arrays are not valid (re-size U).
    """
    rows = items.reshape(num_batches, -1)
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    new = np.ones_like(ordered, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    slot = np.cumsum(new, axis=1) - 1  # distinct-item index of each sorted row
    needed = int(slot[:, -1].max()) + 1
    if needed > cap:
        return np.zeros(0), np.zeros(0), np.zeros(0), needed
    positions = np.empty_like(slot)
    np.put_along_axis(positions, order, slot, axis=1)
    flat = (np.arange(num_batches)[:, None] * cap + slot).ravel()
    counts = np.bincount(flat, minlength=num_batches * cap).reshape(num_batches, cap)
    unique = np.zeros((num_batches, cap), np.int32)
    unique.reshape(-1)[flat] = ordered.ravel()
    log_counts = np.where(counts > 0, np.log(np.maximum(counts, 1)), -1e9).astype(np.float32)
    return unique, log_counts, positions.astype(np.int32), needed


def build_model(cfg: TrialConfig, data: EncodedData) -> TwoTowerModel:
    """A fresh model for ``cfg`` with weights seeded by ``cfg.train.seed``."""
    tf.keras.utils.set_random_seed(cfg.train.seed)
    return TwoTowerModel(cfg.model, data)


def train(
    cfg: TrialConfig,
    data: EncodedData,
    callback: EpochCallback | None = None,
    eval_split: Interactions | None = None,
    metric: str | None = None,
) -> tuple[TwoTowerModel, TrainResult]:
    """Build a model for ``cfg`` and train it; see :meth:`Trainer.fit`."""
    model = build_model(cfg, data)
    trainer = Trainer(model, data, cfg.train)
    return model, trainer.fit(eval_split=eval_split, callback=callback, metric=metric)


def versions() -> Mapping[str, str]:
    """Library versions recorded with every trial."""
    import optuna
    import tensorflow_recommenders as tfrs

    import study

    return {
        "study": study.__version__,
        "tensorflow": tf.__version__,
        "tensorflow_recommenders": getattr(tfrs, "__version__", "?"),
        "optuna": optuna.__version__,
        "numpy": np.__version__,
    }


def validate_config(cfg: TrialConfig) -> None:
    """Check every registry name in ``cfg`` before anything is built.

    Raises:
        ConfigError: naming the field, the value and the valid names.
    """
    from study.errors import ConfigError
    from study.names import FIELDS

    for section, fields in (("model", cfg.model), ("train", cfg.train)):
        for key, valid in FIELDS.items():
            if key == "metric" or not hasattr(fields, key):  # metric: any k, checked below
                continue
            value = getattr(fields, key)
            if value not in valid:
                raise ConfigError(f"{section}.{key}: unknown name {value!r}; valid names are {sorted(valid)}")
    try:
        check_metric(cfg.train.metric)
    except ValueError as exc:
        raise ConfigError(f"train.metric: {exc}") from None
    if cfg.train.metric in RATING_METRICS and not cfg.model.rating_head:
        raise ConfigError(
            f"train.metric: {cfg.train.metric} scores the rating head, but model.rating_head is false; "
            "set model.rating_head: true or pick a top-k metric such as top100"
        )
