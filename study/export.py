"""``python -m study export`` and ``python -m study recommend``: a trial's model as standalone SavedModels.

``export`` re-trains a trial's exact config on train + validation (the tutorial protocol's validation split *is*
its test split, so there it trains on train only) for the trial's best epoch count, scores it once on the test
split, and writes ``models/<name>/``:

* ``query_model/``: a SavedModel taking raw inputs, ``{"user_id": string [n], "timestamp": int64 [n]}`` (Unix
  seconds), returning the query embeddings ``float32 [n, dim]``. The user-id lookup (``tf.lookup.StaticHashTable``
  over the training vocabulary; unknown ids map to the out-of-vocabulary row 0), the time buckets
  (``searchsorted`` over the data's bucket boundaries) and the time normalisation (training mean/std) happen inside,
  with the same constants as :func:`study.data.encode`.
* ``index/``: a SavedModel around ``tfrs.layers.factorized_top_k.BruteForce`` indexed with the embeddings of every
  item (the recommender computes the query embeddings once with the query model above and hands them to the index).
  Call it with ``model(user_id=tf.constant(["42"]), timestamp=tf.constant([ts], tf.int64), k=tf.constant(10))``; it
  returns ``{"scores", "item_ids", "titles" [n, k], "known_user" bool [n]}`` (items by non-increasing score). When
  the trial's model has a rating head (``model.rating_head: true``, e.g. ``--space multitask``) it also returns
  ``"ratings"`` float32 [n, k]: the head's predicted rating of each retrieved item, i.e. ``rating_model(query,
  candidate)`` on the user's query embedding and the item's candidate embedding (the head's layers and the
  candidate-embedding matrix are saved in the module).
* ``card.json``: trial, params, config, ``rating_head`` (whether ``index/`` returns ``ratings``; absent in exports
  made before rating heads, read as false), metrics (test of this model, with ``rmse`` when it has a rating head;
  validation of the search), data hash, time constants, library versions.

Both load with ``tf.saved_model.load(path)`` and TensorFlow alone (no ``study``, TFRS or Keras import needed).
The export checks itself before writing: the raw-input query path gives the in-process tower's embeddings, and the
exported ratings are the in-process head's predictions.
``recommend`` (and :func:`recommend`) uses only those artifacts; ``recommend --rerank`` orders the retrieved top k
by predicted rating (a model with a rating head only).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CARD = "card.json"
INDEX_DIR = "index"
QUERY_DIR = "query_model"
CARD_FORMAT = 1


@dataclass
class ExportResult:
    """What :func:`export_model` produced (the in-process model and data are kept for checks)."""

    path: Path
    card: dict[str, Any]
    model: Any
    data: Any


def default_out_dir(study_name: str, trial_number: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study"
    return Path("models") / f"{safe}-trial{trial_number}"


def time_constants(data: Any) -> dict[str, Any]:
    """The constants of :func:`study.data.encode`'s time features: bucket boundaries from min/max/count, norm."""
    info = data.info
    return {
        "min": int(info["timestamp_min"]),
        "max": int(info["timestamp_max"]),
        "buckets": int(data.num_time_buckets - 1),  # encode's num_time_buckets (the embedding has one more row)
        "mean": float(info["time_mean"]),
        "std": float(info["time_std"]),
    }


def encode_time(timestamps: Any, constants: dict[str, Any]) -> tuple[Any, Any]:
    """``(time_bucket int32, time_norm float32)`` exactly as :func:`study.data.encode` computes them (numpy)."""
    import numpy as np

    ts = np.asarray(timestamps, dtype=np.int64)
    boundaries = np.linspace(float(constants["min"]), float(constants["max"]), constants["buckets"])
    bucket = np.searchsorted(boundaries, ts.astype(np.float64), side="right").astype(np.int32)
    norm = ((ts - constants["mean"]) / constants["std"]).astype(np.float32)
    return bucket, norm


def _merged_training_data(data: Any) -> tuple[Any, str]:
    """``data`` whose training split is train + valid (train only when valid is the test split)."""
    import dataclasses

    import numpy as np

    from study.data import Interactions

    if data.valid is data.test:
        return data, "train (the protocol's validation split is its test split)"
    train = Interactions(
        *(
            np.concatenate([getattr(data.train, f.name), getattr(data.valid, f.name)])
            for f in dataclasses.fields(Interactions)
        )
    )
    merged = dataclasses.replace(
        data,
        train=train,
        item_train_counts=np.bincount(train.item, minlength=data.num_items).astype(np.int64),
        user_train_counts=np.bincount(train.user, minlength=data.num_users).astype(np.int64),
    )
    return merged, "train + valid"


def _build_modules(model: Any, data: Any, constants: dict[str, Any], default_k: int) -> tuple[Any, Any]:
    """The query tf.Module and the recommender tf.Module around a BruteForce index."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    from study.train import Evaluator

    boundaries = np.linspace(float(constants["min"]), float(constants["max"]), constants["buckets"])
    users = list(data.user_vocab[1:])
    query_spec = {
        "user_id": tf.TensorSpec([None], tf.string, name="user_id"),
        "timestamp": tf.TensorSpec([None], tf.int64, name="timestamp"),
    }

    class QueryModel(tf.Module):
        """Raw user ids + Unix timestamps → query embeddings."""

        def __init__(self) -> None:
            super().__init__(name="query_model")
            self.tower = model.query_tower
            self.user_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(users, tf.string), tf.range(1, len(users) + 1, dtype=tf.int32)
                ),
                default_value=0,
            )
            self.boundaries = tf.Variable(boundaries, dtype=tf.float64, trainable=False, name="time_boundaries")
            self.time_mean = tf.Variable(constants["mean"], dtype=tf.float64, trainable=False, name="time_mean")
            self.time_std = tf.Variable(constants["std"], dtype=tf.float64, trainable=False, name="time_std")

        @tf.function(input_signature=[query_spec])
        def __call__(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
            ts = tf.cast(inputs["timestamp"], tf.float64)
            features = {
                "user": self.user_table.lookup(inputs["user_id"]),
                "time_bucket": tf.searchsorted(self.boundaries, ts, side="right", out_type=tf.int32),
                "time_norm": tf.cast((ts - self.time_mean) / self.time_std, tf.float32),
            }
            return self.tower(features, training=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def known_user(self, user_id: tf.Tensor) -> tf.Tensor:
            return self.user_table.lookup(user_id) > 0

    query_model = QueryModel()
    item_ids = list(data.item_vocab[1:])
    titles = list(data.titles[1:])
    candidates = Evaluator(model).candidate_embeddings()
    num_items = len(item_ids)
    # No query model inside the index: the recommender computes the query embeddings once, for the index and the
    # rating head. Its identifiers are candidate rows (0 = the first real item), which gather ids, titles, embeddings.
    index = tfrs.layers.factorized_top_k.BruteForce(k=min(default_k, num_items), name="retrieval_index")
    index.index(candidates=candidates, identifiers=tf.range(num_items, dtype=tf.int32))
    head = model.rating_model

    class Recommender(tf.Module):
        """Raw user ids + Unix timestamps + k → the top-k items (ids, titles, scores, and the rating head's predicted
        ratings when the model has one) of the brute-force index."""

        def __init__(self) -> None:
            super().__init__(name="recommender")
            self.query_model = query_model
            self.index = index
            self.item_ids = tf.Variable(tf.constant(item_ids, tf.string), trainable=False, name="item_ids")
            self.titles = tf.Variable(tf.constant(titles, tf.string), trainable=False, name="titles")
            if head is not None:
                self.rating_head = head
                self.candidates = tf.Variable(candidates, trainable=False, name="candidate_embeddings")

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="user_id"),
                tf.TensorSpec([None], tf.int64, name="timestamp"),
                tf.TensorSpec([], tf.int32, name="k"),
            ]
        )
        def __call__(self, user_id: tf.Tensor, timestamp: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
            k = tf.clip_by_value(k, 1, num_items)
            query = self.query_model({"user_id": user_id, "timestamp": timestamp})  # [n, dim]
            scores, rows = self.index(query, k=k)  # [n, k]
            result = {
                "scores": scores,
                "item_ids": tf.gather(self.item_ids, rows),
                "titles": tf.gather(self.titles, rows),
                "known_user": self.query_model.known_user(user_id),
            }
            if head is not None:
                # The head on (query of row i, candidate j) for each retrieved item j: [n * k, dim] pairs → [n, k].
                shape = tf.shape(rows)
                pairs_query = tf.repeat(query, shape[1], axis=0)
                pairs_candidate = tf.gather(self.candidates, tf.reshape(rows, [-1]))
                result["ratings"] = tf.reshape(self.rating_head(pairs_query, pairs_candidate), shape)
            return result

    return query_model, Recommender()


def _check_parity(model: Any, data: Any, query_model: Any, constants: dict[str, Any]) -> None:
    """The SavedModel's raw-input path must give the in-process tower's embeddings (same lookups and constants)."""
    import numpy as np
    import tensorflow as tf

    from study.errors import StudyError

    n = min(16, data.num_users - 1)
    user_idx = np.arange(1, n + 1, dtype=np.int32)
    ts = np.linspace(constants["min"], constants["max"], n).astype(np.int64)
    bucket, norm = encode_time(ts, constants)
    expected = model.query_tower(
        {"user": tf.constant(user_idx), "time_bucket": tf.constant(bucket), "time_norm": tf.constant(norm)},
        training=False,
    ).numpy()
    got = query_model(
        {"user_id": tf.constant([data.user_vocab[i] for i in user_idx]), "timestamp": tf.constant(ts)}
    ).numpy()
    if not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise StudyError(
            f"export self-check failed: raw-input query embeddings differ by {np.abs(got - expected).max():.3g}"
        )


def _check_rating_parity(model: Any, data: Any, recommender: Any, constants: dict[str, Any], k: int) -> None:
    """The recommender's ``ratings`` must be the in-process head's predictions for the items it retrieved."""
    import numpy as np
    import tensorflow as tf

    from study.errors import StudyError

    n = min(8, data.num_users - 1)
    k = min(k, data.num_items - 1)
    user_idx = np.arange(1, n + 1, dtype=np.int32)
    ts = np.linspace(constants["min"], constants["max"], n).astype(np.int64)
    got = recommender(
        user_id=tf.constant([data.user_vocab[i] for i in user_idx]), timestamp=tf.constant(ts), k=tf.constant(k)
    )
    row_of = {item: row for row, item in enumerate(data.item_vocab)}
    rows = np.array([[row_of[v.decode("utf-8")] for v in line] for line in got["item_ids"].numpy()], np.int32)
    bucket, norm = encode_time(ts, constants)
    query = model.query_tower(
        {"user": tf.constant(user_idx), "time_bucket": tf.constant(bucket), "time_norm": tf.constant(norm)},
        training=False,
    )
    candidate = model.candidate_tower(tf.constant(rows.reshape(-1)), training=False)
    expected = model.rating_model(tf.repeat(query, k, axis=0), candidate).numpy().reshape(n, k)
    ratings = got["ratings"].numpy()
    if not np.allclose(ratings, expected, rtol=1e-4, atol=1e-5):
        raise StudyError(
            f"export self-check failed: exported predicted ratings differ by {np.abs(ratings - expected).max():.3g}"
        )


def export_model(
    optuna_study: Any,
    which: str | int = "best",
    out_dir: str | Path | None = None,
    storage_url: str | None = None,
    out: Any = None,
    default_k: int = 10,
) -> ExportResult:
    """Re-train a trial on train + valid, score it on test and write the SavedModels and card (see module doc).

    Raises:
        ConfigError: bad trial, changed data, or an output folder that holds something other than an export.
    """
    import tensorflow as tf

    from study.errors import ConfigError
    from study.results import StudyAttr, load_study_data, resolve_trial, retrain_config
    from study.storage import mask_url
    from study.train import train, versions

    out = out or sys.stdout
    attrs = optuna_study.user_attrs
    name = optuna_study.study_name
    trial = resolve_trial(optuna_study, which)
    path = Path(out_dir) if out_dir else default_out_dir(name, trial.number)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / CARD).exists())):
        raise ConfigError(f"--out {path}: exists and is not a model export; pick another folder")
    data = load_study_data(optuna_study)
    cfg = retrain_config(trial)
    epochs = cfg.train.epochs
    metric = str(attrs.get(StudyAttr.METRIC, cfg.train.metric))
    fit_data, trained_on = _merged_training_data(data)
    print(
        f"exporting trial {trial.number} of {name!r}: training on {trained_on} ({len(fit_data.train):,} rows) "
        f"for {epochs} epochs, scoring on test ({len(data.test):,} rows)…",
        file=out,
        flush=True,
    )
    model, result = train(cfg, fit_data, eval_split=data.test, metric=metric)
    test_metrics = {k: round(float(v), 6) for k, v in (result.history[-1].metrics or {}).items()}
    constants = time_constants(data)
    query_model, recommender = _build_modules(model, data, constants, default_k)
    _check_parity(model, data, query_model, constants)
    has_head = model.rating_model is not None
    if has_head:
        _check_rating_parity(model, data, recommender, constants, default_k)

    tmp = path.with_name(path.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tf.saved_model.save(
        query_model, str(tmp / QUERY_DIR), signatures={"serving_default": query_model.__call__.get_concrete_function()}
    )
    tf.saved_model.save(
        recommender, str(tmp / INDEX_DIR), signatures={"serving_default": recommender.__call__.get_concrete_function()}
    )
    card = {
        "format": CARD_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": name,
        "storage": None if storage_url is None else mask_url(storage_url),
        "trial": trial.number,
        "params": dict(trial.params),
        "config": cfg.to_dict(),
        "trained_on": trained_on,
        "train_rows": len(fit_data.train),
        "epochs": epochs,
        "metric": metric,
        "rating_head": has_head,
        "metrics": {
            "test": test_metrics,
            "valid_search": dict(trial.user_attrs.get("valid_metrics", {})),
            "study_test": dict(attrs.get("test_metrics", {})) if attrs.get("test_trial") == trial.number else None,
        },
        "data": {
            "dataset": attrs["dataset"],
            "protocol": data.protocol,
            "data_hash": data.data_hash,
            "rows": dict(data.info.get("rows", {})),
            "num_users": data.num_users - 1,
            "num_items": data.num_items - 1,
            "example_users": list(data.user_vocab[1:6]),
        },
        "time": constants,
        "model": {k: int(v) for k, v in model.param_counts().items()},
        "versions": dict(versions()),
        "trial_versions": dict(trial.user_attrs.get("versions", {})),
        "files": {"index": INDEX_DIR, "query_model": QUERY_DIR},
        "usage": (
            f"m = tf.saved_model.load('{INDEX_DIR}'); "
            "m(user_id=tf.constant(['ID']), timestamp=tf.constant([UNIX_SECONDS], tf.int64), k=tf.constant(10))"
        ),
    }
    (tmp / CARD).write_text(json.dumps(card, indent=1, default=_json_default), encoding="utf-8")
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(path)
    shown = " ".join(f"{m}={test_metrics[m]:.4f}" for m in ("top10", "top50", "top100", "rmse") if m in test_metrics)
    print(f"test: {shown}", file=out)
    print(f"wrote {path}/ ({INDEX_DIR}/, {QUERY_DIR}/, {CARD})", file=out)
    rerank = " --rerank" if has_head else ""
    print(f"try: python -m study recommend --model {path} --user {data.user_vocab[1]}{rerank}", file=out, flush=True)
    return ExportResult(path=path, card=card, model=model, data=data)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


# --------------------------------------------------------------------------------------------- recommend


def parse_time(text: str | None, card: dict[str, Any]) -> tuple[int, str]:
    """``--time``: Unix seconds or an ISO date/time (UTC); default the latest timestamp of the data."""
    from study.errors import ConfigError

    if text is None or not str(text).strip():
        latest = int(card.get("time", {}).get("max", 0))
        return latest, "the latest time in the training data"
    text = str(text).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text), "given"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--time: expected Unix seconds or an ISO date like 2018-09-01, but got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()), "given"


def load_card(model_dir: str | Path) -> dict[str, Any]:
    from study.errors import ConfigError

    path = Path(model_dir)
    card_path = path / CARD
    if not (path / INDEX_DIR).is_dir() or not card_path.is_file():
        raise ConfigError(
            f"--model {path}: not a model export (expected {CARD} and {INDEX_DIR}/); run `python -m study export`"
        )
    for part in (INDEX_DIR, QUERY_DIR):
        for needed in ("saved_model.pb", "variables"):
            if not (path / part / needed).exists():
                raise ConfigError(
                    f"--model {path}: {path / part / needed} is missing (an incomplete copy?); export the model again "
                    "with `python -m study export`"
                )
    try:
        return json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--model {path}: unreadable {CARD} ({exc})") from None


def recommend(
    model_dir: str | Path, user: str, k: int = 10, timestamp: int | None = None, rerank: bool = False
) -> dict[str, Any]:
    """Top-k items for ``user`` from the exported SavedModel only (``tf.saved_model.load``).

    Args:
        rerank: retrieve the top k by score as usual, then order those k by the rating head's predicted rating,
            highest first (ties keep the retrieval order). Needs a model exported with a rating head.

    Returns:
        ``{"known_user": bool, "items": [(item_id, title, score), ...], "ratings": [float, ...] or None}``, items in
        retrieval order and ``ratings`` their predicted ratings (None without a rating head). With ``rerank`` the items
        are ``(item_id, title, score, rating, retrieval_rank)`` (1-based rank by score), ordered by rating.

    Raises:
        ConfigError: ``k`` < 1, not a model export, or ``rerank`` on a model without a rating head.
    """
    import tensorflow as tf

    from study.errors import ConfigError

    if k < 1:
        raise ConfigError(f"--k: must be >= 1, but got {k}")
    card = load_card(model_dir)
    if rerank and not card.get("rating_head"):
        raise ConfigError(_no_head_message(model_dir))
    if timestamp is None:
        timestamp = int(card.get("time", {}).get("max", 0))
    loaded = tf.saved_model.load(str(Path(model_dir) / INDEX_DIR))
    result = loaded(
        user_id=tf.constant([str(user)]),
        timestamp=tf.constant([int(timestamp)], tf.int64),
        k=tf.constant(int(k), tf.int32),
    )
    ids = [v.decode("utf-8") for v in result["item_ids"].numpy()[0]]
    titles = [v.decode("utf-8") for v in result["titles"].numpy()[0]]
    scores = [float(v) for v in result["scores"].numpy()[0]]
    ratings = [float(v) for v in result["ratings"].numpy()[0]] if "ratings" in result else None
    if rerank and ratings is None:
        raise ConfigError(_no_head_message(model_dir, f"has no rating head in its {INDEX_DIR}/"))
    items: list[tuple[Any, ...]] = list(zip(ids, titles, scores, strict=True))
    if rerank:
        order = sorted(range(len(items)), key=lambda i: -ratings[i])  # stable: ties keep the retrieval order
        items = [(*items[i], ratings[i], i + 1) for i in order]
    return {"known_user": bool(result["known_user"].numpy()[0]), "items": items, "ratings": ratings}


def _no_head_message(model_dir: str | Path, what: str = "was exported without a rating head") -> str:
    return (
        f"--rerank: the model in {model_dir} {what}, so it predicts no ratings; export a trial trained with "
        "`model.rating_head: true` (e.g. from a study run with `--space multitask`) and recommend from that folder"
    )
