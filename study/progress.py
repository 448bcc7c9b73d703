"""What a run prints while it runs: a progress bar and one line per finished trial."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.results import TrialAttr, count_states, finished_count


def format_seconds(seconds: float | None, missing: str = "?") -> str:
    """``m:ss`` or ``h:mm:ss``; ``missing`` for None and non-finite values."""
    if seconds is None or not math.isfinite(seconds):
        return missing
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_params(params: dict[str, Any], limit: int = 6) -> str:
    """The first ``limit`` params as ``key=value`` (floats to 3 significant digits)."""
    parts = []
    for key, value in list(params.items())[:limit]:
        parts.append(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts) + (" …" if len(params) > limit else "")


class Progress:
    """Progress bar (finished/target, best so far, ETA) and one line per finished trial.

    ``trial_done`` is an Optuna callback. On a terminal the bar is redrawn in place; elsewhere (a log, a ``--jobs``
    worker's pipe) each update is a line of its own unless ``quiet``.
    """

    def __init__(
        self, target: int, finished: int, metric: str, quiet: bool, stream: Any = None, elapsed_before: float = 0.0
    ) -> None:
        self.target = target
        self.elapsed_before = elapsed_before  # a run that restarted itself: its time before the restart
        self.start_finished = finished
        self.metric = metric
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.show_bar = True

    def trial_done(self, optuna_study: optuna.Study, trial: FrozenTrial) -> None:
        if not self.quiet:
            self._clear()
            print(self.trial_line(trial), file=self.stream, flush=True)
        self.bar(optuna_study, finished_count(count_states(optuna_study)))

    def trial_line(self, trial: FrozenTrial) -> str:
        """``trial N STATE value epochs seconds params`` (and why, for a failed or unevaluated pruned trial)."""
        attrs = trial.user_attrs
        value = "" if trial.values is None else " ".join(f"{v:.4f}" for v in trial.values)
        reason = ""
        if trial.state == TrialState.PRUNED:
            best = attrs.get(TrialAttr.VALID_METRICS, {}).get(self.metric)
            if best is None:
                reason = attrs.get(TrialAttr.PRUNED_REASON, "pruned before any evaluation")
            else:
                value = f"(best {best:.4f})"
        elif trial.state == TrialState.FAIL:
            reason = attrs.get(TrialAttr.FAIL_REASON, "")
        return (
            f"trial {trial.number:>4} {trial.state.name:<8} {value:<18} "
            f"epochs={attrs.get(TrialAttr.EPOCHS_RUN, 0):<3} {attrs.get(TrialAttr.SECONDS, 0):6.1f}s  "
            f"{format_params(trial.params)}" + (f"  reason: {reason}" if reason else "")
        )

    def bar(self, optuna_study: optuna.Study, finished: int) -> None:
        if not self.show_bar:
            return
        done_here = finished - self.start_finished
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done_here * (self.target - finished) if done_here > 0 else float("nan")
        if len(optuna_study.directions) > 1:
            best_text = f"Pareto front: {len(optuna_study.best_trials)} trials"
        else:
            best = _best_value(optuna_study)
            best_text = f"best {self.metric}={'-' if best is None else f'{best:.4f}'}"
        width = 30
        fill = int(width * min(finished, self.target) / max(self.target, 1))
        text = (
            f"[{'#' * fill}{'.' * (width - fill)}] {finished}/{self.target} finished"
            f"  {best_text}"
            f"  elapsed {format_seconds(elapsed + self.elapsed_before)}  ETA {format_seconds(eta)}"
        )
        if self.tty:
            print("\r" + text, end="", file=self.stream, flush=True)
        elif not self.quiet:
            print(text, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty:
            print("\r\033[K", end="", file=self.stream)

    def close(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)


def _best_value(optuna_study: optuna.Study) -> float | None:
    try:
        return optuna_study.best_value
    except ValueError:
        return None
