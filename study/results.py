"""Reading a stored study: the attributes a run stores, trial configs, counts, the best trial, how to retrain it.

Every command that reads a study (``best``, ``list``, ``report``, ``export``, ``evaluate``, the dashboard note,
the run's own summary) goes through here, and the retrain-at-best-epoch config is built in one place. The names
of what a run stores are one table in :mod:`study.names` (:data:`TRIAL_ATTRS`, :data:`STUDY_ATTRS`, re-exported
here), which the objective that writes them imports too.
No TensorFlow is imported here.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.config import TrialConfig
from study.errors import ConfigError
from study.names import STUDY_ATTRS, TRIAL_ATTRS, StudyAttr, TrialAttr  # noqa: F401  (the table of stored names)
from study.storage import DEFAULT_STORAGE, mask_url, open_existing

DEFAULT_METRIC = "top100"


# --------------------------------------------------------------------------------------------- opening


def open_study(storage_url: str, study_name: str | None) -> optuna.Study:
    """A stored study for read-only commands; the name may be omitted (the latest study in the storage).

    Raises:
        ConfigError: no such storage, study or name.
    """
    storage = open_existing(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name is None:
        if not names:
            raise ConfigError(f"{mask_url(storage_url)} holds no study; run `python -m study run` first")
        study_name = names[-1]
    elif study_name not in names:
        raise ConfigError(f"no study {study_name!r} in {mask_url(storage_url)}; studies there: {names}")
    return optuna.load_study(study_name=study_name, storage=storage)


def load_study_data(optuna_study: optuna.Study) -> Any:
    """The ``EncodedData`` a study was run on (its recorded dataset and protocol), checked against its data hash.

    Raises:
        ConfigError: the study records no dataset (not made by ``python -m study run``) or the data changed since.
    """
    from study import data as data_mod

    attrs = optuna_study.user_attrs
    name = optuna_study.study_name
    if not attrs.get(StudyAttr.DATASET):
        raise ConfigError(f"study {name!r} does not record its dataset; was it created by `python -m study run`?")
    data = data_mod.load(attrs[StudyAttr.DATASET], attrs.get(StudyAttr.PROTOCOL, "random"))
    if attrs.get(StudyAttr.DATA_HASH) and data.data_hash != attrs[StudyAttr.DATA_HASH]:
        raise ConfigError(
            f"the data of {attrs[StudyAttr.DATASET]} changed since study {name!r} ran (hash {data.data_hash}, the study "
            f"recorded {attrs[StudyAttr.DATA_HASH]}), so its splits are not the ones the study used; re-run the study"
        )
    return data


# --------------------------------------------------------------------------------------------- reading


def metric_of(optuna_study: optuna.Study) -> str:
    """The validation metric the study's trials report (``top100`` unless the run said otherwise)."""
    return str(optuna_study.user_attrs.get(StudyAttr.METRIC, DEFAULT_METRIC))


def count_states(optuna_study: optuna.Study) -> dict[TrialState, int]:
    """How many trials are in each state (every state present, zero or not)."""
    counts = {state: 0 for state in TrialState}
    for trial in optuna_study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def finished_count(counts: dict[TrialState, int]) -> int:
    """Complete + pruned: what ``--trials N`` counts."""
    return counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]


def best_trial(optuna_study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial: by value for one objective; on a Pareto front, the one with the best validation
    metric. None while no trial is complete."""
    if len(optuna_study.directions) == 1:
        try:
            return optuna_study.best_trial
        except ValueError:
            return None
    front = optuna_study.best_trials
    if not front:
        return None
    metric = metric_of(optuna_study)
    return max(front, key=lambda t: t.user_attrs.get(TrialAttr.VALID_METRICS, {}).get(metric, float("-inf")))


def resolve_trial(optuna_study: optuna.Study, which: str | int = "best", *, complete: bool = True) -> FrozenTrial:
    """``best`` (see :func:`best_trial`) or a trial number, with a stored config.

    Args:
        complete: the trial must be complete, or pruned after a best epoch (what export and evaluate re-train);
            False takes a trial in any state (what ``train --trial`` re-runs).

    Raises:
        ConfigError: no such trial, or not usable.
    """
    name = optuna_study.study_name
    text = str(which).strip().lower()
    if text == "best":
        trial = best_trial(optuna_study)
        if trial is None:
            raise ConfigError(f"study {name!r} has no complete trial yet; run `python -m study run` first")
    else:
        if not re.fullmatch(r"\d+", text):
            raise ConfigError(f"--trial: expected 'best' or a trial number, but got {which!r}")
        number = int(text)
        trials = {t.number: t for t in optuna_study.get_trials(deepcopy=False)}
        if number not in trials:
            raise ConfigError(f"--trial {number}: study {name!r} has trials 0..{max(trials, default=-1)}")
        trial = trials[number]
        usable = trial.state == TrialState.COMPLETE or (
            trial.state == TrialState.PRUNED and trial.user_attrs.get(TrialAttr.BEST_EPOCH)
        )
        if complete and not usable:
            raise ConfigError(f"--trial {number}: the trial is {trial.state.name}, not complete; pick another trial")
    if not trial.user_attrs.get(TrialAttr.CONFIG):
        raise ConfigError(f"trial {trial.number} has no stored config; it was not run by `python -m study run`")
    return trial


def trial_config(trial: FrozenTrial) -> TrialConfig:
    """The exact config a trial trained (stored as a user attr).

    Raises:
        ConfigError: the trial stored no config.
    """
    stored = trial.user_attrs.get(TrialAttr.CONFIG)
    if stored is None:
        raise ConfigError(f"trial {trial.number} has no stored config; it was not run by `python -m study run`")
    return TrialConfig.from_dict(stored, source=f"trial {trial.number}")


def best_epoch(trial: FrozenTrial) -> int:
    """The epoch count to re-train a trial for: its best epoch, else every epoch of its config."""
    return int(trial.user_attrs.get(TrialAttr.BEST_EPOCH) or trial_config(trial).train.epochs)


def retrain_config(trial: FrozenTrial, **train: Any) -> TrialConfig:
    """A trial's config re-trained for its best epoch count and evaluated once at the end (test scores, export,
    seed re-runs); ``train`` overrides more training fields (e.g. ``seed``)."""
    epochs = best_epoch(trial)
    return trial_config(trial).replace(train={"epochs": epochs, "eval_every": epochs, "patience": 0, **train})


def retrain_command(optuna_study: optuna.Study, trial: FrozenTrial, storage_url: str | None = None) -> str:
    """The ``python -m study train`` command that re-trains ``trial``'s stored config exactly.

    The storage is shown with its password masked; the default storage is left out.
    """
    parts = ["python -m study train", f"--study {shlex.quote(optuna_study.study_name)}", f"--trial {trial.number}"]
    if storage_url and storage_url != DEFAULT_STORAGE:
        parts.append(f"--storage {shlex.quote(mask_url(storage_url))}")
    return " ".join(parts)
