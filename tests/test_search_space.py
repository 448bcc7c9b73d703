"""Tests of study.search_space: validation of whole files, sampling, rebuilding, baselines. No training."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from study.config import ModelConfig, TrainConfig, TrialConfig
from study.errors import ConfigError, SearchSpaceError
from study.names import PROTOCOLS, PRUNERS, SAMPLERS
from study.search_space import (
    SearchSpace,
    available_spaces,
    baseline_params,
    config_from_params,
    load_config_file,
    load_space,
    parse_space,
    suggest,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("default", "tutorial", "quick", "memory", "losses", "multitask")

# A valid base the bad snippets below are appended to / stand alone.
OPTIMIZERS = "  optimizer: {type: categorical, choices: [adam, sgd]}\n"

# (id, YAML text, the key path (or fragment) the one-line message must contain)
BAD_SPACES: list[tuple[str, str, str]] = [
    ("yaml-syntax", "model:\n  depth: {type: int, low: 1\n  units: 3\n", "line 3"),
    ("yaml-tab", "model:\n\tdepth: 1\n", "line 2"),
    ("top-level-list", "- model\n- train\n", "top level"),
    ("top-level-scalar", "hello\n", "top level"),
    ("empty-file", "# only a comment\n", "top level"),
    ("unknown-section", "modle:\n  embedding_dim: 32\n", "modle: unknown section (did you mean 'model'?)"),
    ("section-not-mapping", "train: [1, 2]\n", "train: must be a mapping"),
    ("unknown-key", "model:\n  activaton: relu\n", "model.activaton: unknown key (did you mean 'activation'?)"),
    (
        "key-in-wrong-section",
        "model:\n  learning_rate: 0.1\n",
        "model.learning_rate: unknown key (it belongs in section 'train')",
    ),
    ("template-key-in-train", "train:\n  depth: 2\n", "train.depth: unknown key (it belongs in section 'model')"),
    (
        "key-in-two-sections",
        "run:\n  metric: top10\ntrain:\n  metric: top100\n",
        "train.metric: already declared in section 'run'",
    ),
    (
        "eval-every-twice",
        "train:\n  eval_every: 2\nrun:\n  eval_every: 3\n",
        "run.eval_every: already declared in section 'train'",
    ),
    (
        "unknown-type",
        "train:\n  learning_rate: {type: loguniform, low: 0.1, high: 1}\n",
        "train.learning_rate.type: unknown distribution type",
    ),
    (
        "no-type-no-value",
        "train:\n  learning_rate: {low: 0.1, high: 1}\n",
        "train.learning_rate: an entry mapping needs 'type'",
    ),
    (
        "spec-key-for-other-type",
        "train:\n  learning_rate: {type: float, low: 0.1, high: 1, choices: [1]}\n",
        "train.learning_rate.choices: not valid for type float",
    ),
    ("spec-key-typo", "train:\n  learning_rate: {type: float, low: 0.1, hihg: 1}\n", "train.learning_rate.hihg"),
    ("missing-low", "train:\n  learning_rate: {type: float, high: 1}\n", "train.learning_rate.low: is required"),
    ("missing-high", "model:\n  embedding_dim: {type: int, low: 8}\n", "model.embedding_dim.high: is required"),
    ("missing-choices", "model:\n  activation: {type: categorical}\n", "model.activation.choices: is required"),
    (
        "low-ge-high",
        "model:\n  depth: {type: int, low: 1, high: 3}\n  units: {type: int, low: 128, high: 64}\n  output_dim: 32\n",
        "model.units.high: must be > low, but got low=128, high=64",
    ),
    (
        "low-eq-high",
        "train:\n  learning_rate: {type: float, low: 0.1, high: 0.1}\n",
        "train.learning_rate.high: must be > low",
    ),
    (
        "log-low-zero",
        "train:\n  learning_rate: {type: float, low: 0, high: 1, log: true}\n",
        "train.learning_rate.low: must be > 0 when log is true",
    ),
    (
        "log-with-step",
        "train:\n  learning_rate: {type: float, low: 0.1, high: 1, log: true, step: 0.1}\n",
        "train.learning_rate.step: cannot be combined with log",
    ),
    (
        "log-not-bool",
        "train:\n  learning_rate: {type: float, low: 0.1, high: 1, log: sometimes}\n",
        "train.learning_rate.log",
    ),
    (
        "step-zero",
        "model:\n  dropout: {type: float, low: 0.0, high: 0.5, step: 0}\n",
        "model.dropout.step: must be > 0",
    ),
    (
        "step-negative",
        "train:\n  batch_size: {type: int, low: 1024, high: 4096, step: -1024}\n",
        "train.batch_size.step: must be > 0",
    ),
    (
        "step-off-grid",
        "train:\n  batch_size: {type: int, low: 1024, high: 4000, step: 1024}\n",
        "train.batch_size.high: must be low plus a whole number of steps",
    ),
    (
        "empty-choices",
        "train:\n  optimizer: {type: categorical, choices: []}\n",
        "train.optimizer.choices: must not be empty",
    ),
    (
        "choices-not-list",
        "train:\n  optimizer: {type: categorical, choices: adam}\n",
        "train.optimizer.choices: must be a list",
    ),
    (
        "duplicate-choices",
        "train:\n  optimizer: {type: categorical, choices: [adam, sgd, adam]}\n",
        "train.optimizer.choices[2]: duplicate choice",
    ),
    (
        "duplicate-after-coercion",
        "train:\n  batch_size: {type: categorical, choices: [1024, 1024.0]}\n",
        "train.batch_size.choices[1]: duplicate choice",
    ),
    (
        "low-not-number",
        "train:\n  learning_rate: {type: float, low: abc, high: 1}\n",
        "train.learning_rate.low: must be a finite number, but got 'abc'",
    ),
    (
        "int-type-float-bounds",
        "train:\n  batch_size: {type: int, low: 1024.0, high: 4096}\n",
        "train.batch_size.low: must be an int for type int",
    ),
    (
        "float-type-int-field",
        "train:\n  batch_size: {type: float, low: 1024, high: 4096}\n",
        "train.batch_size.type: must be int or categorical",
    ),
    (
        "int-type-float-field",
        "train:\n  learning_rate: {type: int, low: 1, high: 3}\n",
        "train.learning_rate.type: must be float or categorical",
    ),
    (
        "float-type-str-field",
        "model:\n  activation: {type: float, low: 0, high: 1}\n",
        "model.activation.type: must be categorical",
    ),
    ("string-for-float-field", "train:\n  learning_rate: fast\n", "train.learning_rate: must be float, but got 'fast'"),
    ("string-for-bool-field", "model:\n  use_timestamp: maybe\n", "model.use_timestamp: must be bool"),
    ("float-for-int-field", "train:\n  epochs: 2.5\n", "train.epochs: must be int"),
    ("list-for-scalar-field", "train:\n  batch_size: [1024, 2048]\n", "train.batch_size: must be a single int"),
    (
        "bad-choice-type",
        "model:\n  embedding_dim: {type: categorical, choices: [16, big]}\n",
        "model.embedding_dim.choices[1]: must be int",
    ),
    ("unknown-activation", "model:\n  activation: relux\n", "model.activation: unknown activation"),
    (
        "unknown-activation-choice",
        "model:\n  activation: {type: categorical, choices: [relu, gleu]}\n",
        "model.activation.choices[1]: unknown activation",
    ),
    (
        "unknown-optimizer-choice",
        "train:\n  optimizer: {type: categorical, choices: [adam, adamx]}\n",
        "train.optimizer.choices[1]: unknown optimizer",
    ),
    ("unknown-body", "model:\n  body: transformer\n", "model.body: unknown body"),
    (
        "unknown-embedding",
        "model:\n  embedding: {type: categorical, choices: [fancy]}\n",
        "model.embedding.choices[0]: unknown embedding",
    ),
    ("unknown-metric-train", "train:\n  metric: top3\n", "train.metric: unknown metric"),
    ("unknown-metric-run", "run:\n  metric: hits10\n", "run.metric: unknown metric"),
    ("unknown-protocol", "run:\n  protocol: randm\n", "run.protocol: unknown protocol"),
    ("unknown-sampler", "run:\n  sampler: optuna\n", "run.sampler: unknown sampler"),
    ("unknown-pruner", "run:\n  pruner: asha\n", "run.pruner: unknown pruner"),
    ("unknown-run-key", "run:\n  trials: 10\n", "run.trials: unknown key"),
    (
        "run-distribution",
        "run:\n  sampler: {type: categorical, choices: [tpe, random]}\n",
        "run.sampler: must be a fixed scalar",
    ),
    ("run-eval-every", "run:\n  eval_every: 0\n", "run.eval_every: must be an int >= 1"),
    (
        "when-undeclared",
        "train:\n  momentum: {type: float, low: 0.5, high: 0.9, when: {optimiser: sgd}}\n",
        "train.momentum.when.optimiser: must refer to a param declared earlier",
    ),
    (
        "when-later",
        "train:\n  momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: sgd}}\n" + OPTIMIZERS,
        "train.momentum.when.optimizer: must refer to a param declared earlier in the file, but got 'optimizer' (declared later)",
    ),
    (
        "when-later-section",
        "model:\n  dropout: {value: 0.1, when: {optimizer: sgd}}\ntrain:\n" + OPTIMIZERS,
        "model.dropout.when.optimizer",
    ),
    (
        "when-impossible-value",
        "train:\n" + OPTIMIZERS + "  momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: [sgd, rmsprop]}}\n",
        "train.momentum.when.optimizer[1]: optimizer can never take this value",
    ),
    (
        "when-unknown-name",
        "train:\n" + OPTIMIZERS + "  momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: sgdd}}\n",
        "train.momentum.when.optimizer: unknown optimizer",
    ),
    (
        "when-out-of-range",
        "model:\n  depth: {type: int, low: 1, high: 2}\n  units: 64\n  output_dim: 32\n  dropout: {type: float, low: 0.0, high: 0.5, when: {depth: 3}}\n",
        "model.dropout.when.depth: depth can never take this value",
    ),
    (
        "when-fixed-mismatch",
        "train:\n  optimizer: adam\n  momentum: {value: 0.5, when: {optimizer: sgd}}\n",
        "train.momentum.when.optimizer: optimizer can never take this value",
    ),
    (
        "when-not-mapping",
        "train:\n" + OPTIMIZERS + "  momentum: {type: float, low: 0.5, high: 0.9, when: sgd}\n",
        "train.momentum.when: must be a non-empty mapping",
    ),
    (
        "when-units",
        "model:\n  depth: {type: int, low: 1, high: 3}\n  units: 64\n  output_dim: 32\n  dropout: {value: 0.1, when: {units: 64}}\n",
        "model.dropout.when.units",
    ),
    (
        "when-on-template",
        "train:\n" + OPTIMIZERS + "model:\n  depth: {type: int, low: 1, high: 3, when: {optimizer: sgd}}\n",
        "model.depth.when: is not supported",
    ),
    (
        "layers-and-depth",
        "model:\n  layers: [64, 32]\n  depth: 2\n  units: 64\n  output_dim: 32\n",
        "model.depth: cannot be combined with model.layers",
    ),
    (
        "units-missing",
        "model:\n  depth: {type: int, low: 1, high: 3}\n  output_dim: 32\n",
        "model.units: is required when depth can exceed 1",
    ),
    ("output-dim-missing", "model:\n  depth: 1\n", "model.output_dim: is required with depth"),
    ("units-without-depth", "model:\n  units: 64\n", "model.units: is part of the layer template"),
    (
        "depth-zero",
        "model:\n  depth: {type: int, low: 0, high: 2}\n  units: 64\n  output_dim: 32\n",
        "model.depth.low: must be >= 1",
    ),
    (
        "depth-choice-zero",
        "model:\n  depth: {type: categorical, choices: [0, 1]}\n  output_dim: 32\n",
        "model.depth.choices[0]: must be an int >= 1",
    ),
    ("output-dim-float", "model:\n  depth: 1\n  output_dim: 32.5\n", "model.output_dim: must be an int >= 1"),
    (
        "layers-distribution-int",
        "model:\n  layers: {type: int, low: 1, high: 3}\n",
        "model.layers.type: must be categorical",
    ),
    (
        "layers-bad-choice",
        "model:\n  layers: {type: categorical, choices: [[32], [64, abc]]}\n",
        "model.layers.choices[1]: must be list of ints",
    ),
    ("layers-zero", "model:\n  layers: [64, 0]\n", "model.layers: must be a non-empty list of positive ints"),
    # ConfigError checks of config.py (__post_init__), reached through fixed values, choices and bounds
    ("dropout-fixed", "model:\n  dropout: 1.5\n", "model.dropout: must be in [0, 1)"),
    (
        "dropout-high",
        "model:\n  dropout: {type: float, low: 0.0, high: 1.0}\n",
        "model.dropout.high: must be in [0, 1)",
    ),
    (
        "embedding-dim-zero",
        "model:\n  embedding_dim: {type: categorical, choices: [0, 16]}\n",
        "model.embedding_dim.choices[0]: must be >= 1",
    ),
    ("temperature-zero", "model:\n  temperature: 0\n", "model.temperature: must be > 0"),
    (
        "learning-rate-negative",
        "train:\n  learning_rate: {type: float, low: -1, high: 1}\n",
        "train.learning_rate.low: must be > 0",
    ),
    ("batch-size-one", "train:\n  batch_size: 1\n", "train.batch_size: must be >= 2"),
    ("epochs-zero", "train:\n  epochs: 0\n", "train.epochs: must be >= 1"),
    ("eval-every-zero", "train:\n  eval_every: {value: 0}\n", "train.eval_every.value: must be >= 1"),
    ("patience-negative", "train:\n  patience: -1\n", "train.patience: must be >= 0"),
    ("ks-zero", "train:\n  ks: [0, 10]\n", "train.ks: must be positive ints"),
    # retrieval-loss options
    (
        "temperature-low-zero",
        "model:\n  temperature: {type: float, low: 0.0, high: 1.0}\n",
        "model.temperature.low: must be > 0",
    ),
    ("hard-negatives-zero", "model:\n  num_hard_negatives: 0\n", "model.num_hard_negatives: must be an int >= 1"),
    (
        "hard-negatives-low-zero",
        "model:\n  num_hard_negatives: {type: int, low: 0, high: 64}\n",
        "model.num_hard_negatives.low: must be an int >= 1",
    ),
    (
        "hard-negatives-choice-negative",
        "model:\n  num_hard_negatives: {type: categorical, choices: [null, -4]}\n",
        "model.num_hard_negatives.choices[1]: must be an int >= 1",
    ),
    ("hard-negatives-fraction", "model:\n  num_hard_negatives: 2.5\n", "model.num_hard_negatives: must be int or null"),
    (
        "hard-negatives-float-type",
        "model:\n  num_hard_negatives: {type: float, low: 1, high: 8}\n",
        "model.num_hard_negatives.type: must be int or categorical",
    ),
    (
        "sampling-bias-not-bool",
        "model:\n  sampling_bias_correction: maybe\n",
        "model.sampling_bias_correction: must be bool",
    ),
    (
        "accidental-hits-int-type",
        "model:\n  remove_accidental_hits: {type: int, low: 0, high: 1}\n",
        "model.remove_accidental_hits.type: must be categorical",
    ),
]


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(path: Path | str) -> str:
    with pytest.raises(SearchSpaceError) as info:
        load_space(str(path))
    return str(info.value)


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BAD_SPACES], ids=[i for i, _, _ in BAD_SPACES])
def test_bad_space_raises_one_line_error_with_key_path(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    message = _error(path)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message


def test_bad_space_table_is_large_and_ids_unique() -> None:
    ids = [i for i, _, _ in BAD_SPACES]
    assert len(ids) >= 20
    assert len(set(ids)) == len(ids)


def test_unknown_names_list_the_valid_ones(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "train:\n  optimizer: {type: categorical, choices: [adam, adamx]}\n"))
    assert "'adagrad'" in message and "'rmsprop'" in message and "but got 'adamx'" in message
    assert "did you mean 'adam" in message
    message = _error(_write(tmp_path, "run:\n  pruner: asha\n"))
    assert str(list(PRUNERS)) in message


def test_unknown_key_lists_valid_keys(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "train:\n  lerning_rate: 0.1\n"))
    assert "did you mean 'learning_rate'?" in message
    assert "'batch_size'" in message


def test_yaml_1e_minus_3_string_is_accepted_as_float_bound(tmp_path: Path) -> None:
    space = load_space(
        str(_write(tmp_path, "train:\n  learning_rate: {type: float, low: 1e-3, high: 0.5, log: true}\n"))
    )
    distribution = space.distributions()["learning_rate"]
    assert isinstance(distribution, optuna.distributions.FloatDistribution)
    assert distribution.low == pytest.approx(1e-3) and distribution.log


# ----------------------------------------------------------------------------------------------- shipped spaces


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_loads_by_name_and_path(name: str) -> None:
    space = load_space(name)
    assert isinstance(space, SearchSpace)
    assert space.entries
    assert re.fullmatch(r"[0-9a-f]{16}", space.fingerprint())
    by_path = load_space(str(REPO / "search_spaces" / f"{name}.yaml"))
    assert by_path.fingerprint() == space.fingerprint()
    assert set(SHIPPED) <= set(available_spaces())
    assert space.run.get("protocol", "random") in PROTOCOLS
    assert space.run.get("sampler", "tpe") in SAMPLERS


def test_shipped_spaces_content() -> None:
    default = load_space("default")
    assert default.run == {"protocol": "random", "sampler": "tpe", "pruner": "hyperband", "metric": "top100"}
    names = set(default.distributions())
    assert {"depth", "units_0", "units_1", "output_dim", "optimizer", "learning_rate", "momentum"} <= names
    assert "units_2" not in names
    assert default.entry("epochs") is not None and default.entry("epochs").value == 15

    tutorial = load_space("tutorial")
    assert list(tutorial.distributions()) == ["layers"]
    assert tutorial.distributions()["layers"].choices == ("32", "64-32", "128-64-32")
    assert tutorial.run["protocol"] == "tutorial"
    config = config_from_params(tutorial, {"layers": "128-64-32"})
    assert config.model.layers == (128, 64, 32)
    assert (config.model.use_timestamp, config.model.use_title_words, config.model.use_genres) == (True, True, False)
    assert (config.train.epochs, config.train.eval_every, config.train.learning_rate) == (300, 5, 0.1)
    assert (config.train.optimizer, config.train.batch_size, config.model.embedding_dim) == ("adagrad", 2048, 32)

    quick = load_space("quick")
    assert quick.max_depth() == 2
    assert set(quick.distributions()["optimizer"].choices) == {"adagrad", "adam"}


def test_missing_space_lists_available_names(tmp_path: Path) -> None:
    with pytest.raises(SearchSpaceError, match=r"^nope: .*'default'.*'quick'.*'tutorial'"):
        load_space("nope")
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(SearchSpaceError, match=re.escape(missing) + r": no such file; available spaces are"):
        load_space(missing)


def test_name_resolves_in_cwd_first_then_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "search_spaces").mkdir()
    _write(tmp_path / "search_spaces", "train:\n  epochs: 7\n", "mine.yaml")
    _write(tmp_path / "search_spaces", "train:\n  epochs: 8\n", "quick.yaml")
    monkeypatch.chdir(tmp_path)
    assert config_from_params(load_space("mine"), {}).train.epochs == 7
    assert config_from_params(load_space("quick"), {}).train.epochs == 8  # the cwd one shadows the repo's
    assert load_space("tutorial").entry("epochs").value == 300  # falls back to the repo root
    assert "mine" in available_spaces()


# ---------------------------------------------------------------------------------------------------- sampling


def _ask_many(space: SearchSpace, n: int, seed: int = 0) -> list[tuple[optuna.trial.Trial, TrialConfig]]:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((trial, suggest(trial, space)))
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_suggest_yields_valid_configs_that_rebuild_from_params(name: str) -> None:
    space = load_space(name)
    distributions = space.distributions()
    for trial, config in _ask_many(space, 40):
        assert isinstance(config, TrialConfig)
        assert config_from_params(space, trial.params) == config
        for param, distribution in trial.distributions.items():
            assert distributions[param] == distribution
        assert TrialConfig.from_dict(config.to_dict()) == config


def test_conditional_params_only_when_active() -> None:
    space = load_space("default")
    optimizers = set()
    for trial, config in _ask_many(space, 80, seed=3):
        optimizer = trial.params["optimizer"]
        optimizers.add(optimizer)
        assert ("momentum" in trial.params) == (optimizer == "rmsprop")
        assert ("weight_decay" in trial.params) == (optimizer == "adamw")
        if "momentum" not in trial.params:
            assert config.train.momentum == TrainConfig().momentum
        else:
            assert config.train.momentum == trial.params["momentum"]
        if "weight_decay" not in trial.params:
            assert config.train.weight_decay == TrainConfig().weight_decay
    assert optimizers == {"adagrad", "adam", "adamw", "rmsprop"}


def test_units_follow_depth() -> None:
    space = load_space("default")
    depths = set()
    for trial, config in _ask_many(space, 60, seed=5):
        depth = trial.params["depth"]
        depths.add(depth)
        units = sorted(k for k in trial.params if k.startswith("units_"))
        assert units == [f"units_{i}" for i in range(depth - 1)]
        assert config.model.layers == (*[trial.params[u] for u in units], trial.params["output_dim"])
        assert all(32 <= w <= 256 for w in config.model.layers[:-1])
    assert depths == {1, 2, 3}


def test_same_seed_same_params() -> None:
    space = load_space("default")
    first = [t.params for t, _ in _ask_many(space, 15, seed=11)]
    second = [t.params for t, _ in _ask_many(space, 15, seed=11)]
    other = [t.params for t, _ in _ask_many(space, 15, seed=12)]
    assert first == second
    assert first != other


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_config_from_params_of_best_trial_with_tpe() -> None:
    space = load_space("default")
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=5),
    )
    configs = {}

    def objective(trial: optuna.trial.Trial) -> float:
        config = suggest(trial, space)
        configs[trial.number] = config
        return -abs(config.train.learning_rate - 0.05) + len(config.model.layers)

    study.optimize(objective, n_trials=15)
    best = study.best_trial
    assert config_from_params(space, best.params) == configs[best.number]


def test_fixed_entry_with_when(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """
        train:
          optimizer: {type: categorical, choices: [adam, sgd]}
          momentum: {value: 0.5, when: {optimizer: sgd}}
        """
    )
    space = load_space(str(_write(tmp_path, text)))
    assert config_from_params(space, {"optimizer": "sgd"}).train.momentum == 0.5
    assert config_from_params(space, {"optimizer": "adam"}).train.momentum == TrainConfig().momentum


def test_when_on_layers_categorical_and_bool(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """
        model:
          layers: {type: categorical, choices: [[32], [64, 32]]}
          dropout: {type: float, low: 0.0, high: 0.5, when: {layers: "64-32"}}
          normalize: {type: categorical, choices: [false, true]}
          temperature: {type: float, low: 0.05, high: 1.0, log: true, when: {normalize: true}}
        """
    )
    space = load_space(str(_write(tmp_path, text)))
    for trial, config in _ask_many(space, 30, seed=1):
        assert ("dropout" in trial.params) == (trial.params["layers"] == "64-32")
        assert ("temperature" in trial.params) == (trial.params["normalize"] is True)
        assert config.model.layers == ((64, 32) if trial.params["layers"] == "64-32" else (32,))


def test_config_from_params_rejects_foreign_params() -> None:
    space = load_space("quick")
    with pytest.raises(SearchSpaceError, match="depth: missing from the trial's params"):
        config_from_params(space, {})
    params = {
        "depth": 5, "output_dim": 16, "activation": "relu", "embedding_dim": 8,
        "optimizer": "adam", "learning_rate": 0.1, "batch_size": 1024,
    }  # fmt: skip
    with pytest.raises(SearchSpaceError, match=r"depth: outside \[1, 2\]"):
        config_from_params(space, params)


# ------------------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_ignores_formatting_but_not_ranges(tmp_path: Path) -> None:
    original = (REPO / "search_spaces" / "default.yaml").read_text()
    data = yaml.safe_load(original)
    data = {"train": data["train"], "model": data["model"], "run": data["run"]}  # sections reordered
    reformatted = yaml.safe_dump(data, default_flow_style=False, sort_keys=False, indent=4)
    assert reformatted != original
    base = load_space(str(_write(tmp_path, original, "a.yaml"))).fingerprint()
    assert load_space(str(_write(tmp_path, "# a comment\n\n" + reformatted, "b.yaml"))).fingerprint() == base
    assert load_space("default").fingerprint() == base
    changed = original.replace("high: 0.5, log: true", "high: 0.4, log: true")
    assert changed != original
    assert load_space(str(_write(tmp_path, changed, "c.yaml"))).fingerprint() != base
    changed = original.replace("epochs: 15", "epochs: 16")
    assert load_space(str(_write(tmp_path, changed, "d.yaml"))).fingerprint() != base
    changed = original.replace("when: {optimizer: rmsprop}", "when: {optimizer: [rmsprop, adam]}")
    assert load_space(str(_write(tmp_path, changed, "e.yaml"))).fingerprint() != base


# ------------------------------------------------------------------------------------------ retrieval-loss options

LOSS_OPTIONS_FIXED = """
model:
  temperature: 0.2
  sampling_bias_correction: true
  remove_accidental_hits: yes
  num_hard_negatives: 16
"""

LOSS_OPTIONS_SEARCHED = """
model:
  temperature: {type: float, low: 0.05, high: 2.0, log: true}
  sampling_bias_correction: {type: categorical, choices: [false, true]}
  remove_accidental_hits: {type: categorical, choices: [false, true]}
  num_hard_negatives: {type: categorical, choices: [null, 4, 64]}
  depth: 1
  output_dim: 16
"""


def test_loss_options_fixed(tmp_path: Path) -> None:
    model = load_config_file(str(_write(tmp_path, LOSS_OPTIONS_FIXED))).model
    assert (model.temperature, model.sampling_bias_correction, model.remove_accidental_hits) == (0.2, True, True)
    assert model.num_hard_negatives == 16
    assert config_from_params(parse_space("model:\n  num_hard_negatives: null\n"), {}).model.num_hard_negatives is None
    defaults = ModelConfig()
    assert (defaults.temperature, defaults.sampling_bias_correction, defaults.remove_accidental_hits) == (
        1.0,
        False,
        False,
    )
    assert defaults.num_hard_negatives is None


def test_loss_options_as_distributions(tmp_path: Path) -> None:
    space = load_space(str(_write(tmp_path, LOSS_OPTIONS_SEARCHED)))
    distributions = space.distributions()
    assert distributions["num_hard_negatives"].choices == (None, 4, 64)
    assert distributions["sampling_bias_correction"].choices == (False, True)
    seen = set()
    for trial, config in _ask_many(space, 30, seed=1):
        model = config.model
        assert model.num_hard_negatives == trial.params["num_hard_negatives"]
        assert model.remove_accidental_hits is trial.params["remove_accidental_hits"]
        assert model.sampling_bias_correction is trial.params["sampling_bias_correction"]
        assert 0.05 <= model.temperature <= 2.0
        assert config_from_params(space, trial.params) == config
        assert TrialConfig.from_dict(config.to_dict()) == config  # what a trial stores rebuilds it, null included
        seen.add(model.num_hard_negatives)
    assert seen == {None, 4, 64}
    ranged = parse_space("model:\n  num_hard_negatives: {type: int, low: 1, high: 128, log: true}\n")
    assert isinstance(ranged.distributions()["num_hard_negatives"], optuna.distributions.IntDistribution)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"num_hard_negatives": 0}, "model.num_hard_negatives: must be an int >= 1"),
        ({"num_hard_negatives": "many"}, "model.num_hard_negatives: must be int or null"),
        ({"temperature": 0}, "model.temperature: must be > 0"),
        ({"sampling_bias_correction": "sometimes"}, "model.sampling_bias_correction: must be bool"),
        ({"remove_accidental_hits": 2}, "model.remove_accidental_hits: must be bool"),
    ],
)
def test_loss_options_bad_values_are_one_config_error(model: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrialConfig.from_dict({"model": model})
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_baselines_pin_the_loss_options(tmp_path: Path) -> None:
    """The tutorial uses none of the options: a space searching them admits the baselines with them off."""
    text = "model:\n  layers: {type: categorical, choices: [[32], [64, 32], [128, 64, 32]]}\n" + "\n".join(
        LOSS_OPTIONS_SEARCHED.splitlines()[2:6]
    )
    admitted, rejected = baseline_params(load_space(str(_write(tmp_path, text + "\n"))))
    assert rejected == []
    assert admitted[0] == {
        "layers": "32",
        "temperature": 1.0,
        "sampling_bias_correction": False,
        "remove_accidental_hits": False,
        "num_hard_negatives": None,
    }


# --------------------------------------------------------------------------------------------------- baselines


def test_baseline_params_tutorial_admits_all_three() -> None:
    space = load_space("tutorial")
    admitted, rejected = baseline_params(space)
    assert admitted == [{"layers": "32"}, {"layers": "64-32"}, {"layers": "128-64-32"}]
    assert rejected == []


def test_baseline_params_default_and_quick() -> None:
    admitted, rejected = baseline_params(load_space("default"))
    assert rejected == []
    assert [p["depth"] for p in admitted] == [1, 2, 3]
    assert admitted[2] == {
        "depth": 3,
        "units_0": 128,
        "units_1": 64,
        "output_dim": 32,
        "activation": "relu",
        "body": "mlp",
        "embedding": "full",
        "embedding_dim": 32,
        "normalize": False,
        "sampling_bias_correction": False,
        "remove_accidental_hits": False,
        "num_hard_negatives": None,
        "optimizer": "adagrad",
        "learning_rate": 0.1,
        "batch_size": 2048,
    }  # the tutorial's loss: no option on
    admitted, rejected = baseline_params(load_space("quick"))
    assert admitted == []
    assert len(rejected) == 3
    assert rejected[2].startswith("[128, 64, 32]: depth=3 outside [1, 2]")
    assert "embedding_dim=32 not in choices [8, 16]" in rejected[0]


def test_baseline_params_subset_with_reasons(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """
        model:
          depth: {type: int, low: 1, high: 2}
          units: {type: int, low: 16, high: 128, step: 16}
          output_dim: {type: categorical, choices: [32, 64]}
          dropout: {type: float, low: 0.0, high: 0.3}
        train:
          optimizer: {type: categorical, choices: [adagrad, adam]}
          learning_rate: {type: float, low: 0.01, high: 0.5, log: true}
        """
    )
    space = load_space(str(_write(tmp_path, text)))
    admitted, rejected = baseline_params(space)
    assert admitted == [
        {"depth": 1, "output_dim": 32, "optimizer": "adagrad", "learning_rate": 0.1},
        {"depth": 2, "units_0": 64, "output_dim": 32, "optimizer": "adagrad", "learning_rate": 0.1},
    ]
    assert rejected == ["[128, 64, 32]: depth=3 outside [1, 2]"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for params in admitted:
        study.enqueue_trial(params)
    for expected in ((32,), (64, 32)):
        trial = study.ask()
        config = suggest(trial, space)
        assert config.model.layers == expected
        assert (config.train.optimizer, config.train.learning_rate) == ("adagrad", 0.1)
        assert "dropout" in trial.params  # left to the sampler


def test_baseline_params_fixed_and_default_mismatch(tmp_path: Path) -> None:
    text = "model:\n  layers: [64, 32]\ntrain:\n  learning_rate: 0.05\n"
    admitted, rejected = baseline_params(load_space(str(_write(tmp_path, text))))
    assert admitted == []
    assert rejected[1] == "[64, 32]: learning_rate=0.1 but the space fixes learning_rate=0.05"
    assert "layers=[32] but the space fixes layers=[64, 32]" in rejected[0]
    admitted, rejected = baseline_params(load_space(str(_write(tmp_path, "train:\n  epochs: 3\n"))))
    assert admitted == [{}]  # only the default tower [64, 32] fits a space that does not declare layers
    assert rejected[0].startswith("[32]: layers=[32] but the space keeps the default layers=[64, 32]")


# ------------------------------------------------------------------------------------------------ config files


def test_load_config_file_round_trip(tmp_path: Path) -> None:
    space = load_space("default")
    for _, config in _ask_many(space, 5, seed=2):
        path = _write(tmp_path, yaml.safe_dump(config.to_dict()), "config.yaml")
        assert load_config_file(str(path)) == config


def test_load_config_file_template_and_defaults(tmp_path: Path) -> None:
    text = "model:\n  depth: 3\n  units: 48\n  output_dim: 16\ntrain:\n  optimizer: sgd\n"
    config = load_config_file(str(_write(tmp_path, text)))
    assert config.model.layers == (48, 48, 16)
    assert config.model.embedding_dim == ModelConfig().embedding_dim
    assert config.train.optimizer == "sgd"


def test_load_config_file_rejects_distributions(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  learning_rate: {type: float, low: 0.01, high: 0.1}\n")
    with pytest.raises(SearchSpaceError) as info:
        load_config_file(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: train.learning_rate: ")
    assert "run --space" in message
    with pytest.raises(SearchSpaceError, match="no such file"):
        load_config_file(str(tmp_path / "missing.yaml"))
    with pytest.raises(SearchSpaceError, match=r"train.epochs: must be >= 1"):
        load_config_file(str(_write(tmp_path, "train:\n  epochs: 0\n")))
