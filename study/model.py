"""The two-tower retrieval model on ``tfrs.tasks.Retrieval``.

Query tower: user-id embedding + time-bucket embedding + normalised time → body → ``[batch, out_dim]``.
Candidate tower: title-id embedding + mean title-word embedding + mean genre embedding → body → ``[batch, out_dim]``.
Candidate features are looked up from constant per-item tables, so a batch is just integer ids.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from study.config import ModelConfig
from study.data import EncodedData
from study.embeddings import BYTES_PER_PARAM, FullEmbedding, build_embedding, count_params
from study.towers import build_body


def masked_mean(embeddings: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Mean of ``embeddings [batch, L, dim]`` over positions where ``ids [batch, L]`` is not 0 (padding).

    Rows with no token give a zero vector (Keras' masked pooling would divide by zero).
    """
    mask = tf.cast(ids > 0, embeddings.dtype)[..., None]
    total = tf.reduce_sum(embeddings * mask, axis=1)
    count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
    return total / count


class QueryTower(tf.keras.layers.Layer):
    """``{"user": [batch], "time_bucket": [batch], "time_norm": [batch]} -> [batch, out_dim]``."""

    def __init__(self, cfg: ModelConfig, data: EncodedData, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cfg = cfg
        self.user_embedding = build_embedding(
            cfg.embedding, data.num_users, cfg.embedding_dim, cfg, data.user_train_counts, name="user_embedding"
        )
        self.time_embedding = (
            FullEmbedding(data.num_time_buckets, cfg.embedding_dim, name="time_embedding")
            if cfg.use_timestamp
            else None
        )
        self.body = build_body(cfg)

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        parts = [self.user_embedding(features["user"])]
        if self.time_embedding is not None:
            parts.append(self.time_embedding(features["time_bucket"]))
            parts.append(tf.cast(features["time_norm"], tf.float32)[:, None])
        out = self.body(tf.concat(parts, axis=-1), training=training)
        return tf.math.l2_normalize(out, axis=-1) if self.cfg.normalize else out


class CandidateTower(tf.keras.layers.Layer):
    """``items [batch] (candidate rows) -> [batch, out_dim]``."""

    def __init__(self, cfg: ModelConfig, data: EncodedData, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cfg = cfg
        self.item_embedding = build_embedding(
            cfg.embedding, data.num_items, cfg.embedding_dim, cfg, data.item_train_counts, name="item_embedding"
        )
        self.title_tokens = tf.constant(data.title_tokens, dtype=tf.int32) if cfg.use_title_words else None
        self.word_embedding = (
            FullEmbedding(len(data.token_vocab), cfg.embedding_dim, name="word_embedding")
            if cfg.use_title_words
            else None
        )
        use_genres = cfg.use_genres and data.has_genres
        self.genres = tf.constant(data.genres, dtype=tf.int32) if use_genres else None
        self.genre_embedding = (
            FullEmbedding(len(data.genre_vocab), cfg.embedding_dim, name="genre_embedding") if use_genres else None
        )
        self.body = build_body(cfg)

    def call(self, items: tf.Tensor, training: bool = False) -> tf.Tensor:
        parts = [self.item_embedding(items)]
        if self.word_embedding is not None:
            tokens = tf.gather(self.title_tokens, items)
            parts.append(masked_mean(self.word_embedding(tokens), tokens))
        if self.genre_embedding is not None:
            genres = tf.gather(self.genres, items)
            parts.append(masked_mean(self.genre_embedding(genres), genres))
        out = self.body(tf.concat(parts, axis=-1), training=training)
        return tf.math.l2_normalize(out, axis=-1) if self.cfg.normalize else out


def in_batch_softmax_loss(query: tf.Tensor, candidate: tf.Tensor, temperature: float | None = None) -> tf.Tensor:
    """The ``tfrs.tasks.Retrieval`` loss (softmax over in-batch candidates, summed over the batch).

    ``sum_i logsumexp_j(q_i · c_j / T) - q_i · c_i / T``, identical to Retrieval's
    ``CategoricalCrossentropy(from_logits=True, reduction=SUM)`` with identity labels, but cheaper.

    Args:
        query: ``[batch, dim]``.
        candidate: ``[batch, dim]``; row i is the positive of query row i.
        temperature: divides the logits when set.

    Returns:
        A scalar.
    """
    scores = tf.matmul(query, candidate, transpose_b=True)
    if temperature:
        scores = scores / temperature
    return tf.reduce_sum(tf.reduce_logsumexp(scores, axis=1) - tf.linalg.diag_part(scores))


def folded_softmax_loss(
    query: tf.Tensor,
    unique_candidates: tf.Tensor,
    log_counts: tf.Tensor,
    positions: tf.Tensor,
    temperature: float | None = None,
) -> tf.Tensor:
    """:func:`in_batch_softmax_loss` with duplicate in-batch candidates folded into one column each.

    A batch of B interactions often holds the same item several times (≈1400 distinct items per 2048 rows on
    MovieLens). Scoring each query against the U distinct items and adding ``log(count)`` to their logits gives the
    same loss and the same gradients as scoring against all B columns (``sum_j exp(s_ij) = sum_u count_u exp(s_iu)``),
    with a ``[B, U]`` instead of a ``[B, B]`` logit matrix and the candidate tower run on U rows.

    Args:
        query: ``[B, dim]``.
        unique_candidates: ``[U, dim]``, the tower output for the distinct items of the batch (padded rows allowed).
        log_counts: ``[U]``, ``log(count)`` of each distinct item; padded rows carry a large negative number.
        positions: int ``[B]``, the column of row i's own item in ``unique_candidates``.
        temperature: divides the scores when set.

    Returns:
        A scalar (the sum over the batch, as ``tfrs.tasks.Retrieval``).
    """
    scores = tf.matmul(query, unique_candidates, transpose_b=True)  # [B, U]
    if temperature:
        scores = scores / temperature
    positive = tf.gather(scores, positions, axis=1, batch_dims=1)  # [B]
    return tf.reduce_sum(tf.reduce_logsumexp(scores + log_counts[None, :], axis=1) - positive)


class TwoTowerModel(tfrs.models.Model):
    """Query and candidate towers trained with ``tfrs.tasks.Retrieval`` (in-batch softmax).

    ``compute_loss`` is the TFRS hook (used by ``model.fit``); the fast trainer in :mod:`study.train` computes the
    same loss with :func:`in_batch_softmax_loss` inside one compiled epoch.
    """

    def __init__(self, cfg: ModelConfig, data: EncodedData) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = data.num_items
        self.query_tower = QueryTower(cfg, data, name="query_tower")
        self.candidate_tower = CandidateTower(cfg, data, name="candidate_tower")
        self.temperature = cfg.temperature if (cfg.normalize or cfg.temperature != 1.0) else None
        self.task = tfrs.tasks.Retrieval(temperature=self.temperature)
        # Build every weight now so counts and optimizer slots exist before training.
        self.query_tower(
            {"user": tf.zeros([1], tf.int32), "time_bucket": tf.zeros([1], tf.int32), "time_norm": tf.zeros([1])}
        )
        self.candidate_tower(tf.zeros([1], tf.int32))

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query = self.query_tower(features, training=training)
        candidate = self.candidate_tower(features["item"], training=training)
        return self.task(query, candidate, compute_metrics=not training)

    def batch_loss(self, features: dict[str, tf.Tensor], training: bool = True) -> tf.Tensor:
        """The fast trainer's loss: same value as ``compute_loss`` (see :func:`in_batch_softmax_loss`)."""
        query = self.query_tower(features, training=training)
        candidate = self.candidate_tower(features["item"], training=training)
        return in_batch_softmax_loss(query, candidate, self.temperature)

    def folded_batch_loss(
        self, features: dict[str, tf.Tensor], unique_items: tf.Tensor, log_counts: tf.Tensor, positions: tf.Tensor
    ) -> tf.Tensor:
        """Same value and gradients as :meth:`batch_loss`, with duplicate items folded (:func:`folded_softmax_loss`)."""
        query = self.query_tower(features, training=True)
        candidates = self.candidate_tower(unique_items, training=True)
        return folded_softmax_loss(query, candidates, log_counts, positions, self.temperature)

    def param_counts(self) -> dict[str, int]:
        """Trainable parameters: ``total_params``, ``embedding_params`` (id + feature tables), ``embedding_bytes``."""
        tables = [self.query_tower.user_embedding, self.candidate_tower.item_embedding]
        tables += [
            t
            for t in (
                self.query_tower.time_embedding,
                self.candidate_tower.word_embedding,
                self.candidate_tower.genre_embedding,
            )
            if t is not None
        ]
        embedding = sum(count_params(t) for t in tables)
        total = int(sum(int(np.prod(v.shape)) for v in self.trainable_variables))
        ids = count_params(self.query_tower.user_embedding) + count_params(self.candidate_tower.item_embedding)
        return {
            "total_params": total,
            "embedding_params": int(embedding),
            "embedding_bytes": int(embedding) * BYTES_PER_PARAM,
            "id_embedding_params": ids,
            "id_embedding_bytes": ids * BYTES_PER_PARAM,
        }
