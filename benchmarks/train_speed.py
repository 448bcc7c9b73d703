"""Training speed: the stock TFRS tutorial loop vs ``study.train.Trainer``, side by side in one run.

Both models are trained on the same rows of the same split (protocol ``tutorial``: seeded random 80/20, validation
is the test split) with the same model config (the "Building deep retrieval models" tutorial's features, layers
[64, 32], relu, embedding dim 32, Adagrad 0.1, batch 2048, no genres):

* reference: the tutorial's code -- Keras ``StringLookup`` / ``TextVectorization`` / ``Discretization`` /
  ``Normalization`` layers inside the towers, a ``tf.data`` pipeline of string features,
  ``tfrs.tasks.Retrieval`` with ``tfrs.metrics.FactorizedTopK`` over ``movies.batch(128).map(candidate_model)``,
  ``model.fit`` for training and ``model.evaluate`` for the validation pass;
* ours: ``study.train.Trainer.train_epoch`` (one compiled call per epoch) and ``study.train.Evaluator``.

Epochs alternate between the two (which one goes first alternates too), so machine noise hits both alike. The
first epoch (tracing / XLA compilation) and the first validation pass (tracing) are left out of the medians.

Known differences between the two setups (none changes the work per epoch by more than ~1 %):

* the tutorial keys the candidate id embedding by title; titles are not unique in ml-latest-small (5 duplicates),
  so the reference's ``StringLookup`` is keyed by item id, which gives both sides the same candidate set;
* ours drops the last partial batch of each epoch (a fresh permutation each epoch, so every row is still seen);
* the tutorial adapts ``Normalization`` on all ratings, ours normalises time with the training split's mean/std;
* top-100 of the reference comes from ``FactorizedTopK`` (reads ~0.001 lower than an exact rank count, see
  /work/shared/notes/fast-training.md), ours from exact ranks.

Usage::

    python benchmarks/train_speed.py [--epochs 30] [--dataset embedded] [--eval-every 1] [--max-rows N]

The last line of the output is machine-readable::

    train_speed: epoch_ratio=R validation_ratio=V top100_ours=X top100_reference=Y epochs=E
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import study  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported)

# isort: split
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from study.config import ModelConfig, TrainConfig, TrialConfig
from study.data import EncodedData, Splits, encode, load, load_table, split_table
from study.train import Evaluator, Trainer, build_model

PROTOCOL = "tutorial"
SPLIT_SEED = 42  # study.data.load's default; passed explicitly to both load() and split_table()
LAYERS = (64, 32)
EMBEDDING_DIM = 32
LEARNING_RATE = 0.1
BATCH_SIZE = 2048
TEST_BATCH_SIZE = 4096
SHUFFLE_BUFFER = 100_000
MAX_TOKENS = 10_000
NUM_TIME_BUCKETS = 1000
TOP100 = "factorized_top_k/top_100_categorical_accuracy"


# ------------------------------------------------------------------------------------------------ data


def prepare_data(spec: str, max_rows: int | None, seed: int) -> tuple[Splits, EncodedData]:
    """The canonical split (for the reference) and the encoded data (for ours) of the same rows.

    Without ``max_rows`` ours comes from ``study.data.load`` (what a study uses) and the reference's split from
    ``load_table`` + ``split_table`` with the same seed; with ``max_rows`` a seeded random subset of the table's rows
    (every item kept as a candidate) is split and encoded for both.
    """
    table = load_table(spec)
    subsampled = max_rows is not None and max_rows < len(table)
    if subsampled:
        items = table.attrs["items"]
        rows = np.sort(np.random.default_rng(seed).choice(len(table), size=max_rows, replace=False))
        table = table.iloc[rows].reset_index(drop=True)
        table.attrs = {"items": items}
    splits = split_table(table, PROTOCOL, seed=SPLIT_SEED)
    data = encode(splits, num_time_buckets=NUM_TIME_BUCKETS, dataset=spec)
    if not subsampled:
        loaded = load(spec, protocol=PROTOCOL, seed=SPLIT_SEED, num_time_buckets=NUM_TIME_BUCKETS)
        if loaded.data_hash != data.data_hash:
            raise AssertionError(f"load() split differs from split_table(): {loaded.data_hash} != {data.data_hash}")
        data = loaded
    check_same_rows(splits, data)
    return splits, data


def _pairs(users: Sequence[str], items: Sequence[str]) -> np.ndarray:
    """Sorted ``user\\x1fitem`` keys: equal arrays = equal (user, item) multisets."""
    keys = pd.Series(np.asarray(users, dtype=object)) + "\x1f" + pd.Series(np.asarray(items, dtype=object))
    return np.sort(keys.to_numpy(dtype=object).astype(str))


def check_same_rows(splits: Splits, data: EncodedData) -> None:
    """Assert both sides train and validate on the same rows and rank the same candidates."""
    users = np.asarray(data.user_vocab, dtype=object)
    items = np.asarray(data.item_vocab, dtype=object)
    for name, frame, part in (("train", splits.train, data.train), ("validation", splits.valid, data.valid)):
        if len(frame) != len(part):
            raise AssertionError(f"{name}: reference has {len(frame)} rows, ours {len(part)}")
        ref = _pairs(frame["user_id"].astype(str).to_numpy(dtype=object), frame["item_id"].astype(str).to_numpy())
        ours = _pairs(users[part.user], items[part.item])
        if not np.array_equal(ref, ours):
            raise AssertionError(f"{name}: the (user, item) multisets differ")
    candidates = set(splits.items["item_id"].astype(str))
    if candidates != set(data.item_vocab[1:]):
        raise AssertionError("the candidate sets differ")


def _strings(values: pd.Series) -> np.ndarray:
    return np.asarray(values.astype(str).to_numpy(dtype=object), dtype=str)


def interactions_dataset(frame: pd.DataFrame) -> tf.data.Dataset:
    """A split as the tutorial's ``ratings`` dataset: one dict of raw (string / int64) features per rating."""
    return tf.data.Dataset.from_tensor_slices(
        {
            "user_id": _strings(frame["user_id"]),
            "timestamp": frame["timestamp"].to_numpy(dtype=np.int64),
            "item_id": _strings(frame["item_id"]),
            "title": _strings(frame["title"]),
        }
    )


# ------------------------------------------------------------------------------------ reference (tutorial)


class UserModel(tf.keras.Model):
    """The tutorial's query features: user id embedding, time-bucket embedding, normalised timestamp."""

    def __init__(self, unique_user_ids: np.ndarray, timestamp_buckets: np.ndarray, timestamps: tf.data.Dataset):
        super().__init__()
        self.user_embedding = tf.keras.Sequential(
            [
                tf.keras.layers.StringLookup(vocabulary=unique_user_ids, mask_token=None),
                tf.keras.layers.Embedding(len(unique_user_ids) + 1, EMBEDDING_DIM),
            ]
        )
        self.timestamp_embedding = tf.keras.Sequential(
            [
                tf.keras.layers.Discretization(timestamp_buckets.tolist()),
                tf.keras.layers.Embedding(len(timestamp_buckets) + 1, EMBEDDING_DIM),
            ]
        )
        self.normalized_timestamp = tf.keras.layers.Normalization(axis=None)
        self.normalized_timestamp.adapt(timestamps)

    def call(self, inputs):
        return tf.concat(
            [
                self.user_embedding(inputs["user_id"]),
                self.timestamp_embedding(inputs["timestamp"]),
                tf.reshape(self.normalized_timestamp(inputs["timestamp"]), (-1, 1)),
            ],
            axis=1,
        )


class MovieModel(tf.keras.Model):
    """The tutorial's candidate features: id embedding + mean title-word embedding (id = item id, see top)."""

    def __init__(self, unique_item_ids: np.ndarray, titles: tf.data.Dataset):
        super().__init__()
        self.title_embedding = tf.keras.Sequential(
            [
                tf.keras.layers.StringLookup(vocabulary=unique_item_ids, mask_token=None),
                tf.keras.layers.Embedding(len(unique_item_ids) + 1, EMBEDDING_DIM),
            ]
        )
        self.title_vectorizer = tf.keras.layers.TextVectorization(max_tokens=MAX_TOKENS)
        self.title_text_embedding = tf.keras.Sequential(
            [
                self.title_vectorizer,
                tf.keras.layers.Embedding(MAX_TOKENS, EMBEDDING_DIM, mask_zero=True),
                tf.keras.layers.GlobalAveragePooling1D(),
            ]
        )
        self.title_vectorizer.adapt(titles)

    def call(self, inputs):
        return tf.concat([self.title_embedding(inputs["item_id"]), self.title_text_embedding(inputs["title"])], axis=1)


def dense_tower(layer_sizes: Sequence[int]) -> tf.keras.Sequential:
    tower = tf.keras.Sequential()
    for size in layer_sizes[:-1]:
        tower.add(tf.keras.layers.Dense(size, activation="relu"))
    for size in layer_sizes[-1:]:
        tower.add(tf.keras.layers.Dense(size))
    return tower


class QueryModel(tf.keras.Model):
    def __init__(self, layer_sizes: Sequence[int], **features):
        super().__init__()
        self.embedding_model = UserModel(**features)
        self.dense_layers = dense_tower(layer_sizes)

    def call(self, inputs):
        return self.dense_layers(self.embedding_model(inputs))


class CandidateModel(tf.keras.Model):
    def __init__(self, layer_sizes: Sequence[int], **features):
        super().__init__()
        self.embedding_model = MovieModel(**features)
        self.dense_layers = dense_tower(layer_sizes)

    def call(self, inputs):
        return self.dense_layers(self.embedding_model(inputs))


class MovielensModel(tfrs.models.Model):
    def __init__(self, layer_sizes: Sequence[int], movies: tf.data.Dataset, query_features, candidate_features):
        super().__init__()
        self.query_model = QueryModel(layer_sizes, **query_features)
        self.candidate_model = CandidateModel(layer_sizes, **candidate_features)
        self.task = tfrs.tasks.Retrieval(
            metrics=tfrs.metrics.FactorizedTopK(candidates=movies.batch(128).map(self.candidate_model)),
        )

    def compute_loss(self, features, training=False):
        query_embeddings = self.query_model({"user_id": features["user_id"], "timestamp": features["timestamp"]})
        movie_embeddings = self.candidate_model({"item_id": features["item_id"], "title": features["title"]})
        return self.task(query_embeddings, movie_embeddings, compute_metrics=not training)


@dataclass
class Reference:
    model: MovielensModel
    train: tf.data.Dataset
    test: tf.data.Dataset

    def train_epoch(self) -> None:
        # The tutorial calls fit once with epochs=E (and validation_freq); one fit(epochs=1) per epoch lets the two
        # loops alternate. Its wall time is what a user pays per epoch, Keras' per-fit set-up included.
        self.model.fit(self.train, epochs=1, verbose=0)

    def validate(self) -> float:
        return float(self.model.evaluate(self.test, return_dict=True, verbose=0)[TOP100])


def build_reference(splits: Splits, seed: int, cache_train: bool) -> Reference:
    tf.keras.utils.set_random_seed(seed)
    ratings = pd.concat([splits.train, splits.test], ignore_index=True)  # the tutorial's whole `ratings` dataset
    items = splits.items
    movies = tf.data.Dataset.from_tensor_slices(
        {"item_id": _strings(items["item_id"]), "title": _strings(items["title"])}
    )
    timestamps = ratings["timestamp"].to_numpy(dtype=np.int64)
    query_features = {
        "unique_user_ids": np.unique(_strings(ratings["user_id"])),
        "timestamp_buckets": np.linspace(timestamps.min(), timestamps.max(), num=NUM_TIME_BUCKETS),
        "timestamps": tf.data.Dataset.from_tensor_slices(timestamps).batch(128),
    }
    candidate_features = {
        "unique_item_ids": np.unique(_strings(items["item_id"])),
        "titles": movies.map(lambda x: x["title"]),
    }
    model = MovielensModel(LAYERS, movies, query_features, candidate_features)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(LEARNING_RATE))
    # The deep-retrieval tutorial writes `cached_train = train.shuffle(100_000).batch(2048)`: despite the name, no
    # .cache(), so the batches are reshuffled every epoch.
    train = interactions_dataset(splits.train).shuffle(SHUFFLE_BUFFER).batch(BATCH_SIZE)
    if cache_train:  # the basic-retrieval tutorial's form: caches the first epoch's order, so batches never reshuffle
        train = train.cache()
    test = interactions_dataset(splits.test).batch(TEST_BATCH_SIZE).cache()
    return Reference(model, train, test)


# --------------------------------------------------------------------------------------------------- ours


@dataclass
class Ours:
    trainer: Trainer
    evaluator: Evaluator
    data: EncodedData

    def train_epoch(self) -> None:
        self.trainer.train_epoch()

    def validate(self) -> float:
        return self.evaluator.evaluate(self.data.valid)["top100"]


def trial_config(epochs: int, eval_every: int, seed: int) -> TrialConfig:
    return TrialConfig(
        model=ModelConfig(
            layers=LAYERS,
            activation="relu",
            embedding_dim=EMBEDDING_DIM,
            use_timestamp=True,
            use_title_words=True,
            use_genres=False,
        ),
        train=TrainConfig(
            optimizer="adagrad",
            learning_rate=LEARNING_RATE,
            batch_size=BATCH_SIZE,
            epochs=epochs,
            eval_every=eval_every,
            seed=seed,
        ),
    )


def build_ours(data: EncodedData, cfg: TrialConfig) -> Ours:
    model = build_model(cfg, data)  # seeds with tf.keras.utils.set_random_seed(cfg.train.seed)
    return Ours(Trainer(model, data, cfg.train), Evaluator(model), data)


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Timings:
    train: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    top100: float = float("nan")

    def median_train(self) -> float:
        return statistics.median(self.train[1:] or self.train)  # epoch 1 traces / compiles

    def median_validation(self) -> float:
        return statistics.median(self.validation[1:] or self.validation)  # the first pass traces

    def median_epoch(self) -> float:
        return self.median_train() + self.median_validation()


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(args: argparse.Namespace) -> tuple[Timings, Timings]:
    t0 = time.perf_counter()
    splits, data = prepare_data(args.dataset, args.max_rows, args.seed)
    print(
        f"data: {args.dataset} protocol={PROTOCOL} train={len(data.train)} validation={len(data.valid)} "
        f"candidates={data.num_items - 1} users={data.num_users - 1} ({time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    setup_ref, reference = _timed(lambda: build_reference(splits, args.seed, args.cache_train))
    setup_ours, ours = _timed(lambda: build_ours(data, trial_config(args.epochs, args.eval_every, args.seed)))
    print(f"set-up seconds: reference {setup_ref:.2f}, ours {setup_ours:.2f} (not in the medians)", flush=True)

    ref_t, ours_t = Timings(), Timings()
    header = f"{'epoch':>5} | {'ref train':>9} {'ref val':>8} {'ref top100':>10} | {'ours train':>10} {'ours val':>8} "
    print(header + f"{'ours top100':>11}", flush=True)
    for epoch in range(1, args.epochs + 1):
        validate = epoch % args.eval_every == 0 or epoch == args.epochs
        order = ((reference, ref_t), (ours, ours_t)) if epoch % 2 else ((ours, ours_t), (reference, ref_t))
        for side, timings in order:
            seconds, _ = _timed(side.train_epoch)
            timings.train.append(seconds)
            if validate:
                seconds, top100 = _timed(side.validate)
                timings.validation.append(seconds)
                timings.top100 = float(top100)
        if validate:
            print(
                f"{epoch:>5} | {ref_t.train[-1]:>9.3f} {ref_t.validation[-1]:>8.3f} {ref_t.top100:>10.4f} | "
                f"{ours_t.train[-1]:>10.3f} {ours_t.validation[-1]:>8.3f} {ours_t.top100:>11.4f}",
                flush=True,
            )
        else:
            print(f"{epoch:>5} | {ref_t.train[-1]:>9.3f} {'-':>8} {'-':>10} | {ours_t.train[-1]:>10.3f}", flush=True)
    return ref_t, ours_t


def report(ref: Timings, ours: Timings, epochs: int) -> str:
    rows = [
        ("train epoch (median)", ref.median_train(), ours.median_train()),
        ("validation pass (median)", ref.median_validation(), ours.median_validation()),
        ("epoch + one validation", ref.median_epoch(), ours.median_epoch()),
        ("first epoch (tracing/compile)", ref.train[0], ours.train[0]),
        ("first validation pass", ref.validation[0], ours.validation[0]),
        (
            "total (all epochs + validations)",
            sum(ref.train) + sum(ref.validation),
            sum(ours.train) + sum(ours.validation),
        ),
    ]
    print(f"\nseconds ({'epochs 2..' + str(epochs) if epochs > 1 else 'epoch 1'} for medians)")
    print(f"{'':<34} {'reference':>10} {'ours':>10} {'ratio':>8}")
    for name, r, o in rows:
        print(f"{name:<34} {r:>10.3f} {o:>10.3f} {r / o:>7.1f}x")
    print(f"{'top-100 after ' + str(epochs) + ' epochs':<34} {ref.top100:>10.4f} {ours.top100:>10.4f}")
    return (
        f"train_speed: epoch_ratio={ref.median_epoch() / ours.median_epoch():.2f} "
        f"validation_ratio={ref.median_validation() / ours.median_validation():.2f} "
        f"top100_ours={ours.top100:.4f} top100_reference={ref.top100:.4f} epochs={epochs}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of each side (default 30)")
    parser.add_argument("--dataset", default="embedded", help="data spec, as for study.data.load (default embedded)")
    parser.add_argument("--eval-every", type=int, default=1, help="validate both every N epochs and after the last")
    parser.add_argument("--max-rows", type=int, default=None, help="use a seeded random subset of N interactions")
    parser.add_argument("--seed", type=int, default=42, help="weight / shuffle seed of both sides (default 42)")
    parser.add_argument(
        "--cache-train",
        action="store_true",
        help="reference: train.shuffle().batch().cache() (fixed batch order) instead of the deep-retrieval "
        "tutorial's uncached train.shuffle().batch()",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.eval_every < 1 or (args.max_rows is not None and args.max_rows < 10):
        parser.error("--epochs and --eval-every must be >= 1, --max-rows >= 10")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    ref, ours = run(args)
    print(report(ref, ours, args.epochs), flush=True)


if __name__ == "__main__":
    main()
