"""The two-tower retrieval model on ``tfrs.tasks.Retrieval``.

Query tower: user-id embedding + time-bucket embedding + normalised time → body → ``[batch, out_dim]``.
Candidate tower: title-id embedding + mean title-word embedding + mean genre embedding → body → ``[batch, out_dim]``.
Candidate features are looked up from constant per-item tables, so a batch is just integer ids.
An optional rating head (``ModelConfig.rating_head``) predicts the rating from both towers' outputs, the TFRS
multi-task recipe: the towers are shared by ``tfrs.tasks.Retrieval`` and ``tfrs.tasks.Ranking``.
"""

from __future__ import annotations

import math

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


class RatingHead(tf.keras.layers.Layer):
    """``(query [batch, dim], candidate [batch, dim]) -> predicted rating [batch]``.

    The TFRS multi-task tutorial's rating model: the two embeddings concatenated, ReLU layers of ``widths``
    (256, 128 there), one linear unit.
    """

    def __init__(self, widths: tuple[int, ...], **kwargs) -> None:
        super().__init__(**kwargs)
        self.hidden = [tf.keras.layers.Dense(w, activation="relu", name=f"dense_{i}") for i, w in enumerate(widths)]
        self.out = tf.keras.layers.Dense(1, name="rating")

    def call(self, query: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
        x = tf.concat([query, candidate], axis=-1)
        for layer in self.hidden:
            x = layer(x)
        return tf.squeeze(self.out(x), axis=-1)


def rating_loss(predictions: tf.Tensor, ratings: tf.Tensor) -> tf.Tensor:
    """Mean squared error over the batch: ``tfrs.tasks.Ranking(loss=MeanSquaredError())``'s value (its reduction is
    the mean over the batch, while the retrieval loss is a sum).

    Args:
        predictions: ``[batch]``.
        ratings: ``[batch]``.
    """
    return tf.reduce_mean(tf.square(tf.cast(ratings, predictions.dtype) - predictions))


#: Offset of a column that holds no negative (as the padding of the folded unique axis): its ``exp`` is exactly 0,
#: like TFRS's ``MIN_FLOAT`` on accidental hits.
_MASKED = -1e9


def _sampling_correction(scores: tf.Tensor, candidate_sampling_probability: tf.Tensor | None) -> tf.Tensor:
    """``scores - log(clip(p, 1e-6, 1))`` per column, as ``tfrs.layers.loss.SamplingProbablityCorrection``."""
    if candidate_sampling_probability is None:
        return scores
    p = tf.cast(candidate_sampling_probability, scores.dtype)
    return scores - tf.math.log(tf.clip_by_value(p, 1e-6, 1.0))[None, :]


def _softmax_over_negatives(
    scores: tf.Tensor, positions: tf.Tensor, negatives: tf.Tensor, num_hard_negatives: int | None
) -> tf.Tensor:
    """``sum_i logsumexp(s_i,pos_i, {s_ic + log n_ic}) - s_i,pos_i``: the general form of both losses below.

    Args:
        scores: ``[B, C]`` final logits.
        positions: int ``[B]``, the column of row i's positive.
        negatives: float ``[B, C]``, ``n_ic``: how many in-batch negatives of row i column c stands for (1 or 0 in
            the plain batch, the item's count, less the positive itself, when duplicates are folded; 0 = none).
        num_hard_negatives: keep only the N highest-scoring negatives of each row (counted with multiplicity).

    Hard negatives as ``tfrs.layers.loss.HardNegativeMining``: it takes the top ``N + 1`` columns of
    ``logits + labels * MAX_FLOAT``, i.e. the positive plus the N highest negatives (all of them when fewer). Here the
    columns holding negatives are ranked by score (``top_k`` over at most N columns: each holds at least one
    negative), and each keeps ``clip(N - negatives in higher-ranked columns, 0, n_ic)`` of its negatives. Among tied
    scores which copy is kept does not change the value, so this equals TFRS's loss exactly.
    """
    positive = tf.gather(scores, positions, axis=1, batch_dims=1)  # [B]
    if num_hard_negatives is not None:
        width = scores.shape[1]
        k = min(num_hard_negatives, width) if width is not None else tf.minimum(num_hard_negatives, tf.shape(scores)[1])
        ranked = tf.where(negatives > 0, scores, tf.fill(tf.shape(scores), tf.constant(-math.inf, scores.dtype)))
        _, columns = tf.math.top_k(tf.stop_gradient(ranked), k=k, sorted=True)  # [B, k], highest first
        counts = tf.gather(negatives, columns, batch_dims=1)
        before = tf.math.cumsum(counts, axis=1, exclusive=True)
        negatives = tf.clip_by_value(float(num_hard_negatives) - before, 0.0, counts)
        scores = tf.gather(scores, columns, batch_dims=1)
    log_negatives = tf.where(negatives > 0, tf.math.log(tf.maximum(negatives, 1.0)), _MASKED)
    logits = tf.concat([positive[:, None], scores + log_negatives], axis=1)
    return tf.reduce_sum(tf.reduce_logsumexp(logits, axis=1) - positive)


def in_batch_softmax_loss(
    query: tf.Tensor,
    candidate: tf.Tensor,
    temperature: float | None = None,
    *,
    candidate_sampling_probability: tf.Tensor | None = None,
    candidate_ids: tf.Tensor | None = None,
    num_hard_negatives: int | None = None,
) -> tf.Tensor:
    """The ``tfrs.tasks.Retrieval`` loss (softmax over in-batch candidates, summed over the batch).

    ``sum_i logsumexp_j(q_i · c_j / T) - q_i · c_i / T``, identical to Retrieval's
    ``CategoricalCrossentropy(from_logits=True, reduction=SUM)`` with identity labels, but cheaper.

    Args:
        query: ``[batch, dim]``.
        candidate: ``[batch, dim]``; row i is the positive of query row i.
        temperature: divides the logits when set.
        candidate_sampling_probability: ``[batch]``; when given, ``log(clip(p, 1e-6, 1))`` is subtracted from each
            column's logits (Retrieval's argument of that name).
        candidate_ids: ``[batch]``; when given, accidental hits are removed: columns holding row i's own item, other
            than column i, count as nothing (``Retrieval(remove_accidental_hits=True)`` with these ids).
        num_hard_negatives: keep the N highest-scoring negatives of each row (``Retrieval(num_hard_negatives=N)``).

    Returns:
        A scalar.
    """
    scores = tf.matmul(query, candidate, transpose_b=True)
    if temperature:
        scores = scores / temperature
    scores = _sampling_correction(scores, candidate_sampling_probability)
    if candidate_ids is None and num_hard_negatives is None:
        return tf.reduce_sum(tf.reduce_logsumexp(scores, axis=1) - tf.linalg.diag_part(scores))
    size = tf.shape(scores)[0]
    eye = tf.eye(size, dtype=scores.dtype)
    if candidate_ids is None:
        negatives = 1.0 - eye
    else:
        negatives = tf.cast(tf.not_equal(candidate_ids[:, None], candidate_ids[None, :]), scores.dtype)
    return _softmax_over_negatives(scores, tf.range(size), negatives, num_hard_negatives)


def folded_softmax_loss(
    query: tf.Tensor,
    unique_candidates: tf.Tensor,
    log_counts: tf.Tensor,
    positions: tf.Tensor,
    temperature: float | None = None,
    *,
    candidate_sampling_probability: tf.Tensor | None = None,
    remove_accidental_hits: bool = False,
    num_hard_negatives: int | None = None,
) -> tf.Tensor:
    """:func:`in_batch_softmax_loss` with duplicate in-batch candidates folded into one column each.

    A batch of B interactions often holds the same item several times (≈1400 distinct items per 2048 rows on
    MovieLens). Scoring each query against the U distinct items and adding ``log(count)`` to their logits gives the
    same loss and the same gradients as scoring against all B columns (``sum_j exp(s_ij) = sum_u count_u exp(s_iu)``),
    with a ``[B, U]`` instead of a ``[B, B]`` logit matrix and the candidate tower run on U rows.

    The retrieval options fold as follows (each equal to ``tfrs.tasks.Retrieval`` with that option on the unfolded
    batch):

    * Sampling-bias correction subtracts ``log p_u`` from column u: every copy of an item has the same ``p``, so the
      correction of its ``count_u`` columns is the correction of its folded column.
    * Accidental hits. Unfolded, row i's positive item appears ``count`` times: column i (the label) and
      ``count - 1`` other copies, which are in-batch negatives with exactly the positive's logit. Retrieval with
      ``remove_accidental_hits`` adds ``MIN_FLOAT`` (≈ -3.4e36) to those copies, so their ``exp`` is exactly 0 and
      only column i remains: ``logsumexp_j = log(exp(s_i,pos) + sum_{u != pos} count_u exp(s_iu))``. Folded, the
      positive's column therefore gets ``log(1) = 0`` instead of ``log(count_pos)``, in that row only; copies of the
      item in other rows' positions are still ordinary negatives there.
    * Hard negatives. Unfolded, column u's item is ``count_u`` negatives of row i (``count_pos - 1`` for the
      positive's item, 0 with accidental hits removed). Retrieval keeps the N highest of them plus the positive, so
      the folded loss ranks the distinct items by score and keeps ``count_u`` copies of each until N are taken, the
      last item partially (see :func:`_softmax_over_negatives`).

    Args:
        query: ``[B, dim]``.
        unique_candidates: ``[U, dim]``, the tower output for the distinct items of the batch (padded rows allowed).
        log_counts: ``[U]``, ``log(count)`` of each distinct item; padded rows carry a large negative number.
        positions: int ``[B]``, the column of row i's own item in ``unique_candidates``.
        temperature: divides the scores when set.
        candidate_sampling_probability: ``[U]``, the sampling probability of each distinct item (any value on
            padded rows); when given, ``log(clip(p, 1e-6, 1))`` is subtracted from its logits.
        remove_accidental_hits: the other copies of row i's own item are not negatives of row i.
        num_hard_negatives: keep the N highest-scoring negatives of each row, counted with multiplicity.

    Returns:
        A scalar (the sum over the batch, as ``tfrs.tasks.Retrieval``).
    """
    scores = tf.matmul(query, unique_candidates, transpose_b=True)  # [B, U]
    if temperature:
        scores = scores / temperature
    scores = _sampling_correction(scores, candidate_sampling_probability)
    if num_hard_negatives is None:
        if remove_accidental_hits:
            own = tf.one_hot(positions, tf.shape(scores)[1], on_value=True, off_value=False)  # [B, U]
            offsets = tf.where(own, tf.zeros_like(scores), log_counts[None, :])  # the positive counts once
        else:
            offsets = log_counts[None, :]
        positive = tf.gather(scores, positions, axis=1, batch_dims=1)  # [B]
        return tf.reduce_sum(tf.reduce_logsumexp(scores + offsets, axis=1) - positive)
    counts = tf.round(tf.exp(log_counts))  # padded rows: exp(-1e9) = 0
    own = tf.one_hot(positions, tf.shape(scores)[1], dtype=scores.dtype)  # [B, U]
    if remove_accidental_hits:
        negatives = (1.0 - own) * counts[None, :]
    else:
        negatives = counts[None, :] - own
    return _softmax_over_negatives(scores, positions, negatives, num_hard_negatives)


class TwoTowerModel(tfrs.models.Model):
    """Query and candidate towers trained with ``tfrs.tasks.Retrieval`` (in-batch softmax).

    ``compute_loss`` is the TFRS hook (used by ``model.fit``); the fast trainer in :mod:`study.train` computes the
    same loss with :func:`in_batch_softmax_loss` / :func:`folded_softmax_loss` inside one compiled epoch.

    With ``cfg.sampling_bias_correction`` the sampling probability of every item is its frequency in the training
    split (``item_train_counts / rows``), held as one constant ``[num_items]`` tensor built here, once per model;
    each step gathers the probabilities of its candidates from it by item index.

    With ``cfg.rating_head`` a :class:`RatingHead` on the two towers' outputs is trained with
    ``tfrs.tasks.Ranking`` (mean squared error) too, and the loss is ``rating_weight * rating + retrieval_weight *
    retrieval``; with ``retrieval_weight`` 0 the retrieval loss is not computed at all.
    """

    def __init__(self, cfg: ModelConfig, data: EncodedData) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = data.num_items
        self.query_tower = QueryTower(cfg, data, name="query_tower")
        self.candidate_tower = CandidateTower(cfg, data, name="candidate_tower")
        self.temperature = cfg.temperature if (cfg.normalize or cfg.temperature != 1.0) else None
        self.remove_accidental_hits = cfg.remove_accidental_hits
        self.num_hard_negatives = cfg.num_hard_negatives
        self.sampling_probability: tf.Tensor | None = None
        if cfg.sampling_bias_correction:
            counts = np.asarray(data.item_train_counts, np.float64)
            self.sampling_probability = tf.constant(counts / max(counts.sum(), 1.0), tf.float32)  # [num_items]
        self.task = tfrs.tasks.Retrieval(
            temperature=self.temperature,
            num_hard_negatives=self.num_hard_negatives,
            remove_accidental_hits=self.remove_accidental_hits,
        )
        self.rating_model: RatingHead | None = None
        self.rating_weight = cfg.rating_weight
        self.retrieval_weight = cfg.retrieval_weight if cfg.rating_head else 1.0
        if cfg.rating_head:
            self.rating_model = RatingHead(cfg.rating_layers, name="rating_head")
            self.rating_task = tfrs.tasks.Ranking(
                loss=tf.keras.losses.MeanSquaredError(), metrics=[tf.keras.metrics.RootMeanSquaredError()]
            )
        # Build every weight now so counts and optimizer slots exist before training.
        query = self.query_tower(
            {"user": tf.zeros([1], tf.int32), "time_bucket": tf.zeros([1], tf.int32), "time_norm": tf.zeros([1])}
        )
        candidate = self.candidate_tower(tf.zeros([1], tf.int32))
        if self.rating_model is not None:
            self.rating_model(query, candidate)

    def _combine(self, retrieval: tf.Tensor | None, query: tf.Tensor, candidate: tf.Tensor, ratings: tf.Tensor):
        """``retrieval_weight * retrieval + rating_weight * MSE`` (just ``retrieval`` without a rating head).

        ``candidate`` is ``[batch, dim]``, row i the candidate of query row i.
        """
        if self.rating_model is None:
            return retrieval
        rating = self.rating_weight * rating_loss(self.rating_model(query, candidate), ratings)
        return rating if retrieval is None else self.retrieval_weight * retrieval + rating

    def _probability(self, items: tf.Tensor) -> tf.Tensor | None:
        return None if self.sampling_probability is None else tf.gather(self.sampling_probability, items)

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query = self.query_tower(features, training=training)
        candidate = self.candidate_tower(features["item"], training=training)
        retrieval = self.task(
            query,
            candidate,
            candidate_sampling_probability=self._probability(features["item"]),
            candidate_ids=features["item"],
            compute_metrics=not training,
        )
        if self.rating_model is None:
            return retrieval
        rating = self.rating_task(
            labels=features["rating"],
            predictions=self.rating_model(query, candidate),
            compute_metrics=not training,
        )
        return self.retrieval_weight * retrieval + self.rating_weight * rating

    def batch_loss(self, features: dict[str, tf.Tensor], training: bool = True) -> tf.Tensor:
        """The fast trainer's loss: same value as ``compute_loss`` (see :func:`in_batch_softmax_loss`)."""
        query = self.query_tower(features, training=training)
        candidate = self.candidate_tower(features["item"], training=training)
        retrieval = None
        if self.retrieval_weight:
            retrieval = in_batch_softmax_loss(
                query,
                candidate,
                self.temperature,
                candidate_sampling_probability=self._probability(features["item"]),
                candidate_ids=features["item"] if self.remove_accidental_hits else None,
                num_hard_negatives=self.num_hard_negatives,
            )
        return self._combine(retrieval, query, candidate, features.get("rating"))

    def folded_batch_loss(
        self, features: dict[str, tf.Tensor], unique_items: tf.Tensor, log_counts: tf.Tensor, positions: tf.Tensor
    ) -> tf.Tensor:
        """Same value and gradients as :meth:`batch_loss`, with duplicate items folded (:func:`folded_softmax_loss`)."""
        query = self.query_tower(features, training=True)
        candidates = self.candidate_tower(unique_items, training=True)
        retrieval = None
        if self.retrieval_weight:
            retrieval = folded_softmax_loss(
                query,
                candidates,
                log_counts,
                positions,
                self.temperature,
                candidate_sampling_probability=self._probability(unique_items),
                remove_accidental_hits=self.remove_accidental_hits,
                num_hard_negatives=self.num_hard_negatives,
            )
        if self.rating_model is None:
            return retrieval
        return self._combine(retrieval, query, tf.gather(candidates, positions), features.get("rating"))

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
