"""The retrieval-loss options (temperature, sampling-bias correction, accidental hits, hard negatives).

Each option, alone and combined, on the plain in-batch loss and on the folded one (duplicate items folded into one
column), against ``tfrs.tasks.Retrieval`` with the same option on the same tensors; hand-worked tiny cases; the
model's hooks; a training smoke with every option on.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
from synthetic import small_data

from study.config import ModelConfig, TrainConfig, TrialConfig
from study.model import folded_softmax_loss, in_batch_softmax_loss
from study.train import Trainer, build_model, fold_batches

# (temperature, sampling_bias_correction, remove_accidental_hits, num_hard_negatives): every option alone, pairs,
# all together, and hard negatives at 1, a few, and more than the batch (= all of them).
OPTIONS = [
    (t, s, r, n) for t, s, r, n in itertools.product([None, 0.5], [False, True], [False, True], [None, 1, 3, 100])
]


def _ids(option: tuple) -> str:
    t, s, r, n = option
    return f"T{t}-sbc{int(s)}-rah{int(r)}-hn{n}"


def _batch(duplicates: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny random batch: 24 rows over 6 items (many duplicates) or 24 distinct items."""
    rng = np.random.default_rng(seed)
    size = 24
    items = rng.integers(1, 7, size) if duplicates else rng.permutation(np.arange(1, size + 1))
    return {
        "items": items,
        "table": rng.normal(size=(size + 1, 4)).astype(np.float32),  # candidate embedding of each item id
        "query": rng.normal(size=(size, 4)).astype(np.float32),
        "probability": rng.uniform(1e-7, 0.4, size + 1).astype(np.float32),  # some below TFRS's 1e-6 clip
    }


def _tfrs(b: dict[str, np.ndarray], t, s, r, n) -> float:
    task = tfrs.tasks.Retrieval(temperature=t, remove_accidental_hits=r, num_hard_negatives=n)
    assert task._loss.reduction == tf.keras.losses.Reduction.SUM  # a sum over the batch, like ours
    items = b["items"]
    return float(
        task(
            tf.constant(b["query"]),
            tf.constant(b["table"][items]),
            candidate_sampling_probability=tf.constant(b["probability"][items]) if s else None,
            candidate_ids=tf.constant(items),
        )
    )


def _plain(b: dict[str, np.ndarray], query: tf.Tensor, table: tf.Tensor, t, s, r, n) -> tf.Tensor:
    items = b["items"]
    return in_batch_softmax_loss(
        query,
        tf.gather(table, items),
        t,
        candidate_sampling_probability=tf.constant(b["probability"][items]) if s else None,
        candidate_ids=tf.constant(items) if r else None,
        num_hard_negatives=n,
    )


def _folded(b: dict[str, np.ndarray], query: tf.Tensor, table: tf.Tensor, t, s, r, n, cap: int = 32) -> tf.Tensor:
    unique, log_counts, positions, needed = fold_batches(b["items"], 1, cap)
    assert needed <= cap
    return folded_softmax_loss(
        query,
        tf.gather(table, unique[0]),
        log_counts[0],
        positions[0],
        t,
        candidate_sampling_probability=tf.constant(b["probability"][unique[0]]) if s else None,
        remove_accidental_hits=r,
        num_hard_negatives=n,
    )


@pytest.mark.parametrize("duplicates", [True, False], ids=["duplicates", "distinct"])
@pytest.mark.parametrize("option", OPTIONS, ids=[_ids(o) for o in OPTIONS])
def test_losses_equal_tfrs_retrieval(option: tuple, duplicates: bool) -> None:
    b = _batch(duplicates)
    expected = _tfrs(b, *option)
    query, table = tf.constant(b["query"]), tf.constant(b["table"])
    assert float(_plain(b, query, table, *option)) == pytest.approx(expected, rel=1e-5)
    assert float(_folded(b, query, table, *option)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("option", [(None, True, True, 3), (0.5, True, False, 2), (None, False, True, None)])
def test_folded_gradients_equal_plain(option: tuple) -> None:
    b = _batch(duplicates=True, seed=4)
    table = tf.Variable(b["table"])
    query = tf.Variable(b["query"])
    with tf.GradientTape(persistent=True) as tape:
        plain = _plain(b, query, table, *option)
        folded = _folded(b, query, table, *option, cap=8)  # padded unique axis (6 distinct items)
    assert float(folded) == pytest.approx(float(plain), rel=1e-5)
    for var in (table, query):
        g_plain = tf.convert_to_tensor(tape.gradient(plain, var)).numpy()
        g_folded = tf.convert_to_tensor(tape.gradient(folded, var)).numpy()
        np.testing.assert_allclose(g_folded, g_plain, rtol=1e-4, atol=1e-5)


def test_folded_loss_compiles_under_xla() -> None:
    b = _batch(duplicates=True, seed=5)
    unique, log_counts, positions, _ = fold_batches(b["items"], 1, 8)
    table, query = tf.constant(b["table"]), tf.constant(b["query"])

    @tf.function(jit_compile=True)
    def loss() -> tf.Tensor:
        return folded_softmax_loss(
            query,
            tf.gather(table, unique[0]),
            log_counts[0],
            positions[0],
            0.5,
            candidate_sampling_probability=tf.gather(tf.constant(b["probability"]), unique[0]),
            remove_accidental_hits=True,
            num_hard_negatives=3,
        )

    assert float(loss()) == pytest.approx(_tfrs(b, 0.5, True, True, 3), rel=1e-5)


# ------------------------------------------------------------------------------------------ hand-worked

# Three rows over two items: row 0 and row 1 hold item a = [1, 0], row 2 holds item b = [0, 1].
# Queries q0 = [1, 0], q1 = [0, 2], q2 = [1, 1]. Scores against the columns (a, a, b):
#   row 0: [1, 1, 0]   (positive column 0)
#   row 1: [0, 0, 2]   (positive column 1)
#   row 2: [1, 1, 1]   (positive column 2)
# Folded: unique items (a, b), counts (2, 1), positions (0, 0, 1).
HAND = {
    "items": np.array([1, 1, 2]),
    "table": np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32),  # row 0 unused (OOV)
    "query": np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], np.float32),
    "probability": np.array([0.25, 0.5, 0.25], np.float32),  # p(a) = 0.5, p(b) = 0.25
}
E = math.e


def _hand(t=None, s=False, r=False, n=None) -> tuple[float, float, float]:
    query, table = tf.constant(HAND["query"]), tf.constant(HAND["table"])
    return (
        float(_plain(HAND, query, table, t, s, r, n)),
        float(_folded(HAND, query, table, t, s, r, n, cap=2)),
        _tfrs(HAND, t, s, r, n),
    )


def test_hand_worked_plain() -> None:
    # row 0: log(e + e + 1) - 1; row 1: log(1 + 1 + e^2) - 0; row 2: log(3e) - 1 = log 3
    expected = (math.log(2 * E + 1) - 1) + math.log(2 + E**2) + math.log(3)
    assert _hand() == pytest.approx((expected,) * 3, rel=1e-6)


def test_hand_worked_temperature() -> None:
    # T = 0.5 doubles the scores: row 0 [2, 2, 0], row 1 [0, 0, 4], row 2 [2, 2, 2]
    # row 0: log(2e^2 + 1) - 2; row 1: log(2 + e^4); row 2: log(3e^2) - 2 = log 3
    expected = (math.log(2 * E**2 + 1) - 2) + math.log(2 + E**4) + math.log(3)
    assert _hand(t=0.5) == pytest.approx((expected,) * 3, rel=1e-6)


def test_hand_worked_sampling_bias_correction() -> None:
    # Subtracting log p adds log 2 to the a columns and log 4 to the b column; exp of the corrected logits:
    #   row 0: [2e, 2e, 4]      positive 2e   -> log((4e + 4) / 2e)   = log(2 + 2/e)
    #   row 1: [2, 2, 4e^2]     positive 2    -> log((4 + 4e^2) / 2)  = log(2 + 2e^2)
    #   row 2: [2e, 2e, 4e]     positive 4e   -> log(8e / 4e)         = log 2
    expected = math.log(2 + 2 / E) + math.log(2 + 2 * E**2) + math.log(2)
    assert _hand(s=True) == pytest.approx((expected,) * 3, rel=1e-6)


def test_hand_worked_remove_accidental_hits() -> None:
    # The other copy of a is no negative of rows 0 and 1 (folded: column a counts once, log 1, in those rows):
    #   row 0: columns 0, 2 -> log(e + 1) - 1;  row 1: columns 1, 2 -> log(1 + e^2);  row 2 unchanged: log 3
    expected = (math.log(E + 1) - 1) + math.log(1 + E**2) + math.log(3)
    assert _hand(r=True) == pytest.approx((expected,) * 3, rel=1e-6)


def test_hand_worked_hard_negatives() -> None:
    # One hard negative per row, plus the positive:
    #   row 0: negatives score 1 (copy of a), 0 (b)  -> keeps 1: log(e + e) - 1 = log 2
    #   row 1: negatives score 0 (copy of a), 2 (b)  -> keeps 2: log(1 + e^2)
    #   row 2: negatives score 1, 1 (both a)         -> keeps one: log(e + e) - 1 = log 2
    #   (folded, row 2's column a stands for 2 negatives and keeps 1 of them)
    expected = 2 * math.log(2) + math.log(1 + E**2)
    assert _hand(n=1) == pytest.approx((expected,) * 3, rel=1e-6)


def test_hand_worked_all_options() -> None:
    # T = 0.5, correction, accidental hits removed, one hard negative. Corrected exp of each logit:
    #   row 0: [2e^2, (removed), 4]          -> log((2e^2 + 4) / 2e^2) = log(1 + 2/e^2)
    #   row 1: [(removed), 2, 4e^4]          -> keeps b:  log((2 + 4e^4) / 2) = log(1 + 2e^4)
    #   row 2: [2e^2, 2e^2, 4e^2], one a kept -> log((2e^2 + 4e^2) / 4e^2) = log(3/2)
    expected = math.log(1 + 2 / E**2) + math.log(1 + 2 * E**4) + math.log(1.5)
    assert _hand(t=0.5, s=True, r=True, n=1) == pytest.approx((expected,) * 3, rel=1e-6)


# ------------------------------------------------------------------------------------------ model and trainer

ALL_ON = {"temperature": 0.5, "sampling_bias_correction": True, "remove_accidental_hits": True, "num_hard_negatives": 8}


def _features(data, rows: np.ndarray) -> dict[str, tf.Tensor]:
    return {
        "user": tf.constant(data.train.user[rows]),
        "time_bucket": tf.constant(data.train.time_bucket[rows]),
        "time_norm": tf.constant(data.train.time_norm[rows]),
        "item": tf.constant(data.train.item[rows]),
    }


def test_temperature_applies_to_the_plain_dot_product() -> None:
    data = small_data()
    base = {"layers": (16,), "embedding_dim": 8}
    assert build_model(TrialConfig(model=ModelConfig(**base)), data).temperature is None  # tutorial: no scaling
    assert build_model(TrialConfig(model=ModelConfig(**base, temperature=0.5)), data).temperature == 0.5
    assert build_model(TrialConfig(model=ModelConfig(**base, normalize=True)), data).temperature == 1.0


def test_sampling_probabilities_are_training_frequencies() -> None:
    data = small_data()
    model = build_model(TrialConfig(model=ModelConfig(layers=(16,), embedding_dim=8, **ALL_ON)), data)
    counts = np.bincount(data.train.item, minlength=data.num_items)
    np.testing.assert_allclose(model.sampling_probability.numpy(), counts / len(data.train), rtol=1e-6)
    plain = build_model(TrialConfig(model=ModelConfig(layers=(16,), embedding_dim=8)), data)
    assert plain.sampling_probability is None


@pytest.mark.parametrize("options", [ALL_ON, {"num_hard_negatives": 3}, {"remove_accidental_hits": True}])
def test_model_losses_equal_the_tfrs_hook(options: dict) -> None:
    data = small_data()
    model = build_model(TrialConfig(model=ModelConfig(layers=(16,), embedding_dim=8, **options)), data)
    rows = np.arange(256)
    feats = _features(data, rows)
    expected = float(model.compute_loss(feats, training=True))  # tfrs.tasks.Retrieval with the same options
    assert float(model.batch_loss(feats)) == pytest.approx(expected, rel=1e-5)
    unique, log_counts, positions, needed = fold_batches(data.train.item[rows], 1, 256)
    assert needed < 256  # the batch has duplicates
    folded = model.folded_batch_loss(feats, tf.constant(unique[0]), tf.constant(log_counts[0]), positions[0])
    assert float(folded) == pytest.approx(expected, rel=1e-5)


def test_training_with_every_option_on() -> None:
    """Two epochs with every option on, folded and plain: finite, one compiled epoch each, and the same losses."""
    data = small_data()
    losses = {}
    for fold in (True, False):
        cfg = TrialConfig(
            model=ModelConfig(layers=(32, 16), embedding_dim=16, **ALL_ON),
            # lr 0.01: see test_train.test_folded_and_plain_training_agree (rounding grows chaotically at 0.1)
            train=TrainConfig(epochs=2, batch_size=512, seed=1, fold=fold, learning_rate=0.01),
        )
        model = build_model(cfg, data)
        trainer = Trainer(model, data, cfg.train)
        result = trainer.fit()
        assert result.epochs_run == 2
        assert all(math.isfinite(h.loss) for h in result.history)
        assert trainer._epoch_fn.experimental_get_tracing_count() == 1  # one compiled epoch, no retracing
        losses[fold] = [h.loss for h in result.history]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
