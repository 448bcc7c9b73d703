"""Tower bodies and activations.

A *body* maps the concatenated feature embeddings ``[batch, input_dim]`` of a tower to its output
embedding ``[batch, layers[-1]]``. Every body ends with a linear layer, as in the TFRS tutorial.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tensorflow_recommenders as tfrs

from study.config import ModelConfig

ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "relu": tf.nn.relu,
    "gelu": tf.nn.gelu,
    "swish": tf.nn.silu,
    "tanh": tf.nn.tanh,
    "elu": tf.nn.elu,
    "selu": tf.nn.selu,
    "leaky_relu": tf.nn.leaky_relu,
    "sigmoid": tf.nn.sigmoid,
}


def get_activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """Look up an activation; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid activations are {sorted(ACTIVATIONS)}") from None


def _mlp_layers(layers: tuple[int, ...], cfg: ModelConfig, prefix: str) -> list[tf.keras.layers.Layer]:
    """Dense stack: hidden layers with activation (+ optional layer norm and dropout), last layer linear."""
    activation = get_activation(cfg.activation)
    out: list[tf.keras.layers.Layer] = []
    for i, units in enumerate(layers[:-1]):
        out.append(tf.keras.layers.Dense(units, activation=activation, name=f"{prefix}_dense_{i}"))
        if cfg.layer_norm:
            out.append(tf.keras.layers.LayerNormalization(name=f"{prefix}_norm_{i}"))
        if cfg.dropout > 0:
            out.append(tf.keras.layers.Dropout(cfg.dropout, name=f"{prefix}_dropout_{i}"))
    out.append(tf.keras.layers.Dense(layers[-1], name=f"{prefix}_output"))
    return out


class MLPBody(tf.keras.layers.Layer):
    """``[batch, input_dim] -> [batch, layers[-1]]``: hidden Dense layers then a linear output layer."""

    def __init__(self, cfg: ModelConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self._layers = _mlp_layers(cfg.layers, cfg, "mlp")

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        for layer in self._layers:
            x = layer(x, training=training)
        return x


class DeepCrossBody(tf.keras.layers.Layer):
    """Deep & Cross Network body (Wang et al., 2017/2021) with ``tfrs.layers.dcn.Cross`` layers.

    ``stacked``: x0 → cross_1 … cross_n → MLP. ``parallel``: concat(cross stack(x0), MLP hidden(x0)) → linear output.
    ``[batch, input_dim] -> [batch, layers[-1]]``.
    """

    def __init__(self, cfg: ModelConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        if cfg.cross_structure not in ("stacked", "parallel"):
            raise ValueError(f"unknown cross_structure {cfg.cross_structure!r}; valid are ['parallel', 'stacked']")
        proj = cfg.cross_projection_dim or None
        self._structure = cfg.cross_structure
        self._cross = [
            tfrs.layers.dcn.Cross(projection_dim=proj, kernel_initializer="glorot_uniform", name=f"cross_{i}")
            for i in range(max(1, cfg.cross_layers))
        ]
        if self._structure == "stacked":
            self._deep = _mlp_layers(cfg.layers, cfg, "deep")
            self._output = None
        else:
            self._deep = _mlp_layers(cfg.layers, cfg, "deep")[:-1]
            self._output = tf.keras.layers.Dense(cfg.layers[-1], name="deep_cross_output")

    def call(self, x0: tf.Tensor, training: bool = False) -> tf.Tensor:
        x = x0
        for cross in self._cross:
            x = cross(x0, x)
        if self._structure == "stacked":
            for layer in self._deep:
                x = layer(x, training=training)
            return x
        deep = x0
        for layer in self._deep:
            deep = layer(deep, training=training)
        return self._output(tf.concat([x, deep], axis=-1))


BODIES: dict[str, Callable[[ModelConfig], tf.keras.layers.Layer]] = {
    "mlp": lambda cfg: MLPBody(cfg, name="mlp_body"),
    "deep_cross": lambda cfg: DeepCrossBody(cfg, name="deep_cross_body"),
}


def build_body(cfg: ModelConfig) -> tf.keras.layers.Layer:
    """Build the tower body named by ``cfg.body``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        factory = BODIES[cfg.body]
    except KeyError:
        raise ValueError(f"unknown body {cfg.body!r}; valid bodies are {sorted(BODIES)}") from None
    return factory(cfg)
