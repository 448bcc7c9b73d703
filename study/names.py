"""The valid names of every registry, importable without TensorFlow.

The registries (``towers.ACTIVATIONS``, ``towers.BODIES``, ``embeddings.EMBEDDINGS``, ``train.OPTIMIZERS``,
``runner.SAMPLERS``, ``runner.PRUNERS``) map these names to code; ``data.split`` takes the protocols. A search space is checked against the names alone, so the parent of ``run --jobs N``
validates a run without importing TensorFlow while its workers import it (on a small machine three TensorFlow
imports at once cost the workers seconds). ``tests/test_names.py`` keeps each tuple equal to its registry's keys.

The names of the user attributes a run stores on trials and studies are here too (:class:`TrialAttr`,
:class:`StudyAttr`): the objective writes them and :mod:`study.results` reads them.
"""

from __future__ import annotations

from study.config import ALL_KS

ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "swish", "tanh", "elu", "selu", "leaky_relu", "sigmoid")
BODIES: tuple[str, ...] = ("mlp", "deep_cross")
CROSS_STRUCTURES: tuple[str, ...] = ("stacked", "parallel")
EMBEDDINGS: tuple[str, ...] = ("full", "quotient_remainder", "mixed_dimension", "hashing")
QR_COMBINERS: tuple[str, ...] = ("multiply", "add", "concat")
OPTIMIZERS: tuple[str, ...] = ("adagrad", "adam", "adamw", "sgd", "rmsprop")
SAMPLERS: tuple[str, ...] = ("tpe", "random", "cmaes", "gp", "qmc", "nsga2")
PRUNERS: tuple[str, ...] = ("hyperband", "median", "successive-halving", "none")
PROTOCOLS: tuple[str, ...] = ("random", "temporal", "tutorial")
METRIC_KINDS: tuple[str, ...] = ("top", "recall", "ndcg")
METRIC_NAMES: tuple[str, ...] = tuple(f"{kind}{k}" for kind in METRIC_KINDS for k in ALL_KS)
#: Validation metrics of the rating head (``model.rating_head``), lower is better. Unlike the top-k metrics they have
#: no cut-off.
RATING_METRICS: tuple[str, ...] = ("rmse",)

# config field → the names it may take
FIELDS: dict[str, tuple[str, ...]] = {
    "activation": ACTIVATIONS,
    "body": BODIES,
    "embedding": EMBEDDINGS,
    "optimizer": OPTIMIZERS,
    "metric": (*METRIC_NAMES, *RATING_METRICS),
    "qr_combiner": QR_COMBINERS,
    "cross_structure": CROSS_STRUCTURES,
}


def metric_k(metric: str) -> int:
    """The cut-off of a metric name such as ``top100`` / ``recall10``; unknown names raise ``ValueError``."""
    for kind in METRIC_KINDS:
        if metric.startswith(kind) and metric[len(kind) :].isdigit():
            k = int(metric[len(kind) :])
            if k < 1:
                raise ValueError(f"metric {metric!r}: the cut-off k must be >= 1, but got {k}")
            return k
    raise ValueError(f"unknown metric {metric!r}; valid metrics look like {list(METRIC_NAMES)} or rmse")


def check_metric(metric: str) -> None:
    """Raise ``ValueError`` unless ``metric`` is a top-k metric (``top100``, ``ndcg10``, …) or ``rmse``."""
    if metric not in RATING_METRICS:
        metric_k(metric)


def metric_direction(metric: str) -> str:
    """``minimize`` for ``rmse``, ``maximize`` for the top-k metrics; unknown names raise ``ValueError``."""
    check_metric(metric)
    return "minimize" if metric in RATING_METRICS else "maximize"


def metric_cutoff(metric: str) -> int | None:
    """The cut-off k of a top-k metric, ``None`` for ``rmse``; unknown names raise ``ValueError``."""
    check_metric(metric)
    return None if metric in RATING_METRICS else metric_k(metric)


# --------------------------------------------------------------------------------------------- stored names


class TrialAttr:
    """Names of the user attributes a trial stores (:data:`TRIAL_ATTRS` says what each holds)."""

    CONFIG = "config"
    WORKER = "worker"
    DATA_HASH = "data_hash"
    VERSIONS = "versions"
    MAX_EPOCHS = "max_epochs"
    LEARNING_CURVE = "learning_curve"
    LOSS_CURVE = "loss_curve"
    CURVES = "curves"
    EPOCHS_RUN = "epochs_run"
    SECONDS = "seconds"
    SECONDS_PER_EPOCH = "seconds_per_epoch"
    COMPILE_SECONDS = "compile_seconds"
    BEST_EPOCH = "best_epoch"
    VALID_METRICS = "valid_metrics"
    PRUNED_AT_EPOCH = "pruned_at_epoch"
    PRUNED_REASON = "pruned_reason"
    FAIL_REASON = "fail_reason"
    STOPPED_EARLY = "stopped_early"
    RETRY_OF = "retry_of"
    RETRIED_FROM = "retried_from"
    BASELINE = "baseline"
    VALIDATION_SAMPLE = "validation_sample"


class StudyAttr:
    """Names of the user attributes a study stores (:data:`STUDY_ATTRS` says what each holds)."""

    DATASET = "dataset"
    PROTOCOL = "protocol"
    SPACE_FINGERPRINT = "space_fingerprint"
    DATA_HASH = "data_hash"
    OBJECTIVES = "objectives"
    SPACE = "space"
    SPACE_PATH = "space_path"
    METRIC = "metric"
    SAMPLER = "sampler"
    PRUNER = "pruner"
    MAX_EPOCHS = "max_epochs"
    DATA_INFO = "data_info"
    BASELINES_ENQUEUED = "baselines_enqueued"
    TEST_METRICS = "test_metrics"
    TEST_TRIAL = "test_trial"
    TEST_PROTOCOL = "test_protocol"
    SEED_RERUNS = "seed_reruns"
    VALIDATION_SAMPLE = "validation_sample"


# Parameter and size counts of the trial's model (``TwoTowerModel.param_counts``), also usable as objectives.
COUNT_ATTRS: tuple[str, ...] = (
    "total_params",
    "embedding_params",
    "embedding_bytes",
    "id_embedding_params",
    "id_embedding_bytes",
)

TRIAL_ATTRS: dict[str, str] = {
    TrialAttr.CONFIG: "the exact TrialConfig trained, as a dict (study.config.TrialConfig.to_dict)",
    TrialAttr.WORKER: "host:pid of the process that ran it (a dead local worker's trial is failed and retried)",
    TrialAttr.DATA_HASH: "hash of the data it trained on",
    TrialAttr.VERSIONS: "library versions (TensorFlow, TFRS, Optuna, …)",
    TrialAttr.MAX_EPOCHS: "epochs it would run if never pruned",
    TrialAttr.LEARNING_CURVE: "[[epoch, validation metric], …]",
    TrialAttr.LOSS_CURVE: "[[epoch, training loss], …]",
    TrialAttr.CURVES: "with a rating head: {'top100': [[epoch, value], …], 'rmse': [[epoch, value], …]}",
    TrialAttr.EPOCHS_RUN: "epochs trained",
    TrialAttr.SECONDS: "wall seconds of the trial",
    TrialAttr.SECONDS_PER_EPOCH: "median training seconds per epoch (the first epoch, which compiles, left out)",
    TrialAttr.COMPILE_SECONDS: "seconds spent tracing and compiling",
    TrialAttr.BEST_EPOCH: "the epoch with the best validation metric (1-based)",
    TrialAttr.VALID_METRICS: "every validation metric at the best epoch: over every validation row for a complete "
    "trial, over the validation sample for a pruned one",
    TrialAttr.VALIDATION_SAMPLE: "{rows, of, seed}: the validation rows its per-epoch values (pruning, curves) "
    "were computed on; valid_metrics and the value of a complete trial use all rows",
    TrialAttr.PRUNED_AT_EPOCH: "the epoch at which the pruner stopped it",
    TrialAttr.PRUNED_REASON: "why it was pruned before training (e.g. --max-embedding-mb)",
    TrialAttr.FAIL_REASON: "why it failed (NaN loss, timeout, a dead worker, an error)",
    TrialAttr.STOPPED_EARLY: "whether --patience ended it",
    TrialAttr.RETRY_OF: "the trial whose parameters this one retries",
    TrialAttr.RETRIED_FROM: "the failed trial this retry was queued from",
    TrialAttr.BASELINE: "the tutorial config it reproduces (--baselines)",
    **{name: "model size (TwoTowerModel.param_counts)" for name in COUNT_ATTRS},
}

STUDY_ATTRS: dict[str, str] = {
    StudyAttr.DATASET: "the --dataset spec",
    StudyAttr.PROTOCOL: "the split protocol",
    StudyAttr.SPACE_FINGERPRINT: "fingerprint of the search space (a resumed run must match it)",
    StudyAttr.DATA_HASH: "hash of the data (a resumed run must match it)",
    StudyAttr.OBJECTIVES: "the objectives' names",
    StudyAttr.SPACE: "the --space given",
    StudyAttr.SPACE_PATH: "the search-space file",
    StudyAttr.METRIC: "the validation metric trials report",
    StudyAttr.SAMPLER: "the sampler's name",
    StudyAttr.PRUNER: "the pruner's name",
    StudyAttr.MAX_EPOCHS: "the pruner's max resource",
    StudyAttr.DATA_INFO: "facts about the data (rows, users, items, time range)",
    StudyAttr.BASELINES_ENQUEUED: "how many tutorial configs were queued",
    StudyAttr.TEST_METRICS: "test metrics of the best trial, re-trained at its best epoch",
    StudyAttr.TEST_TRIAL: "which trial test_metrics belong to",
    StudyAttr.TEST_PROTOCOL: "the protocol test_metrics were measured on",
    StudyAttr.SEED_RERUNS: "`python -m study evaluate`'s results",
    StudyAttr.VALIDATION_SAMPLE: "validation rows per-epoch evaluation uses (0 = all), fixed when the study is created",
}
