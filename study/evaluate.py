"""``python -m study evaluate``: re-train the top trials with other seeds and score them on the test split.

A search picks its best trial on the validation split with one seed, so its score carries both selection bias and
seed noise. This re-trains each of the top trials' exact configs (user attr ``config``) for the epoch count that was
best in the search (``best_epoch``), once per seed, and scores every run on the test split (never used for
selection). The result is stored on the study as the user attr ``seed_reruns``::

    {"<trial number>": {"metric": "top100", "mean": 0.81, "ci95": 0.012, "std": 0.005,
                        "values": [...], "seeds": [...], "epochs": 7}}

``ci95`` is the half-width of the two-sided 95% confidence interval of the mean (Student's t with n - 1 degrees of
freedom), so the interval is ``mean ± ci95``. ``python -m study report`` shows them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from study.errors import ConfigError

# Two-sided 95% quantiles of Student's t (t_{0.975, df}) for df = 1..30.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """``t_{0.975}`` with ``df`` degrees of freedom (table to 30, Cornish-Fisher expansion beyond: error < 1e-4)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, ci95 half-width, sample std)`` of at least two values."""
    n = len(values)
    if n < 2:
        raise ValueError("a confidence interval needs at least two values")
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t975(n - 1) * std / math.sqrt(n), std


def top_trials(optuna_study: Any, top: int) -> list[Any]:
    """The ``top`` best complete trials that stored a config.

    Single-objective: by the study's value. Multi-objective: by the validation metric of the study
    (``valid_metrics[metric]``), higher first.
    """
    from optuna.trial import TrialState

    from study.results import metric_of

    metric = metric_of(optuna_study)
    trials = [
        t
        for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("config") and t.values
    ]
    if len(optuna_study.directions) == 1:
        sign = -1.0 if optuna_study.directions[0].name == "MAXIMIZE" else 1.0
        trials.sort(key=lambda t: (sign * t.value, t.number))
    else:
        trials.sort(key=lambda t: (-float(t.user_attrs.get("valid_metrics", {}).get(metric, -math.inf)), t.number))
    return trials[:top]


def evaluate_study(optuna_study: Any, top: int = 5, seeds: int = 3, out: Any = None) -> dict[str, dict[str, Any]]:
    """Re-train the ``top`` trials with ``seeds`` new seeds each and store the test scores (see module doc).

    Returns:
        The entries written for this call, keyed by trial number (str).

    Raises:
        ConfigError: bad ``top``/``seeds``, no complete trial, or the study's data is not available or changed.
    """
    from study.results import load_study_data, metric_of, retrain_config
    from study.train import train

    out = out or sys.stdout
    if top < 1:
        raise ConfigError(f"--top: must be >= 1, but got {top}")
    if seeds < 2:
        raise ConfigError(f"--seeds: a confidence interval needs at least 2 seeds, but got {seeds}")
    attrs = optuna_study.user_attrs
    name = optuna_study.study_name
    trials = top_trials(optuna_study, top)
    if not trials:
        raise ConfigError(f"study {name!r} has no complete trial yet; run `python -m study run` first")
    data = load_study_data(optuna_study)
    metric = metric_of(optuna_study)
    stored = dict(attrs.get("seed_reruns") or {})
    written: dict[str, dict[str, Any]] = {}
    print(
        f"re-training the top {len(trials)} trial(s) of {name!r} with {seeds} seeds each on {attrs['dataset']} "
        f"({data.protocol} split), scoring test {metric}",
        file=out,
        flush=True,
    )
    for trial in trials:
        cfg = retrain_config(trial)
        epochs = cfg.train.epochs
        seed_list = [cfg.train.seed + 1 + i for i in range(seeds)]
        values = []
        for seed in seed_list:
            run_cfg = cfg.replace(train={"seed": seed})
            _, result = train(run_cfg, data, eval_split=data.test, metric=metric)
            values.append(round(float(result.history[-1].metrics[metric]), 6))
        mean, ci95, std = mean_ci95(values)
        entry = {
            "metric": metric,
            "mean": round(mean, 6),
            "ci95": round(ci95, 6),
            "std": round(std, 6),
            "values": values,
            "seeds": seed_list,
            "epochs": epochs,
        }
        stored[str(trial.number)] = entry
        written[str(trial.number)] = entry
        optuna_study.set_user_attr("seed_reruns", stored)  # after each trial: an interrupted run keeps what it did
        valid = trial.user_attrs.get("valid_metrics", {}).get(metric)
        print(
            f"trial {trial.number:>4}: test {metric} = {mean:.4f} ± {ci95:.4f} (95% CI over seeds {seed_list}: "
            f"{', '.join(f'{v:.4f}' for v in values)})"
            + (f"; validation in the search {valid:.4f}" if valid is not None else ""),
            file=out,
            flush=True,
        )
    return written
