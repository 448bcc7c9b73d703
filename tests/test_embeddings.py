"""Id embedding techniques: a contract over every registry entry, hand-worked index arithmetic, parameter accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from synthetic import small_data

from study.config import ModelConfig, TrainConfig, TrialConfig
from study.embeddings import (
    BYTES_PER_PARAM,
    EMBEDDINGS,
    QR_COMBINERS,
    HashEmbedding,
    MixedDimensionEmbedding,
    QuotientRemainderEmbedding,
    build_embedding,
    count_params,
    embedding_bytes,
    hash_bucket,
    hash_num_buckets,
    md_blocks,
    md_dims,
    qr_indices,
    qr_num_buckets,
)
from study.train import train

# Every registry entry; quotient-remainder once per combiner.
CASES = [
    pytest.param(name, comb, id=name if name != "quotient_remainder" else f"{name}-{comb}")
    for name in sorted(EMBEDDINGS)
    for comb in (QR_COMBINERS if name == "quotient_remainder" else ("multiply",))
]

VOCAB = 57
DIM = 7  # odd: concat splits it 4 + 3


def _counts(vocab: int = VOCAB, seed: int = 0) -> np.ndarray:
    counts = np.random.default_rng(seed).zipf(1.5, vocab).clip(max=1000).astype(np.int64)
    counts[0] = 0  # the OOV id never occurs in training
    return counts


def _cfg(name: str, combiner: str = "multiply", **kw) -> ModelConfig:
    return ModelConfig(embedding=name, qr_combiner=combiner, **kw)


def _layer(name: str, combiner: str = "multiply", vocab: int = VOCAB, dim: int = DIM, **kw) -> tf.keras.layers.Layer:
    tf.keras.utils.set_random_seed(0)
    layer = build_embedding(name, vocab, dim, _cfg(name, combiner, **kw), _counts(vocab), name="emb")
    layer(tf.zeros([1], tf.int32))  # build
    return layer


def _hand_params(name: str, combiner: str, layer, vocab: int = VOCAB, dim: int = DIM, cfg: ModelConfig | None = None):
    """The parameter count from the technique's formula (see the module docstring of study.embeddings)."""
    cfg = cfg or _cfg(name, combiner)
    if name == "full":
        return vocab * dim
    if name == "quotient_remainder":
        m = max(2, math.ceil(cfg.qr_bucket_fraction * math.ceil(math.sqrt(vocab))))
        q = math.ceil(vocab / m)
        return m * math.ceil(dim / 2) + q * (dim // 2) if combiner == "concat" else (m + q) * dim
    if name == "mixed_dimension":
        sizes = [len(a) for a in np.array_split(np.arange(vocab), cfg.md_num_blocks)]
        assert layer.block_sizes == sizes
        return sum((n + dim) * d for n, d in zip(sizes, layer.block_dims, strict=True))
    if name == "hashing":
        return max(1, math.floor(cfg.hash_bucket_fraction * vocab + 0.5)) * dim
    raise AssertionError(f"no hand formula for {name!r}: add one to this test")


# ------------------------------------------------------------------------------------------ contract


@pytest.mark.parametrize(("name", "combiner"), CASES)
def test_output_shape_and_parameter_accounting(name: str, combiner: str) -> None:
    layer = _layer(name, combiner)
    out = layer(tf.range(VOCAB))
    assert out.shape == (VOCAB, DIM)
    assert out.dtype == tf.float32
    expected = _hand_params(name, combiner, layer)
    assert layer.num_params == count_params(layer) == layer.count_params() == expected
    assert layer.num_bytes == embedding_bytes(layer) == expected * BYTES_PER_PARAM
    assert np.all(np.isfinite(out.numpy()))


@pytest.mark.parametrize(("name", "combiner"), CASES)
def test_gradients_reach_every_variable(name: str, combiner: str) -> None:
    layer = _layer(name, combiner)
    ids = tf.range(VOCAB)
    weights = tf.constant(np.random.default_rng(1).normal(size=(VOCAB, DIM)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(ids) * weights)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert len(grads) == len(layer.trainable_variables) >= 1
    for var, grad in zip(layer.trainable_variables, grads, strict=True):
        assert grad is not None, var.name
        dense = tf.convert_to_tensor(grad).numpy()
        assert dense.shape == tuple(var.shape)
        assert np.any(dense != 0.0), f"no gradient reaches {var.name}"


@pytest.mark.parametrize(("name", "combiner"), CASES)
def test_out_of_range_ids_map_to_id_zero(name: str, combiner: str) -> None:
    layer = _layer(name, combiner)
    out = layer(tf.constant([0, -1, -7, VOCAB, VOCAB + 100, 2**31 - 1], tf.int32)).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[1:], np.repeat(out[:1], 5, axis=0))
    out64 = layer(tf.constant([-(2**40), 2**40, 2**32 + 5], tf.int64)).numpy()  # int64 ids are accepted too
    np.testing.assert_array_equal(out64, np.repeat(out[:1], 3, axis=0))


@pytest.mark.parametrize(("name", "combiner"), CASES)
def test_works_under_xla_with_dense_gradients(name: str, combiner: str) -> None:
    layer = _layer(name, combiner)
    ids = tf.constant(np.r_[np.arange(VOCAB), [-3, VOCAB + 5]].astype(np.int32))

    @tf.function(jit_compile=True)
    def step(ids: tf.Tensor):
        with tf.GradientTape() as tape:
            out = layer(ids)
            loss = tf.reduce_sum(tf.square(out - 1.0))
        grads = tape.gradient(loss, layer.trainable_variables)
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]  # as the trainer
        return out, grads

    out, grads = step(ids)
    np.testing.assert_allclose(out.numpy(), layer(ids).numpy(), rtol=1e-5, atol=1e-7)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


@pytest.mark.parametrize(("name", "combiner"), CASES)
def test_trains_end_to_end(name: str, combiner: str) -> None:
    data = small_data()
    cfg = TrialConfig(
        model=ModelConfig(layers=(16,), embedding_dim=8, embedding=name, qr_combiner=combiner),
        # jit=False: XLA compiling the epoch costs more than the two epochs; test_works_under_xla_with_dense_gradients
        # compiles each technique (forward and gradients) under XLA.
        train=TrainConfig(epochs=2, batch_size=1024, eval_every=1, seed=1, jit=False),
    )
    model, result = train(cfg, data)
    assert all(math.isfinite(h.loss) for h in result.history)
    assert 0.0 <= result.best_metrics["top100"] <= 1.0
    user, item = model.query_tower.user_embedding, model.candidate_tower.item_embedding
    assert result.param_counts["id_embedding_params"] == user.num_params + item.num_params
    expected = _hand_params(name, combiner, user, data.num_users, 8, cfg.model)
    assert user.num_params == expected


def test_every_technique_has_a_hand_formula() -> None:
    # The contract above runs over the registry; this catches an entry without a formula early.
    for name in EMBEDDINGS:
        layer = _layer(name)
        assert _hand_params(name, "multiply", layer) == count_params(layer)


# ------------------------------------------------------------------------------------------ quotient-remainder


def test_qr_index_arithmetic_hand_worked() -> None:
    # vocab 10: ceil(sqrt(10)) = 4 buckets; quotient rows ceil(10 / 4) = 3.
    assert qr_num_buckets(10, 1.0) == 4
    q, r = qr_indices(np.array([7, 9, 0, 3]), 4)
    np.testing.assert_array_equal(q, [1, 2, 0, 0])  # 7 = 1·4 + 3, 9 = 2·4 + 1
    np.testing.assert_array_equal(r, [3, 1, 0, 3])
    layer = QuotientRemainderEmbedding(10, 3, num_buckets=4, combiner="multiply")
    layer(tf.zeros([1], tf.int32))
    assert tuple(layer.remainder_table.shape) == (4, 3)
    assert tuple(layer.quotient_table.shape) == (3, 3)
    layer.remainder_table.assign(np.arange(12, dtype=np.float32).reshape(4, 3) + 1.0)  # R[r] = [3r+1, 3r+2, 3r+3]
    layer.quotient_table.assign(np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3]], np.float32))  # Q[q] = q + 1
    out = layer(tf.constant([7, 9])).numpy()
    np.testing.assert_array_equal(out, [[20, 22, 24], [12, 15, 18]])  # 2·R[3], 3·R[1]


def test_qr_combiners_hand_worked() -> None:
    # vocab 10, 4 buckets, dim 3; id 7 → r = 3, q = 1. R[r] = [w·r + 1, …, w·r + w] (w = its width), Q[q] = q + 1.
    # add: R[3] = [10, 11, 12] + 2. concat: R is ceil(3/2) = 2 wide, Q floor(3/2) = 1: [R[3], Q[1]] = [7, 8, 2].
    for combiner, widths, expected in [("add", (3, 3), [12, 13, 14]), ("concat", (2, 1), [7, 8, 2])]:
        layer = QuotientRemainderEmbedding(10, 3, num_buckets=4, combiner=combiner)
        layer(tf.zeros([1], tf.int32))
        assert (layer.remainder_table.shape[1], layer.quotient_table.shape[1]) == widths
        w, v = widths
        layer.remainder_table.assign(np.arange(4 * w, dtype=np.float32).reshape(4, w) + 1.0)
        layer.quotient_table.assign(np.repeat(np.arange(3, dtype=np.float32)[:, None] + 1.0, v, axis=1))
        np.testing.assert_array_equal(layer(tf.constant([7])).numpy(), [expected])


@pytest.mark.parametrize("vocab", [9743, 611])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_qr_multiply_vectors_are_pairwise_distinct(vocab: int, fraction: float) -> None:
    layer = _layer("quotient_remainder", "multiply", vocab=vocab, dim=32, qr_bucket_fraction=fraction)
    out = layer(tf.range(vocab)).numpy()
    assert len(np.unique(np.round(out, 6), axis=0)) == vocab


@pytest.mark.parametrize("combiner", QR_COMBINERS)
def test_qr_every_combiner_vectors_are_pairwise_distinct(combiner: str) -> None:
    layer = _layer("quotient_remainder", combiner, vocab=611, dim=8)
    assert len(np.unique(np.round(layer(tf.range(611)).numpy(), 6), axis=0)) == 611


def test_qr_parameter_accounting_movielens() -> None:
    # Items: ceil(sqrt(9743)) = ceil(98.71) = 99 buckets, ceil(9743 / 99) = ceil(98.41) = 99 quotient rows.
    assert qr_num_buckets(9743, 1.0) == 99
    assert _layer("full", vocab=9743, dim=32).num_params == 9743 * 32 == 311_776
    assert _layer("quotient_remainder", vocab=9743, dim=32).num_params == (99 + 99) * 32 == 6_336
    assert _layer("quotient_remainder", "concat", vocab=9743, dim=32).num_params == 99 * 16 + 99 * 16 == 3_168
    # fraction 0.5: ceil(0.5 · 99) = 50 buckets, ceil(9743 / 50) = 195 quotient rows.
    assert _layer("quotient_remainder", vocab=9743, dim=32, qr_bucket_fraction=0.5).num_params == (50 + 195) * 32
    # Users: ceil(sqrt(611)) = ceil(24.72) = 25 buckets, ceil(611 / 25) = 25 quotient rows.
    assert _layer("quotient_remainder", vocab=611, dim=32).num_params == (25 + 25) * 32 == 1_600


def test_qr_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="valid combiners"):
        build_embedding("quotient_remainder", 10, 4, _cfg("quotient_remainder", "hadamard"))
    with pytest.raises(ValueError, match="concat"):
        build_embedding("quotient_remainder", 10, 1, _cfg("quotient_remainder", "concat"))
    with pytest.raises(ValueError, match="qr_bucket_fraction"):
        build_embedding("quotient_remainder", 10, 4, _cfg("quotient_remainder", qr_bucket_fraction=0.0))


# ------------------------------------------------------------------------------------------ mixed dimension

HAND_COUNTS = np.array([0, 50, 1, 30, 2, 9, 0, 5])
# Popularity order (count desc, ties by id, id 0 last): 1 (50), 3 (30), 5 (9), 7 (5), 4 (2), 2 (1), 6 (0), 0.
# 2 blocks of 4 ids: block 0 = {1, 3, 5, 7} (rows 0..3 in that order), block 1 = {4, 2, 6, 0}.
# Mean counts: block 0 = 94 / 4 = 23.5, block 1 = 3 / 4 = 0.75; p_1 / p_0 = 0.75 / 23.5 = 0.031915.
# dim 16, alpha 0.5: 16 · sqrt(0.031915) = 2.858 → round 3; min_dim 2 → d = [16, 3]; min_dim 4 → [16, 4].
# alpha 0: 0.0319 ** 0 = 1 → [16, 16]. Params (dim 16, alpha 0.5, min_dim 2): tables 4·16 + 4·3 = 76,
# projections 16·16 + 3·16 = 304 → 380.


def test_md_blocks_hand_worked() -> None:
    block, row = md_blocks(8, 2, HAND_COUNTS)
    np.testing.assert_array_equal(block, [1, 0, 1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(row, [3, 0, 1, 1, 0, 2, 2, 3])
    assert md_dims(block, HAND_COUNTS, 16, 0.5, 2) == [16, 3]
    assert md_dims(block, HAND_COUNTS, 16, 0.5, 4) == [16, 4]
    assert md_dims(block, HAND_COUNTS, 16, 0.0, 2) == [16, 16]
    assert md_dims(block, None, 16, 0.5, 2) == [16, 16]  # no counts: all equal
    # Ties by id; 4 ids into 3 blocks → sizes 2, 1, 1; OOV last even though its count is the largest.
    block, row = md_blocks(4, 3, np.array([99, 5, 5, 5]))
    np.testing.assert_array_equal(block, [2, 0, 0, 1])
    np.testing.assert_array_equal(row, [0, 0, 1, 0])


def test_md_layer_hand_worked() -> None:
    cfg = ModelConfig(embedding="mixed_dimension", md_num_blocks=2, md_alpha=0.5, md_min_dim=2)
    layer = build_embedding("mixed_dimension", 8, 16, cfg, HAND_COUNTS)
    assert isinstance(layer, MixedDimensionEmbedding)
    layer(tf.zeros([1], tf.int32))
    assert layer.block_dims == [16, 3] and layer.block_sizes == [4, 4]
    assert layer.num_params == count_params(layer) == 380
    # id 3 is row 1 of block 0; id 2 is row 1 of block 1.
    out = layer(tf.constant([3, 2])).numpy()
    t0, t1 = layer.tables[0].numpy(), layer.tables[1].numpy()
    p0, p1 = layer.projections[0].numpy(), layer.projections[1].numpy()
    np.testing.assert_allclose(out, [t0[1] @ p0, t1[1] @ p1], rtol=1e-5, atol=1e-7)


def test_md_uses_counts_shape_check() -> None:
    with pytest.raises(ValueError, match="counts"):
        build_embedding("mixed_dimension", 8, 16, ModelConfig(), np.ones(7))


# ------------------------------------------------------------------------------------------ hashing


def test_hash_buckets_hand_worked() -> None:
    assert hash_num_buckets(9743, 0.25) == 2436  # 2435.75 → 2436
    assert hash_num_buckets(10, 0.25) == 3  # 2.5 → 3 (half up)
    assert hash_num_buckets(3, 0.01) == 1  # at least one bucket
    # 1 · 2654435761 mod 2³² = 2654435761 → mod 2436 = 2077; 2 · 2654435761 = 5308871522 → mod 2³² = 1013904226
    # → mod 2436 = 2050; 3 → 3668339987 → 1691.
    np.testing.assert_array_equal(hash_bucket(np.array([0, 1, 2, 3]), 2436), [0, 2077, 2050, 1691])
    layer = HashEmbedding(9743, 4, num_buckets=2436)
    layer(tf.zeros([1], tf.int32))
    ids = np.array([0, 1, 2, 3, 9742])
    np.testing.assert_array_equal(layer(tf.constant(ids)).numpy(), layer.table.numpy()[hash_bucket(ids, 2436)])
