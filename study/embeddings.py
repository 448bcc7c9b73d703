"""Embedding techniques for id features, in one ``EMBEDDINGS`` registry, with parameter accounting.

Every entry builds a Keras layer mapping integer ids ``[batch]`` to vectors ``[batch, dim]``. Ids outside
``[0, vocab_size)`` must not crash (they are clipped onto the out-of-vocabulary row 0 or hashed).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from study.config import ModelConfig

BYTES_PER_PARAM = 4  # float32

EmbeddingFactory = Callable[..., tf.keras.layers.Layer]


class FullEmbedding(tf.keras.layers.Layer):
    """One ``vocab_size × dim`` table (the TFRS tutorial's ``tf.keras.layers.Embedding``).

    ``[batch] int -> [batch, dim]``. Out-of-range ids map to row 0 (the OOV row).
    """

    def __init__(self, vocab_size: int, dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)

    def build(self, input_shape) -> None:
        self.table = self.add_weight(
            name="table", shape=(self.vocab_size, self.dim), initializer="uniform", trainable=True
        )
        super().build(input_shape)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        ids = tf.cast(ids, tf.int32)
        ids = tf.where((ids < 0) | (ids >= self.vocab_size), tf.zeros_like(ids), ids)
        return tf.gather(self.table, ids)


def _full(vocab_size: int, dim: int, cfg: ModelConfig, counts: np.ndarray | None = None, name: str = "emb"):
    return FullEmbedding(vocab_size, dim, name=name)


EMBEDDINGS: dict[str, EmbeddingFactory] = {
    "full": _full,
}


def build_embedding(
    technique: str,
    vocab_size: int,
    dim: int,
    cfg: ModelConfig,
    counts: np.ndarray | None = None,
    name: str = "emb",
) -> tf.keras.layers.Layer:
    """Build an id embedding layer with the named technique.

    Args:
        technique: a key of ``EMBEDDINGS``.
        vocab_size: number of ids (rows of a full table).
        dim: output size of the embedding.
        cfg: the model config (technique-specific options).
        counts: int [vocab_size], frequency of each id in the training split (mixed-dimension uses it).
        name: layer name.

    Raises:
        ValueError: unknown technique (the message lists the valid ones).
    """
    try:
        factory = EMBEDDINGS[technique]
    except KeyError:
        raise ValueError(f"unknown embedding {technique!r}; valid embeddings are {sorted(EMBEDDINGS)}") from None
    return factory(vocab_size, dim, cfg, counts, name)


def count_params(layer: tf.keras.layers.Layer) -> int:
    """Trainable parameters of a built embedding layer."""
    return int(sum(int(np.prod(v.shape)) for v in layer.trainable_variables))
