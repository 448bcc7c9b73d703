"""The valid names of every registry, importable without TensorFlow.

The registries (``towers.ACTIVATIONS``, ``towers.BODIES``, ``embeddings.EMBEDDINGS``, ``train.OPTIMIZERS``) map
these names to TensorFlow code. A search space is checked against the names alone, so the parent of ``run --jobs N``
validates a run without importing TensorFlow while its workers import it (on a small machine three TensorFlow
imports at once cost the workers seconds). ``tests/test_names.py`` keeps each tuple equal to its registry's keys.
"""

from __future__ import annotations

from study.config import ALL_KS

ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "swish", "tanh", "elu", "selu", "leaky_relu", "sigmoid")
BODIES: tuple[str, ...] = ("mlp", "deep_cross")
CROSS_STRUCTURES: tuple[str, ...] = ("stacked", "parallel")
EMBEDDINGS: tuple[str, ...] = ("full", "quotient_remainder", "mixed_dimension", "hashing")
QR_COMBINERS: tuple[str, ...] = ("multiply", "add", "concat")
OPTIMIZERS: tuple[str, ...] = ("adagrad", "adam", "adamw", "sgd", "rmsprop")
METRIC_KINDS: tuple[str, ...] = ("top", "recall", "ndcg")
METRIC_NAMES: tuple[str, ...] = tuple(f"{kind}{k}" for kind in METRIC_KINDS for k in ALL_KS)

# config field → the names it may take
FIELDS: dict[str, tuple[str, ...]] = {
    "activation": ACTIVATIONS,
    "body": BODIES,
    "embedding": EMBEDDINGS,
    "optimizer": OPTIMIZERS,
    "metric": METRIC_NAMES,
    "qr_combiner": QR_COMBINERS,
    "cross_structure": CROSS_STRUCTURES,
}


def metric_k(metric: str) -> int:
    """The cut-off of a metric name such as ``top100`` / ``recall10``; unknown names raise ``ValueError``."""
    for kind in METRIC_KINDS:
        if metric.startswith(kind) and metric[len(kind) :].isdigit():
            return int(metric[len(kind) :])
    raise ValueError(f"unknown metric {metric!r}; valid metrics look like {list(METRIC_NAMES)}")
