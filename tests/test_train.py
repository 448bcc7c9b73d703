"""Model, loss, trainer and evaluation: hand-worked tiny tensors, parity with TFRS, contract tests over registries."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
from synthetic import small_data

import study.train as train_module
from study.config import ModelConfig, TrainConfig, TrialConfig
from study.errors import ConfigError, NonFiniteLossError
from study.model import in_batch_softmax_loss, masked_mean
from study.towers import ACTIVATIONS, BODIES, build_body, get_activation
from study.train import (
    METRIC_NAMES,
    OPTIMIZERS,
    Evaluator,
    Trainer,
    build_model,
    build_optimizer,
    metric_k,
    metrics_from_ranks,
    ranks_of,
    train,
    validate_config,
)


def _cfg(**train_kw) -> TrialConfig:
    base = {"epochs": 2, "batch_size": 512, "eval_every": 1, "seed": 1}
    base.update(train_kw)
    return TrialConfig(model=ModelConfig(layers=(32, 16), embedding_dim=16), train=TrainConfig(**base))


def _assert_same_under_xla(fn: Any, x: tf.Tensor) -> None:
    """``fn(x)`` and its gradient compile with XLA (``jit_compile``) and give the eager output."""
    eager = fn(x).numpy()  # builds a layer's weights
    variables = getattr(fn, "trainable_variables", [])

    @tf.function(jit_compile=True)
    def step(x: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        grads = tape.gradient(y, [x, *variables])
        return y, [tf.convert_to_tensor(g) for g in grads]

    y, grads = step(x)
    np.testing.assert_allclose(y.numpy(), eager, rtol=1e-5, atol=1e-6)
    assert len(grads) == 1 + len(variables)
    assert all(np.isfinite(g.numpy()).all() for g in grads)


# ------------------------------------------------------------------------------------------ loss


def test_in_batch_loss_hand_worked() -> None:
    q = tf.constant([[1.0, 0.0], [0.0, 2.0]])
    c = tf.constant([[1.0, 1.0], [0.0, 1.0]])
    # scores = [[1, 0], [2, 2]]; row 0: logsumexp(1, 0) - 1; row 1: logsumexp(2, 2) - 2 = log 2
    expected = (math.log(math.e + 1.0) - 1.0) + math.log(2.0)
    assert float(in_batch_softmax_loss(q, c)) == pytest.approx(expected, rel=1e-6)
    # temperature 0.5 doubles the logits: [[2, 0], [4, 4]]
    expected_t = (math.log(math.e**2 + 1.0) - 2.0) + math.log(2.0)
    assert float(in_batch_softmax_loss(q, c, 0.5)) == pytest.approx(expected_t, rel=1e-6)


@pytest.mark.parametrize("temperature", [None, 0.2])
def test_in_batch_loss_equals_tfrs_retrieval(temperature: float | None) -> None:
    rng = np.random.default_rng(0)
    q = tf.constant(rng.normal(size=(64, 8)), tf.float32)
    c = tf.constant(rng.normal(size=(64, 8)), tf.float32)
    task = tfrs.tasks.Retrieval(temperature=temperature)
    assert float(in_batch_softmax_loss(q, c, temperature)) == pytest.approx(float(task(q, c)), rel=1e-5)


def test_model_compute_loss_hook_matches_fast_loss() -> None:
    data = small_data()
    model = build_model(_cfg(), data)
    idx = np.arange(256)
    feats = {
        "user": tf.constant(data.train.user[idx]),
        "time_bucket": tf.constant(data.train.time_bucket[idx]),
        "time_norm": tf.constant(data.train.time_norm[idx]),
        "item": tf.constant(data.train.item[idx]),
    }
    assert float(model.compute_loss(feats, training=True)) == pytest.approx(float(model.batch_loss(feats)), rel=1e-5)


def test_masked_mean_ignores_padding() -> None:
    emb = tf.constant([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]], [[4.0], [4.0], [4.0]]])
    ids = tf.constant([[2, 5, 0], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_allclose(masked_mean(emb, ids).numpy(), [[2.0], [7.0], [0.0]])


# ------------------------------------------------------------------------------------------ metrics


def test_metrics_from_ranks_hand_worked() -> None:
    ranks = np.array([0, 3, 12, 1])
    users = np.array([7, 7, 7, 9])
    m = metrics_from_ranks(ranks, users, ks=(1, 5))
    assert m["top1"] == pytest.approx(1 / 4)
    assert m["top5"] == pytest.approx(3 / 4)
    # recall: user 7 hits 1/3 at k=1 and 2/3 at k=5; user 9 hits 0 at k=1 and 1 at k=5
    assert m["recall1"] == pytest.approx((1 / 3 + 0) / 2)
    assert m["recall5"] == pytest.approx((2 / 3 + 1) / 2)
    # ndcg@5: user 7 dcg = 1/log2(2) + 1/log2(5), idcg = 1 + 1/log2(3) + 1/log2(4); user 9 dcg = 1/log2(3), idcg 1
    u7 = (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    u9 = 1 / math.log2(3)
    assert m["ndcg5"] == pytest.approx((u7 + u9) / 2)
    assert m["ndcg1"] == pytest.approx((1 / 1 + 0) / 2)


def test_metric_names_parse() -> None:
    assert metric_k("top100") == 100 and metric_k("ndcg10") == 10 and metric_k("recall5") == 5
    assert all(metric_k(name) > 0 for name in METRIC_NAMES)
    with pytest.raises(ValueError, match="valid metrics"):
        metric_k("accuracy")


def test_exact_topk_agrees_with_factorized_topk() -> None:
    data = small_data()
    # jit=False: XLA compiling the training epoch costs more than these epochs take, and the claim is about the
    # evaluator (which ranks with its own compiled function either way).
    cfg = _cfg(epochs=3, ks=(1, 5, 10, 50), jit=False)
    model, _ = train(cfg, data)
    ours = Evaluator(model).evaluate(data.valid, cfg.train.ks)
    # Id-based FactorizedTopK (the true item must be among the retrieved ids). Its score-based mode scores the true
    # item separately from the candidate matmul, so rounding can rank it behind its own copy (reads ~30 % low at k=1).
    items = tf.data.Dataset.from_tensor_slices(np.arange(1, data.num_items, dtype=np.int32))
    candidates = items.batch(128).map(lambda ids: (ids, model.candidate_tower(ids)))
    metric = tfrs.metrics.FactorizedTopK(candidates=candidates, ks=cfg.train.ks)
    feats = {
        "user": data.valid.user,
        "time_bucket": data.valid.time_bucket,
        "time_norm": data.valid.time_norm,
    }
    query = model.query_tower({k: tf.constant(v) for k, v in feats.items()})
    true = model.candidate_tower(tf.constant(data.valid.item))
    metric.update_state(query, true, true_candidate_ids=tf.constant(data.valid.item))
    reference = [float(v) for v in metric.result()]
    for k, ref in zip(cfg.train.ks, reference, strict=True):
        assert abs(ours[f"top{k}"] - ref) <= 0.002, (k, ours[f"top{k}"], ref)
    assert ours["top50"] > ours["top1"]  # the metric is not constant


# ------------------------------------------------------------------------------------------ trainer


def test_training_learns_and_does_not_retrace() -> None:
    data = small_data()
    cfg = _cfg(epochs=4, batch_size=256)
    model = build_model(cfg, data)
    trainer = Trainer(model, data, cfg.train)
    before = Evaluator(model).evaluate(data.valid)["top10"]
    result = trainer.fit()
    assert result.epochs_run == 4
    assert trainer._epoch_fn.experimental_get_tracing_count() == 1
    losses = [h.loss for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_metrics["top10"] > before + 0.05
    assert result.best_epoch in (1, 2, 3, 4)
    assert result.best_value == max(h.metrics["top100"] for h in result.history)


def test_callback_can_stop_and_eval_every() -> None:
    data = small_data()
    seen = []
    # jit=False here and below: the epoch loop's bookkeeping is under test, not XLA (compiling costs seconds)
    _, result = train(_cfg(epochs=6, eval_every=2, jit=False), data, callback=lambda r: seen.append(r) or r.epoch >= 4)
    assert [r.epoch for r in seen] == [1, 2, 3, 4]
    assert [r.metrics is not None for r in seen] == [False, True, False, True]
    assert result.stopped_early


def test_patience_stops_training() -> None:
    data = small_data()
    # A learning rate this small never improves measurably after the first evaluations.
    cfg = _cfg(epochs=30, patience=1, learning_rate=1e-9, optimizer="sgd", momentum=0.0, jit=False)
    _, result = train(cfg, data)
    assert result.stopped_early and result.epochs_run < 30


def test_same_seed_same_result() -> None:
    data = small_data()
    _, a = train(_cfg(epochs=2), data)
    _, b = train(_cfg(epochs=2), data)
    assert [h.loss for h in a.history] == pytest.approx([h.loss for h in b.history], rel=1e-5)


def test_non_finite_loss_raises_with_epoch() -> None:
    data = small_data()
    with pytest.raises(NonFiniteLossError) as info:
        train(_cfg(epochs=5, optimizer="sgd", learning_rate=1e12, momentum=0.9), data)
    assert info.value.epoch >= 1
    assert "epoch" in str(info.value)


# ------------------------------------------------------------------------------------------ registries (contract tests)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains(name: str) -> None:
    data = small_data()
    lr = {"adagrad": 0.1, "sgd": 0.0005, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.001}[name]
    cfg = _cfg(epochs=3, optimizer=name, learning_rate=lr, jit=False)
    model, result = train(cfg, data)
    losses = [h.loss for h in result.history]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], (name, losses)
    assert isinstance(build_optimizer(TrainConfig(optimizer=name)), tf.keras.optimizers.Optimizer)
    # Under XLA too, as the default (jit) trainer applies it: the same dense-gradient updates compiled and not.
    # (Compiling a whole training epoch per optimizer would cost seconds each; the rest of that epoch is compiled
    # in the trainer tests above.)
    init = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    compiled, plain = _optimizer_steps(cfg.train, init, jit=True), _optimizer_steps(cfg.train, init, jit=False)
    assert not np.allclose(compiled, init), name  # the compiled steps moved the weights
    np.testing.assert_allclose(compiled, plain, rtol=1e-5, atol=1e-6)


def _optimizer_steps(cfg: TrainConfig, init: np.ndarray, jit: bool, steps: int = 3) -> np.ndarray:
    """``steps`` updates of ``cfg``'s optimizer on one table, in a ``tf.function`` compiled with XLA or not."""
    var = tf.Variable(init)
    optimizer = build_optimizer(cfg)
    optimizer.build([var])

    @tf.function(jit_compile=jit)
    def step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.gather(var, [0, 2, 2]) - 1.0))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, [var])]  # dense, as the trainer
        optimizer.apply_gradients(zip(grads, [var], strict=True))

    for _ in range(steps):
        step()
    return var.numpy()


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_builds_and_trains(name: str) -> None:
    data = small_data()
    cfg = TrialConfig(
        model=ModelConfig(layers=(16, 8), embedding_dim=8, activation=name),
        train=TrainConfig(epochs=1, batch_size=1024, eval_every=1, jit=False),
    )
    _, result = train(cfg, data)
    assert math.isfinite(result.history[0].loss)
    x = tf.constant([-2.0, 0.0, 3.0])
    assert get_activation(name)(x).shape == (3,)
    # Under XLA too, as the default (jit) trainer compiles it: what differs between the models here is the
    # activation alone, so compiling it (and its gradient) is the check; compiling whole epochs costs seconds each.
    _assert_same_under_xla(get_activation(name), tf.constant(np.linspace(-3.0, 3.0, 13), tf.float32))


@pytest.mark.parametrize("body", sorted(BODIES))
@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_every_body_output_shape(body: str, structure: str) -> None:
    data = small_data()
    cfg = TrialConfig(
        model=ModelConfig(layers=(24, 12), embedding_dim=8, body=body, cross_structure=structure, cross_layers=2),
        train=TrainConfig(epochs=1, batch_size=1024, jit=False),
    )
    model, result = train(cfg, data)
    out = model.candidate_tower(tf.constant([1, 2, 3]))
    assert out.shape == (3, 12)
    assert math.isfinite(result.history[0].loss)
    # Under XLA too (the default trainer compiles the epoch): the body is what differs between these models.
    body_layer = build_body(cfg.model)
    _assert_same_under_xla(body_layer, tf.constant(np.random.default_rng(0).normal(size=(5, 20)), tf.float32))


@pytest.mark.parametrize(
    ("field", "value"),
    [("activation", "relux"), ("body", "transformer"), ("embedding", "bloom"), ("optimizer", "adamax")],
)
def test_unknown_names_are_config_errors(field: str, value: str) -> None:
    section = "train" if field == "optimizer" else "model"
    cfg = TrialConfig().replace(**{section: {field: value}})
    with pytest.raises(ConfigError, match=f"unknown name '{value}'; valid names are"):
        validate_config(cfg)


def test_registry_lookup_errors_list_valid_names() -> None:
    with pytest.raises(ValueError, match="valid optimizers are"):
        build_optimizer(TrainConfig(optimizer="nope"))
    with pytest.raises(ValueError, match="valid activations are"):
        get_activation("nope")


def test_normalized_embeddings_with_temperature() -> None:
    data = small_data()
    cfg = TrialConfig(
        model=ModelConfig(layers=(16,), embedding_dim=8, normalize=True, temperature=0.1),
        train=TrainConfig(epochs=2, batch_size=512),
    )
    model, result = train(cfg, data)
    out = model.query_tower(
        {"user": tf.constant([1, 2]), "time_bucket": tf.constant([0, 5]), "time_norm": tf.constant([0.0, 1.0])}
    )
    np.testing.assert_allclose(tf.norm(out, axis=1).numpy(), [1.0, 1.0], rtol=1e-5)
    assert math.isfinite(result.history[-1].loss)


# ------------------------------------------------------------------------------------------ duplicate folding


def test_fold_batches_hand_worked() -> None:
    from study.train import fold_batches

    items = np.array([5, 3, 5, 5, 7, 7, 2, 9])  # two batches of 4
    unique, log_counts, positions, needed = fold_batches(items, 2, 4)
    assert needed == 3
    np.testing.assert_array_equal(unique, [[3, 5, 0, 0], [2, 7, 9, 0]])
    np.testing.assert_allclose(log_counts[0, :2], [0.0, math.log(3)])
    np.testing.assert_allclose(log_counts[1, :3], [math.log(1), math.log(2), 0.0])
    assert (log_counts[:, 3] < -1e8).all() and log_counts[0, 2] < -1e8
    np.testing.assert_array_equal(positions, [[1, 0, 1, 1], [1, 1, 0, 2]])
    assert fold_batches(items, 2, 2)[3] == 3  # too narrow: reports what is needed


def test_folded_loss_and_gradients_equal_plain_in_batch_softmax() -> None:
    from study.model import folded_softmax_loss
    from study.train import fold_batches

    rng = np.random.default_rng(3)
    items = rng.integers(0, 6, 32)  # many duplicates
    table = tf.Variable(rng.normal(size=(6, 4)), dtype=tf.float32)
    query = tf.constant(rng.normal(size=(32, 4)), tf.float32)
    unique, log_counts, positions, _ = fold_batches(items, 1, 8)
    with tf.GradientTape(persistent=True) as tape:
        plain = in_batch_softmax_loss(query, tf.gather(table, items), 0.5)
        folded = folded_softmax_loss(query, tf.gather(table, unique[0]), log_counts[0], positions[0], 0.5)
    assert float(folded) == pytest.approx(float(plain), rel=1e-5)
    g_plain = tf.convert_to_tensor(tape.gradient(plain, table))
    g_folded = tf.convert_to_tensor(tape.gradient(folded, table))
    np.testing.assert_allclose(g_folded.numpy(), g_plain.numpy(), rtol=1e-4, atol=1e-5)


def test_folded_and_plain_training_agree() -> None:
    data = small_data()
    # lr 0.01: at Adagrad 0.1 on a summed loss, float rounding differences between the two (equal) formulas grow
    # chaotically over steps; at 0.01 both runs agree to the printed digits.
    # jit=False: the two formulas are compared, not XLA (which the other trainer tests compile the folded epoch with).
    _, folded = train(_cfg(epochs=2, fold=True, learning_rate=0.01, jit=False), data)
    _, plain = train(_cfg(epochs=2, fold=False, learning_rate=0.01, jit=False), data)
    assert [h.loss for h in folded.history] == pytest.approx([h.loss for h in plain.history], rel=1e-5)


def test_collapsed_model_ranks_last_not_first() -> None:
    """Ties count against the model: if every item scores the same, no true item is in any top-k."""
    data = small_data()
    model = build_model(_cfg(), data)
    for var in model.candidate_tower.trainable_variables:
        var.assign(tf.zeros_like(var))  # every candidate embedding is the zero vector: all scores tie at 0
    metrics = Evaluator(model).evaluate(data.valid, (1, 10, 100))
    assert metrics["top100"] == 0.0 and metrics["top1"] == 0.0
    ranks = Evaluator(model).ranks(data.valid)
    assert (ranks == data.num_items - 2).all()  # last among the num_items - 1 real candidates


def test_rank_counts_by_hand() -> None:
    """Ranks worked out by hand; ties with the true item count against it."""
    query = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)  # [3, 2]
    candidates = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]], np.float32)  # items 1..4, [4, 2]
    # scores: row 0 [1, 0, 1, 2], row 1 [0, 1, 1, 0], row 2 = row 0.
    # item 1 in row 0 (score 1): items 3 and 4 score >= 1 -> rank 2; item 2 in row 1 (1): item 3 ties -> rank 1;
    # item 4 in row 2 (2): none above -> rank 0.
    assert ranks_of(query, candidates, np.array([1, 2, 4])).tolist() == [2, 1, 0]


def test_ranks_equal_tensorflow_scores() -> None:
    """The numpy ranks equal ranks counted from TensorFlow's own score matrix of a trained model (up to near-ties
    that the two matmuls round differently)."""
    data = small_data()
    model, _ = train(_cfg(epochs=1, jit=False), data)
    evaluator = Evaluator(model)
    ranks = evaluator.ranks(data.valid)
    queries = evaluator._queries_fn({k: tf.constant(v) for k, v in train_module._features(data.valid).items()})
    scores = tf.matmul(queries, evaluator.candidate_embeddings(), transpose_b=True).numpy()
    true = scores[np.arange(len(scores)), data.valid.item - 1]
    expected = (scores >= true[:, None]).sum(axis=1) - 1
    assert np.mean(ranks != expected) < 0.01
    assert abs(np.mean(ranks < 10) - np.mean(expected < 10)) <= 0.002


def test_chunked_ranks_equal_one_pass() -> None:
    """A short last chunk: ranks match an unchunked pass, and the query tower traced once."""
    data = small_data()
    model, _ = train(_cfg(epochs=1, jit=False), data)
    n = len(data.valid)
    chunk = 7 if n % 7 else 9  # a short last chunk
    assert n % chunk
    whole = Evaluator(model, chunk=n).ranks(data.valid)
    chunked = Evaluator(model, chunk=chunk)
    assert np.array_equal(chunked.ranks(data.valid), whole)
    assert chunked._queries_fn.experimental_get_tracing_count() == 1


def test_compiled_and_plain_epoch_give_the_same_loss() -> None:
    """One epoch from the same weights over the same batches: the XLA-compiled and the plain graph epoch agree."""
    data = small_data()
    losses = {}
    for jit in (False, True):
        cfg = _cfg(epochs=1, jit=jit, learning_rate=0.05)
        losses[jit] = Trainer(build_model(cfg, data), data, cfg.train).train_epoch()
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_jit_warmup_compiles_only_after_the_warmup_epochs() -> None:
    """``jit_warmup: 2``: epochs 1-2 run the plain graph, epoch 3 builds the XLA epoch (a fresh function, so its
    time counts as compilation), and training goes on from the same weights: the losses follow a never-compiled run."""
    data = small_data()
    cfg = _cfg(epochs=4, jit=True, jit_warmup=2, learning_rate=0.05)
    trainer = Trainer(build_model(cfg, data), data, cfg.train)
    fresh = []
    result = trainer.fit(callback=lambda r: fresh.append(trainer.fresh_function))
    assert fresh == [True, False, True, False]
    assert trainer._epoch_fn.function_spec.jit_compile is True
    assert result.compile_seconds == pytest.approx(result.history[0].train_seconds + result.history[2].train_seconds)
    plain_cfg = _cfg(epochs=4, jit=False, learning_rate=0.05)
    _, plain = train(plain_cfg, data)
    assert [h.loss for h in result.history] == pytest.approx([h.loss for h in plain.history], rel=1e-3)


def test_jit_warmup_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"train.jit_warmup: must be >= 0, but got -1"):
        TrainConfig(jit_warmup=-1)
