"""Run settings as frozen dataclasses.

Precedence is CLI > file > defaults. A trial's settings are a :class:`TrialConfig`
(``model`` + ``train``); the same two sections are what a search-space YAML file and a
``--config`` file declare (see :mod:`study.search_space`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from study.errors import ConfigError

ALL_KS: tuple[int, ...] = (1, 5, 10, 50, 100)
# Validation rows each epoch's evaluation uses during a search: a pass then costs a bounded share of an epoch at every
# data size (docs/benchmarks.md, "Cost growth"). Complete trials are scored on every row.
DEFAULT_VALIDATION_SAMPLE = 2048
VALIDATION_SAMPLE_SEED = 0


@dataclass(frozen=True)
class ModelConfig:
    """How the two towers are built.

    Attributes:
        layers: widths of the tower body; the last one is the output embedding size (linear).
        activation: a name in ``towers.ACTIVATIONS`` for every layer but the last.
        body: a name in ``towers.BODIES`` (``mlp`` or ``deep_cross``).
        dropout: dropout rate after each hidden layer (0 = none).
        layer_norm: layer normalisation after each hidden layer.
        cross_layers: number of ``tfrs.layers.dcn.Cross`` layers (``deep_cross`` body).
        cross_projection_dim: low-rank size of the cross layers (0 = full rank).
        cross_structure: ``stacked`` (cross then MLP) or ``parallel`` (concatenated).
        embedding: a name in ``embeddings.EMBEDDINGS`` used for the id features.
        embedding_dim: size of every feature embedding (user, time bucket, title id, words, genres).
        qr_combiner, qr_bucket_fraction: quotient-remainder options.
        md_num_blocks, md_alpha, md_min_dim: mixed-dimension options.
        hash_bucket_fraction: hashing option (buckets = fraction × vocabulary size).
        use_timestamp: query features include the time-bucket embedding and normalised time.
        use_title_words: candidate features include the mean title-word embedding.
        use_genres: candidate features include the mean genre embedding (when the data has genres).
        normalize: L2-normalise both tower outputs.
        temperature: softmax temperature of the retrieval loss: the logits are divided by it whenever it is not 1.0
            or ``normalize`` is on (1.0 without ``normalize`` is the tutorial's unscaled dot product).
        sampling_bias_correction: subtract ``log p`` from each in-batch candidate's logit, ``p`` being the item's
            frequency in the training split (``tfrs.tasks.Retrieval``'s ``candidate_sampling_probability``).
        remove_accidental_hits: in-batch negatives that are the row's own positive item count as nothing
            (``tfrs.tasks.Retrieval(remove_accidental_hits=True)`` with the item ids as ``candidate_ids``).
        num_hard_negatives: keep only this many highest-scoring in-batch negatives per row, plus the positive
            (``tfrs.tasks.Retrieval(num_hard_negatives=N)``); None = every negative.
        rating_head: add a rating model on the concatenated query and candidate embeddings (the TFRS multi-task
            recipe), trained with ``tfrs.tasks.Ranking`` (mean squared error) alongside retrieval; the data needs
            ratings. Validation then also reports ``rmse``.
        rating_layers: hidden widths of the rating head (ReLU), followed by one linear output unit.
        rating_weight, retrieval_weight: the loss is ``rating_weight * rating_loss + retrieval_weight *
            retrieval_loss`` (the retrieval loss is a sum over the batch, the rating loss a mean, as in TFRS).
    """

    layers: tuple[int, ...] = (64, 32)
    activation: str = "relu"
    body: str = "mlp"
    dropout: float = 0.0
    layer_norm: bool = False
    cross_layers: int = 1
    cross_projection_dim: int = 0
    cross_structure: str = "stacked"
    embedding: str = "full"
    embedding_dim: int = 32
    qr_combiner: str = "multiply"
    qr_bucket_fraction: float = 1.0
    md_num_blocks: int = 4
    md_alpha: float = 0.3
    md_min_dim: int = 4
    hash_bucket_fraction: float = 0.25
    use_timestamp: bool = True
    use_title_words: bool = True
    use_genres: bool = True
    normalize: bool = False
    temperature: float = 1.0
    sampling_bias_correction: bool = False
    remove_accidental_hits: bool = False
    num_hard_negatives: int | None = field(default=None, metadata={"kind": int})
    rating_head: bool = False
    rating_layers: tuple[int, ...] = (256, 128)
    rating_weight: float = 1.0
    retrieval_weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(u) for u in self.layers))
        if not self.layers or any(u < 1 for u in self.layers):
            raise ConfigError(f"model.layers: must be a non-empty list of positive ints, but got {list(self.layers)}")
        if self.embedding_dim < 1:
            raise ConfigError(f"model.embedding_dim: must be >= 1, but got {self.embedding_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: must be in [0, 1), but got {self.dropout}")
        if self.temperature <= 0:
            raise ConfigError(f"model.temperature: must be > 0, but got {self.temperature}")
        object.__setattr__(self, "rating_layers", tuple(int(u) for u in self.rating_layers))
        if any(u < 1 for u in self.rating_layers):
            raise ConfigError(f"model.rating_layers: must be positive ints, but got {list(self.rating_layers)}")
        for name in ("rating_weight", "retrieval_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name}: must be >= 0, but got {getattr(self, name)}")
        if self.rating_head and self.rating_weight == 0 and self.retrieval_weight == 0:
            raise ConfigError(
                "model.rating_weight and model.retrieval_weight: at least one must be > 0, but both are 0"
            )
        if not self.rating_head and self.retrieval_weight == 0:
            raise ConfigError("model.retrieval_weight: 0 trains nothing without model.rating_head: true")
        if self.num_hard_negatives is not None and (
            isinstance(self.num_hard_negatives, bool) or self.num_hard_negatives < 1
        ):
            raise ConfigError(
                "model.num_hard_negatives: must be an int >= 1 (or null: every in-batch negative), "
                f"but got {self.num_hard_negatives!r}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained and evaluated.

    Attributes:
        optimizer: a name in ``train.OPTIMIZERS``.
        learning_rate: optimizer learning rate.
        momentum: SGD momentum / RMSprop momentum.
        weight_decay: AdamW weight decay.
        batch_size: training batch size (the in-batch softmax sees ``batch_size`` negatives).
        epochs: maximum number of training epochs.
        eval_every: evaluate on the validation split every N epochs (and after the last one).
        patience: stop after this many evaluations without improvement (0 = never).
        seed: seed of initialisation and shuffling.
        ks: cut-offs of the top-k metrics.
        metric: the metric a study optimises, e.g. ``top100`` (see ``train.METRIC_NAMES``).
        jit: compile the training epoch with XLA.
        jit_warmup: with ``jit``, the first N epochs run as a plain TensorFlow graph and the epoch is compiled with
            XLA only when training goes on past them, so a trial pruned within them never pays XLA's compilation
            (several seconds on a small CPU; docs/benchmarks.md, "Compile cost").
        fold: score each batch against its distinct items with ``log(count)`` logit offsets (same loss and
            gradients as the plain in-batch softmax, less work; see ``model.folded_softmax_loss``).
    """

    optimizer: str = "adagrad"
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.004
    batch_size: int = 2048
    epochs: int = 30
    eval_every: int = 1
    patience: int = 0
    seed: int = 0
    ks: tuple[int, ...] = ALL_KS
    metric: str = "top100"
    jit: bool = True
    jit_warmup: int = 0
    fold: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(sorted({int(k) for k in self.ks})))
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate: must be > 0, but got {self.learning_rate}")
        if self.batch_size < 2:
            raise ConfigError(f"train.batch_size: must be >= 2, but got {self.batch_size}")
        if self.epochs < 1:
            raise ConfigError(f"train.epochs: must be >= 1, but got {self.epochs}")
        if self.eval_every < 1:
            raise ConfigError(f"train.eval_every: must be >= 1, but got {self.eval_every}")
        if self.patience < 0:
            raise ConfigError(f"train.patience: must be >= 0, but got {self.patience}")
        if self.jit_warmup < 0:
            raise ConfigError(f"train.jit_warmup: must be >= 0, but got {self.jit_warmup}")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"train.ks: must be positive ints, but got {list(self.ks)}")


@dataclass(frozen=True)
class TrialConfig:
    """Everything needed to build and train one model: the unit a trial samples."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """A JSON-friendly nested dict (tuples become lists)."""
        return {
            "model": _jsonable(dataclasses.asdict(self.model)),
            "train": _jsonable(dataclasses.asdict(self.train)),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> TrialConfig:
        """Build from ``{"model": {...}, "train": {...}}``; unknown keys raise ``ConfigError``."""
        unknown = set(values) - {"model", "train"}
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}; valid sections are ['model', 'train']")
        return cls(
            model=_build(ModelConfig, values.get("model", {}), f"{source}: model"),
            train=_build(TrainConfig, values.get("train", {}), f"{source}: train"),
        )

    def replace(self, **sections: Mapping[str, Any]) -> TrialConfig:
        """A copy with some fields changed, e.g. ``cfg.replace(train={"epochs": 5})``."""
        model = dataclasses.replace(self.model, **sections.get("model", {}))
        train = dataclasses.replace(self.train, **sections.get("train", {}))
        return TrialConfig(model=model, train=train)


def field_names(cls: type) -> tuple[str, ...]:
    """Names of a config dataclass's fields, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls))


def field_type(cls: type, name: str) -> type:
    """The type of a config field's values: its default's type, or ``metadata["kind"]`` for an optional field.

    An optional field (default ``None``, e.g. ``ModelConfig.num_hard_negatives``) also takes ``None`` (YAML ``null``).
    """
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("kind") or type(f.default)
    raise KeyError(name)


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: must be a mapping, but got {values!r}")
    names = field_names(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; valid keys are {list(names)}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        if "kind" in f.metadata:  # optional field: None (YAML null) or a value of that kind
            value = values[f.name]
            if value is None or (isinstance(value, str) and value.lower() in {"null", "none"}):
                kwargs[f.name] = None
                continue
            try:
                kwargs[f.name] = _coerce(value, f.metadata["kind"](), where, f.name)
            except ConfigError:
                kind = f.metadata["kind"].__name__
                raise ConfigError(f"{where}.{f.name}: must be {kind} or null, but got {value!r}") from None
            continue
        kwargs[f.name] = _coerce(
            values[f.name], f.default if f.default is not dataclasses.MISSING else None, where, f.name
        )
    return cls(**kwargs)


def _coerce(value: Any, default: Any, where: str, name: str) -> Any:
    """Coerce a YAML/CLI value to the type of the field's default; a wrong type is a ConfigError."""
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
                return value.lower() in {"true", "yes", "1"}
            raise TypeError
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace("-", ",").split(",") if v.strip()]
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = [value]
            return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        kind = type(default).__name__ if not isinstance(default, tuple) else "list of ints"
        raise ConfigError(f"{where}.{name}: must be {kind}, but got {value!r}") from None
    return value


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


@dataclass(frozen=True)
class RunSettings:
    """Settings of ``python -m study run`` (CLI > space file's ``run:`` section > these defaults).

    Attributes:
        space: search-space name (in ``search_spaces/``) or path.
        dataset: data source spec (``embedded``, ``grouplens:PATH``, ``tfds:NAME``, ``csv:PATH``).
        protocol: split protocol (``random``, ``temporal``, ``tutorial``).
        storage: Optuna storage URL (``sqlite:///study.db``, ``postgresql://…``, ``journal:PATH``).
        study_name: Optuna study name (default: ``<dataset>-<space>``).
        sampler, pruner: names in ``runner.SAMPLERS`` / ``runner.PRUNERS``.
        trials: target number of finished (complete + pruned) trials in the study.
        timeout: seconds after which no new trial starts (None = no limit).
        trial_timeout: seconds one trial may train; checked after every epoch, a trial past it stops and is FAIL
            (None = no limit).
        max_epochs: overrides ``train.epochs`` of every trial.
        eval_every: overrides ``train.eval_every``.
        metric: the validation metric to maximise (``top100``, ``recall10``, …).
        seed: seed of the sampler (and of every trial's training) for reproducible studies.
        baselines: enqueue the TFRS tutorial's configs as the first trials when the space admits them.
        objectives: names of the study's objectives (one = single-objective).
        max_embedding_mb: reject configurations whose embedding tables exceed this many MiB.
        patience: stop a trial after this many evaluations without improvement (0 = off).
        jobs: worker processes on this machine.
        recycle_after: a worker process that has run this many trials leaves and a fresh one takes its place (0 =
            never). TensorFlow's XLA cache never evicts, so a process keeps ~10-50 MB of every trial it compiled.
        restart_after: a single-process run (``--jobs 1`` without ``--recycle-after``) that has run this many trials
            replaces itself with a fresh process (exec) that resumes the study, for the same reason (0 = never).
        validation_sample: validation rows each epoch's evaluation (pruning, learning curves) uses; the best epoch
            of a complete trial is then scored on every row (its value) (0 = every row every epoch; None = the
            default, :data:`DEFAULT_VALIDATION_SAMPLE`, or the size a resumed study was created with).
        test_best: re-train the best trial and score it on the test split at the end.
        quiet: no per-trial lines.
    """

    space: str = "default"
    dataset: str = "embedded"
    protocol: str = "random"
    storage: str = "sqlite:///study.db"
    study_name: str | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    trials: int = 100
    timeout: float | None = None
    trial_timeout: float | None = None
    max_epochs: int | None = None
    eval_every: int | None = None
    metric: str = "top100"
    seed: int | None = None
    baselines: bool = False
    objectives: tuple[str, ...] = ()
    max_embedding_mb: float | None = None
    patience: int | None = None
    jobs: int = 1
    recycle_after: int = 0
    restart_after: int = 0
    validation_sample: int | None = None
    test_best: bool = True
    quiet: bool = False

    @property
    def validation_rows(self) -> int:
        """``validation_sample``, or :data:`DEFAULT_VALIDATION_SAMPLE` when it is None."""
        return DEFAULT_VALIDATION_SAMPLE if self.validation_sample is None else self.validation_sample
