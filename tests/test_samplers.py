"""Contract tests over every entry of ``runner.SAMPLERS`` and ``runner.PRUNERS``, with real Optuna studies.

Samplers: each one samples the shipped default space (conditional params, log floats, ints, categoricals of bools)
into configs that rebuild from their params, and the same ``--seed`` gives the same sampled params twice.
Pruners: each one (but ``none``) prunes some of the trials whose learning curves are clearly worse, and none
prunes the best one. No training is needed for these, so the objective scores the sampled config directly.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import optuna
import pytest

from study.errors import ConfigError
from study.runner import PRUNERS, SAMPLERS, build_pruner, build_sampler
from study.search_space import config_from_params, load_space, suggest

HAS_TORCH = importlib.util.find_spec("torch") is not None
N_TRIALS = 8


def _sampler_or_skip(name: str, seed: int, multi: bool = False) -> optuna.samplers.BaseSampler:
    if name == "gp" and not HAS_TORCH:
        with pytest.raises(ConfigError, match="needs PyTorch"):
            build_sampler(name, seed, multi)
        pytest.skip("GPSampler needs PyTorch (not installed): checked that the error says so")
    return build_sampler(name, seed, multi)


def _sample_default_space(name: str, seed: int) -> list[dict[str, Any]]:
    space = load_space("default")
    optuna_study = optuna.create_study(direction="maximize", sampler=_sampler_or_skip(name, seed))

    def objective(trial: optuna.Trial) -> float:
        cfg = suggest(trial, space)
        assert config_from_params(space, trial.params) == cfg  # every sampled config rebuilds from its params
        # A smooth score of the sampled config, so model-based samplers have something to fit.
        return -abs(cfg.train.learning_rate - 0.05) - 0.001 * len(cfg.model.layers)

    optuna_study.optimize(objective, n_trials=N_TRIALS)
    states = [t.state for t in optuna_study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * N_TRIALS, [t.system_attrs for t in optuna_study.trials]
    return [t.params for t in optuna_study.trials]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_samples_the_default_space_reproducibly(name: str) -> None:
    first = _sample_default_space(name, seed=3)
    assert _sample_default_space(name, seed=3) == first
    assert len({repr(sorted(p.items())) for p in first}) > 1, f"{name} sampled the same params every time"
    # conditional params only appear with their parent's value
    for params in first:
        assert ("qr_combiner" in params) == (params["embedding"] == "quotient_remainder")
        assert ("weight_decay" in params) == (params["optimizer"] == "adamw")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_in_a_two_objective_study(name: str) -> None:
    """``--objectives top100,embedding_bytes``: a sampler that cannot do two objectives must say so clearly."""
    if name == "cmaes":
        with pytest.raises(ValueError, match="'cmaes' is single-objective only; with --objectives use tpe"):
            build_sampler(name, 0, multi_objective=True)
        return
    sampler = _sampler_or_skip(name, seed=0, multi=True)
    optuna_study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0.0, 1.0)
        return x, x * x + 0.1

    optuna_study.optimize(objective, n_trials=4)
    assert len(optuna_study.best_trials) >= 1
    assert all(len(t.values) == 2 for t in optuna_study.best_trials)


def test_cmaes_with_two_objectives_is_a_config_error(tmp_path: Any) -> None:
    """The run refuses the combination before trial 1 with a one-line message (not Optuna's ValueError later)."""
    from study.config import RunSettings
    from study.runner import run_study

    settings = RunSettings(
        space="quick", sampler="cmaes", objectives=("top100", "embedding_bytes"), trials=1,
        storage=f"sqlite:///{tmp_path / 'x.db'}", quiet=True,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="--sampler.*cmaes.*single-objective"):
        run_study(settings)
    assert not (tmp_path / "x.db").exists() or optuna.get_all_study_names(settings.storage) == []


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_pruner_prunes_only_worse_curves(name: str) -> None:
    """Trial i reaches ``x_i * step``: curves that are clearly worse get pruned (except with ``none``)."""
    max_epochs = 9
    optuna_study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0), pruner=build_pruner(name, max_epochs)
    )

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        for step in range(1, max_epochs + 1):
            trial.report(x * step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x * max_epochs

    optuna_study.optimize(objective, n_trials=24)
    pruned = [t for t in optuna_study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in optuna_study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best_x = max(t.params["x"] for t in optuna_study.trials)
    assert any(t.params["x"] == best_x for t in complete), "the best curve was pruned"
    if name == "none":
        assert not pruned
    else:
        assert pruned, f"{name} pruned nothing out of 24 trials"
        assert min(t.params["x"] for t in pruned) < best_x


def test_unknown_sampler_and_pruner_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown sampler 'tpee'; valid samplers are \["):
        build_sampler("tpee")
    with pytest.raises(ValueError, match=r"unknown pruner 'mediam'; valid pruners are \["):
        build_pruner("mediam", 10)
