"""Embedding techniques for id features, in one ``EMBEDDINGS`` registry, with parameter accounting.

Every entry builds a Keras layer mapping integer ids ``[batch]`` to vectors ``[batch, dim]``. Ids outside
``[0, vocab_size)`` must not crash: every layer maps them to id 0 (the out-of-vocabulary id) first.

Techniques (``ModelConfig.embedding``):

* ``full``: one ``vocab × dim`` table.
* ``quotient_remainder`` (Shi et al. 2020, "Compositional Embeddings Using Complementary Partitions"):
  ``m = max(2, ceil(qr_bucket_fraction * ceil(sqrt(vocab))))`` buckets; id ``i`` → remainder ``i % m`` (table of
  ``m`` rows) and quotient ``i // m`` (table of ``ceil(vocab / m)`` rows); the two rows are combined by
  ``qr_combiner`` (``multiply``, ``add`` or ``concat``). Distinct ids always get distinct ``(q, r)`` pairs.
* ``mixed_dimension`` (Ginart et al. 2021, "Mixed Dimension Embeddings with Application to Memory-Efficient
  Recommendation Systems"): ids in ``md_num_blocks`` popularity blocks (from the training counts), block ``b`` has a
  ``n_b × d_b`` table and a learned ``d_b × dim`` projection; popular blocks get larger ``d_b``.
* ``hashing``: ``max(1, round(hash_bucket_fraction * vocab))`` buckets, bucket of id ``i`` =
  ``((i * 2654435761) mod 2**32) mod buckets`` (Knuth's multiplicative hash; collisions allowed).

Every layer has ``num_params`` (its exact trainable parameter count, known before it is built, equal to
``count_params(layer)`` once built) and ``num_bytes`` (float32). Everything works under
``tf.function(jit_compile=True)``: static shapes, precomputed int32 index constants, no ``tf.unique``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from study.config import ModelConfig
from study.names import QR_COMBINERS

BYTES_PER_PARAM = 4  # float32

EmbeddingFactory = Callable[..., tf.keras.layers.Layer]

HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative-hash constant, floor(2**32 / golden ratio), odd
HASH_MODULUS = 2**32

# Keras' "uniform" initializer (the full table's): U(-0.05, 0.05), variance 0.05**2 / 3.
_UNIFORM_LIMIT = 0.05


def _clip_ids(ids: tf.Tensor, vocab_size: int) -> tf.Tensor:
    """``[batch] -> [batch]`` int32 ids with every id outside ``[0, vocab_size)`` replaced by 0 (the OOV id)."""
    ids = tf.convert_to_tensor(ids)
    if ids.dtype != tf.int32:  # compare before narrowing: an int64 id of 2**32 + 5 is out of range, not 5
        ids = tf.where((ids < 0) | (ids >= vocab_size), tf.zeros_like(ids), ids)
    ids = tf.cast(ids, tf.int32)
    return tf.where((ids < 0) | (ids >= vocab_size), tf.zeros_like(ids), ids)


class _CountedEmbedding(tf.keras.layers.Layer):
    """Base of the id embedding layers: ``num_params`` (exact, from the shapes) and ``num_bytes``."""

    vocab_size: int
    dim: int

    def table_shapes(self) -> list[tuple[int, int]]:
        """Shapes of the layer's trainable variables (overridden)."""
        raise NotImplementedError

    @property
    def num_params(self) -> int:
        """Exact number of trainable parameters (equal to ``count_params(self)`` once built)."""
        return int(sum(rows * cols for rows, cols in self.table_shapes()))

    @property
    def num_bytes(self) -> int:
        """Bytes of the trainable parameters as float32."""
        return self.num_params * BYTES_PER_PARAM


class FullEmbedding(_CountedEmbedding):
    """One ``vocab_size × dim`` table (the TFRS tutorial's ``tf.keras.layers.Embedding``).

    ``[batch] int -> [batch, dim]``. Out-of-range ids map to row 0 (the OOV row). Parameters: ``vocab_size * dim``.
    """

    def __init__(self, vocab_size: int, dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)

    def table_shapes(self) -> list[tuple[int, int]]:
        return [(self.vocab_size, self.dim)]

    def build(self, input_shape) -> None:
        self.table = self.add_weight(
            name="table", shape=(self.vocab_size, self.dim), initializer="uniform", trainable=True
        )
        super().build(input_shape)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.table, _clip_ids(ids, self.vocab_size))


# ---------------------------------------------------------------------------------------- quotient-remainder


def qr_num_buckets(vocab_size: int, fraction: float) -> int:
    """Buckets (remainder-table rows) of a quotient-remainder embedding.

    ``max(2, ceil(fraction * ceil(sqrt(vocab_size))))``; e.g. vocab 9743, fraction 1.0 → ``ceil(98.7) = 99``.
    """
    if fraction <= 0:
        raise ValueError(f"qr_bucket_fraction: must be > 0, but got {fraction}")
    return max(2, math.ceil(fraction * math.ceil(math.sqrt(vocab_size))))


def qr_indices(ids: np.ndarray, num_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """``(quotient, remainder) = (ids // num_buckets, ids % num_buckets)`` for in-range ids ``[n]``."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids // num_buckets, ids % num_buckets


class QuotientRemainderEmbedding(_CountedEmbedding):
    """Quotient-remainder compositional embedding (Shi et al. 2020).

    ``[batch] int -> [batch, dim]``. With ``m = num_buckets``, id ``i`` (out-of-range ids → 0) looks up row
    ``i % m`` of the remainder table ``R`` (``m`` rows) and row ``i // m`` of the quotient table ``Q``
    (``ceil(vocab_size / m)`` rows). ``(i // m, i % m)`` determines ``i``, so distinct ids get distinct row pairs.

    Combiners:

    * ``multiply``: ``R[r] * Q[q]``, both tables ``dim`` wide; params ``(m + ceil(V / m)) * dim``.
    * ``add``: ``R[r] + Q[q]``; same params.
    * ``concat``: ``[R[r], Q[q]]`` with ``R`` ``ceil(dim / 2)`` and ``Q`` ``floor(dim / 2)`` wide (needs dim >= 2);
      params ``m * ceil(dim / 2) + ceil(V / m) * floor(dim / 2)``.

    Initialisation keeps the output's variance equal to the full table's (``U(-0.05, 0.05)``, variance ``s = 0.05² /
    3``), and is random in both tables (no all-ones table, so distinct ``(q, r)`` pairs give distinct vectors):
    ``multiply`` draws both tables from ``U(-a, a)`` with ``(a² / 3)² = s``, ``add`` from ``U(-0.05 / √2, 0.05 / √2)``,
    ``concat`` from ``U(-0.05, 0.05)``.
    """

    def __init__(self, vocab_size: int, dim: int, num_buckets: int, combiner: str = "multiply", **kwargs) -> None:
        super().__init__(**kwargs)
        if combiner not in QR_COMBINERS:
            raise ValueError(f"unknown qr_combiner {combiner!r}; valid combiners are {list(QR_COMBINERS)}")
        if combiner == "concat" and dim < 2:
            raise ValueError(f"qr_combiner 'concat' needs embedding_dim >= 2, but got {dim}")
        if num_buckets < 1:
            raise ValueError(f"num_buckets: must be >= 1, but got {num_buckets}")
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)
        self.num_buckets = int(num_buckets)
        self.num_quotients = max(1, -(-self.vocab_size // self.num_buckets))  # ceil(V / m)
        self.combiner = combiner

    def table_shapes(self) -> list[tuple[int, int]]:
        if self.combiner == "concat":
            return [(self.num_buckets, -(-self.dim // 2)), (self.num_quotients, self.dim // 2)]
        return [(self.num_buckets, self.dim), (self.num_quotients, self.dim)]

    def _limit(self) -> float:
        if self.combiner == "multiply":
            return math.sqrt(math.sqrt(3.0) * _UNIFORM_LIMIT)  # (a²/3)² = 0.05²/3  →  a = sqrt(0.05·√3) ≈ 0.294
        if self.combiner == "add":
            return _UNIFORM_LIMIT / math.sqrt(2.0)
        return _UNIFORM_LIMIT

    def build(self, input_shape) -> None:
        limit = self._limit()
        (r_rows, r_dim), (q_rows, q_dim) = self.table_shapes()
        # One initializer instance per table: an unseeded instance called twice returns the same values, which
        # would make the tables equal and (q, r) / (r, q) collide under multiply and add.
        self.remainder_table = self.add_weight(
            name="remainder_table",
            shape=(r_rows, r_dim),
            initializer=tf.keras.initializers.RandomUniform(-limit, limit),
        )
        self.quotient_table = self.add_weight(
            name="quotient_table", shape=(q_rows, q_dim), initializer=tf.keras.initializers.RandomUniform(-limit, limit)
        )
        super().build(input_shape)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        ids = _clip_ids(ids, self.vocab_size)
        remainder = tf.gather(self.remainder_table, ids % self.num_buckets)
        quotient = tf.gather(self.quotient_table, ids // self.num_buckets)
        if self.combiner == "multiply":
            return remainder * quotient
        if self.combiner == "add":
            return remainder + quotient
        return tf.concat([remainder, quotient], axis=-1)


# ---------------------------------------------------------------------------------------- mixed dimension


def md_blocks(vocab_size: int, num_blocks: int, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Popularity blocks of a mixed-dimension embedding.

    Ids are ordered by training count, most frequent first, ties by id, with id 0 (OOV) forced last; the order is
    cut into ``min(num_blocks, vocab_size)`` consecutive blocks of equal size, the first ``vocab_size % B`` blocks
    one id larger (``np.array_split``). ``counts=None`` means all counts are equal.

    Args:
        vocab_size: number of ids.
        num_blocks: requested number of blocks (>= 1).
        counts: int ``[vocab_size]`` training counts, or None.

    Returns:
        ``(block, row)``: int32 ``[vocab_size]`` each: the block of every id (0 = most popular) and its row in that
        block's table (rows follow the popularity order).
    """
    if num_blocks < 1:
        raise ValueError(f"md_num_blocks: must be >= 1, but got {num_blocks}")
    counts = np.zeros(vocab_size, np.int64) if counts is None else np.asarray(counts)
    if counts.shape != (vocab_size,):
        raise ValueError(f"counts: must have shape ({vocab_size},), but got {counts.shape}")
    ids = np.arange(vocab_size)
    is_oov = ids == 0
    order = np.lexsort((ids, -counts.astype(np.float64), is_oov))  # last key is primary: OOV last, then -count, id
    block = np.zeros(vocab_size, np.int32)
    row = np.zeros(vocab_size, np.int32)
    for b, members in enumerate(np.array_split(order, min(num_blocks, vocab_size))):
        block[members] = b
        row[members] = np.arange(len(members))
    return block, row


def md_dims(block: np.ndarray, counts: np.ndarray | None, dim: int, alpha: float, min_dim: int) -> list[int]:
    """Dimension of each block: ``d_b = max(min_dim', min(dim, round(dim * (p_b / p_0) ** alpha)))``.

    ``p_b`` is block ``b``'s mean popularity (mean count share of its ids); ``round`` is half-up;
    ``min_dim' = min(min_dim, dim)``. ``alpha = 0`` gives ``dim`` everywhere (``0 ** 0 = 1``); when ``counts`` is
    None or all zero, every block gets ``dim``. A block with ``p_b = 0`` gets ``min_dim'`` when ``alpha > 0``.
    """
    if alpha < 0:
        raise ValueError(f"md_alpha: must be >= 0, but got {alpha}")
    num_blocks = int(block.max()) + 1
    floor_dim = max(1, min(int(min_dim), dim))
    if counts is None or float(np.sum(counts)) <= 0:
        return [dim] * num_blocks
    share = np.asarray(counts, np.float64) / float(np.sum(counts))
    mean = [float(share[block == b].mean()) for b in range(num_blocks)]
    dims = []
    for p in mean:
        ratio = p / mean[0] if mean[0] > 0 else 1.0
        dims.append(max(floor_dim, min(dim, int(math.floor(dim * ratio**alpha + 0.5)))))
    return dims


class MixedDimensionEmbedding(_CountedEmbedding):
    """Mixed-dimension embedding (Ginart et al. 2021): popular ids get wider tables.

    ``[batch] int -> [batch, dim]``. Id ``i`` (out-of-range ids → 0) is in block ``block[i]`` at row ``row[i]``
    (see :func:`md_blocks`); the output is ``T_b[row[i]] @ P_b`` with ``T_b`` the ``n_b × d_b`` table and ``P_b`` the
    ``d_b × dim`` projection of its block (every block is projected, even when ``d_b == dim``). Params
    ``sum_b (n_b + dim) * d_b``.

    Under XLA: every block's table is gathered with the row clipped into range, projected, and the results summed
    under the block masks (static shapes; ``num_blocks`` gathers and matmuls per call).

    Init: tables ``U(-0.05, 0.05)`` (the full table's), projections Glorot-uniform.
    """

    def __init__(self, vocab_size: int, dim: int, block: np.ndarray, row: np.ndarray, dims: list[int], **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)
        self.block_dims = [int(d) for d in dims]
        self.block_sizes = [int(n) for n in np.bincount(block, minlength=len(dims))]
        self._block = np.asarray(block, np.int32)
        self._row = np.asarray(row, np.int32)

    @property
    def num_blocks(self) -> int:
        return len(self.block_dims)

    @property
    def block_of(self) -> np.ndarray:
        """int32 ``[vocab_size]``: the block of every id."""
        return self._block

    @property
    def row_of(self) -> np.ndarray:
        """int32 ``[vocab_size]``: the row of every id in its block's table."""
        return self._row

    def table_shapes(self) -> list[tuple[int, int]]:
        tables = [(n, d) for n, d in zip(self.block_sizes, self.block_dims, strict=True)]
        projections = [(d, self.dim) for d in self.block_dims]
        return tables + projections

    def build(self, input_shape) -> None:
        self.tables = [
            self.add_weight(name=f"table_{b}", shape=(n, d), initializer="uniform")
            for b, (n, d) in enumerate(zip(self.block_sizes, self.block_dims, strict=True))
        ]
        self.projections = [
            self.add_weight(name=f"projection_{b}", shape=(d, self.dim), initializer="glorot_uniform")
            for b, d in enumerate(self.block_dims)
        ]
        super().build(input_shape)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        ids = _clip_ids(ids, self.vocab_size)
        # Constants made per call (per trace under tf.function), so a layer first built inside a graph is safe.
        block = tf.gather(tf.constant(self._block, tf.int32), ids)
        row = tf.gather(tf.constant(self._row, tf.int32), ids)
        out = None
        for b, (table, projection) in enumerate(zip(self.tables, self.projections, strict=True)):
            mask = tf.cast(tf.equal(block, b), table.dtype)[:, None]
            rows = tf.clip_by_value(row, 0, self.block_sizes[b] - 1)
            part = tf.matmul(tf.gather(table, rows), projection) * mask
            out = part if out is None else out + part
        return out


# ---------------------------------------------------------------------------------------- hashing


def hash_num_buckets(vocab_size: int, fraction: float) -> int:
    """``max(1, round(fraction * vocab_size))`` (half-up), e.g. 9743 × 0.25 = 2435.75 → 2436."""
    if fraction <= 0:
        raise ValueError(f"hash_bucket_fraction: must be > 0, but got {fraction}")
    return max(1, int(math.floor(fraction * vocab_size + 0.5)))


def hash_bucket(ids: np.ndarray, num_buckets: int) -> np.ndarray:
    """``((i * 2654435761) mod 2**32) mod num_buckets`` in int64 for in-range (non-negative, < 2**31) ids."""
    ids = np.asarray(ids, np.int64)
    return (ids * HASH_MULTIPLIER) % HASH_MODULUS % num_buckets


class HashEmbedding(_CountedEmbedding):
    """Hashing trick: one ``num_buckets × dim`` table shared by colliding ids.

    ``[batch] int -> [batch, dim]``: row ``((i * 2654435761) mod 2**32) mod num_buckets`` of the table, computed in
    int64 (``i < 2**31`` so the product fits); out-of-range ids → 0 (bucket 0). Params ``num_buckets * dim``.
    """

    def __init__(self, vocab_size: int, dim: int, num_buckets: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_buckets < 1:
            raise ValueError(f"num_buckets: must be >= 1, but got {num_buckets}")
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)
        self.num_buckets = int(num_buckets)

    def table_shapes(self) -> list[tuple[int, int]]:
        return [(self.num_buckets, self.dim)]

    def build(self, input_shape) -> None:
        self.table = self.add_weight(name="table", shape=(self.num_buckets, self.dim), initializer="uniform")
        super().build(input_shape)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        ids = tf.cast(_clip_ids(ids, self.vocab_size), tf.int64)
        bucket = tf.math.floormod(tf.math.floormod(ids * HASH_MULTIPLIER, HASH_MODULUS), self.num_buckets)
        return tf.gather(self.table, tf.cast(bucket, tf.int32))


# ---------------------------------------------------------------------------------------- registry


def _full(vocab_size: int, dim: int, cfg: ModelConfig, counts: np.ndarray | None = None, name: str = "emb"):
    return FullEmbedding(vocab_size, dim, name=name)


def _quotient_remainder(
    vocab_size: int, dim: int, cfg: ModelConfig, counts: np.ndarray | None = None, name: str = "emb"
):
    buckets = qr_num_buckets(vocab_size, cfg.qr_bucket_fraction)
    return QuotientRemainderEmbedding(vocab_size, dim, buckets, cfg.qr_combiner, name=name)


def _mixed_dimension(vocab_size: int, dim: int, cfg: ModelConfig, counts: np.ndarray | None = None, name: str = "emb"):
    block, row = md_blocks(vocab_size, cfg.md_num_blocks, counts)
    dims = md_dims(block, counts, dim, cfg.md_alpha, cfg.md_min_dim)
    return MixedDimensionEmbedding(vocab_size, dim, block, row, dims, name=name)


def _hashing(vocab_size: int, dim: int, cfg: ModelConfig, counts: np.ndarray | None = None, name: str = "emb"):
    return HashEmbedding(vocab_size, dim, hash_num_buckets(vocab_size, cfg.hash_bucket_fraction), name=name)


EMBEDDINGS: dict[str, EmbeddingFactory] = {
    "full": _full,
    "quotient_remainder": _quotient_remainder,
    "mixed_dimension": _mixed_dimension,
    "hashing": _hashing,
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
        ValueError: unknown technique (the message lists the valid ones), or invalid technique options.
    """
    try:
        factory = EMBEDDINGS[technique]
    except KeyError:
        raise ValueError(f"unknown embedding {technique!r}; valid embeddings are {sorted(EMBEDDINGS)}") from None
    return factory(vocab_size, dim, cfg, counts, name)


def count_params(layer: tf.keras.layers.Layer) -> int:
    """Trainable parameters of a built embedding layer."""
    return int(sum(int(np.prod(v.shape)) for v in layer.trainable_variables))


def embedding_bytes(layer: tf.keras.layers.Layer) -> int:
    """Bytes (float32) of a built embedding layer's trainable parameters."""
    return count_params(layer) * BYTES_PER_PARAM
