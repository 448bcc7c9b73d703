"""``python -m study report``: one self-contained HTML file describing a study.

Two steps, kept apart:

* :func:`collect` reads an Optuna study into a :class:`ReportData` of plain values (numbers, strings, lists, dicts).
  It is a pure function of the study (no plotting library is imported on that path), so it is easy to test and
  to reuse (e.g. for a JSON export).
* :func:`render_html` draws the figures (``optuna.visualization`` where Optuna has one, plain plotly otherwise) and
  writes the page. plotly.js is inlined once, so the file opens offline.

Everything taken from the study (names, parameter values, reasons, paths) is HTML-escaped, and any URL password is
replaced by ``***`` before it is shown.
"""

from __future__ import annotations

import html
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from study.errors import ConfigError
from study.names import RATING_METRICS
from study.progress import format_seconds
from study.results import count_states, metric_of, retrain_command
from study.storage import mask_secrets, mask_url

TOP_N = 20
MIN_IMPORTANCE_TRIALS = 4
MAX_SLICE_PARAMS = 6
SHOWN_METRICS = ("top10", "top50", "top100")
RMSE = "rmse"  # the rating head's validation metric (lower is better): a column, a front and curves when trials have it
FRONT_X = "top100"  # the top-100 vs. RMSE front: max FRONT_X, min RMSE
NOT_AVAILABLE = "not available"

# (anchor, heading) of every section, in page order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("best", "Best trial"),
    ("baselines", "Tuned vs. tutorial baselines"),
    ("history", "Optimization history"),
    ("curves", "Learning curves"),
    ("importances", "Parameter importances"),
    ("parallel", "Parallel coordinates"),
    ("slices", "Slices"),
    ("techniques", "Accuracy by embedding technique and tower body"),
    ("memory", "Accuracy vs. memory"),
    ("durations", "Trial durations"),
    ("top", f"Top {TOP_N} trials"),
    ("reruns", "Seed re-runs on the test split"),
)
# Shown after "memory" only when some complete trial has both validation top100 and rmse (a rating head).
RMSE_SECTION: tuple[str, str] = ("rmse", "Top-100 vs. RMSE")


def sections(data: ReportData) -> list[tuple[str, str]]:
    """The sections of ``data``'s page, in order: :data:`SECTIONS`, plus :data:`RMSE_SECTION` when it has points."""
    out = list(SECTIONS)
    if data.rmse_points:
        out.insert(next(i for i, (key, _) in enumerate(out) if key == "memory") + 1, RMSE_SECTION)
    return out


def lower_is_better(metric: str) -> bool:
    """``rmse`` is minimised; the top-k metrics are maximised."""
    return metric in RATING_METRICS


# --------------------------------------------------------------------------------------------- data


@dataclass
class TrialSummary:
    """One trial as plain values."""

    number: int
    state: str
    values: list[float] | None
    params: dict[str, Any]
    valid_metrics: dict[str, float] = field(default_factory=dict)
    learning_curve: list[list[float]] = field(default_factory=list)
    curves: dict[str, list[list[float]]] = field(default_factory=dict)  # with a rating head: top100 and rmse per epoch
    epochs_run: int = 0
    max_epochs: int | None = None
    best_epoch: int | None = None
    pruned_at_epoch: int | None = None
    seconds: float | None = None
    embedding_bytes: int | None = None
    total_params: int | None = None
    embedding: str | None = None
    body: str | None = None
    layers: list[int] | None = None
    baseline: str | None = None
    fail_reason: str | None = None
    start: str | None = None
    complete: str | None = None

    @property
    def value(self) -> float | None:
        return self.values[0] if self.values else None

    @property
    def label(self) -> str:
        """``tutorial [64, 32]`` for a baseline (its layers from the config), else ``tuned``."""
        if not self.baseline:
            return "tuned"
        return f"tutorial {self.layers}" if self.layers else self.baseline.strip()


@dataclass
class ReportData:
    """Everything the report shows, as plain values (see :func:`collect`)."""

    study_name: str
    storage: str | None
    directions: list[str]
    objectives: list[str]
    metric: str
    settings: dict[str, Any]
    data_info: dict[str, Any]
    counts: dict[str, int]
    wall_seconds: float | None
    trial_seconds: float
    epochs_budget: int
    epochs_run: int
    epochs_saved_by_pruning: int
    epochs_saved_by_early_stop: int
    trials: list[TrialSummary]
    best: TrialSummary | None
    best_test_metrics: dict[str, float] | None
    retrain_command: str | None
    pareto: list[int]
    baselines: list[TrialSummary]
    importances: dict[str, dict[str, float]]
    importance_note: str
    main_params: list[str]
    groups: dict[str, dict[str, list[float]]]
    top: list[TrialSummary]
    seed_reruns: list[dict[str, Any]]
    generated: str
    # the valid metrics shown as table columns: SHOWN_METRICS, plus rmse when any trial has it
    metric_columns: list[str] = field(default_factory=lambda: list(SHOWN_METRICS))
    # the curves (TrialSummary.curves) drawn beside the learning curve of ``metric``: e.g. ["rmse"]
    curve_metrics: list[str] = field(default_factory=list)
    # every complete trial with a finite valid top100 and rmse: {"trial": n, "top100": x, "rmse": y}
    rmse_points: list[dict[str, Any]] = field(default_factory=list)
    # the trials of rmse_points on their top-100/RMSE Pareto front (max top100, min rmse), by ascending top100
    rmse_front: list[int] = field(default_factory=list)

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @property
    def finished(self) -> int:
        return self.counts.get("COMPLETE", 0) + self.counts.get("PRUNED", 0)


def _iso(value: Any) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if value is not None else None


def _group_name(trial: Any, key: str) -> str | None:
    if key in trial.params:
        return str(trial.params[key])
    model = (trial.user_attrs.get("config") or {}).get("model") or {}
    value = model.get(key)
    return None if value is None else str(value)


def _summary(trial: Any, study_max_epochs: int | None) -> TrialSummary:
    attrs = trial.user_attrs
    max_epochs = attrs.get("max_epochs", study_max_epochs)
    curve = attrs.get("learning_curve")
    if curve is None:
        curve = [[int(step), float(value)] for step, value in sorted(trial.intermediate_values.items())]
    return TrialSummary(
        number=trial.number,
        state=trial.state.name,
        values=None if trial.values is None else [float(v) for v in trial.values],
        params=dict(trial.params),
        valid_metrics={k: float(v) for k, v in (attrs.get("valid_metrics") or {}).items()},
        learning_curve=[[int(e), float(v)] for e, v in curve],
        curves={
            str(name): [[int(e), float(v)] for e, v in points]
            for name, points in (attrs.get("curves") or {}).items()
            if points
        },
        epochs_run=int(attrs.get("epochs_run", len(curve))),
        max_epochs=None if max_epochs is None else int(max_epochs),
        best_epoch=attrs.get("best_epoch"),
        pruned_at_epoch=attrs.get("pruned_at_epoch"),
        seconds=attrs.get("seconds"),
        embedding_bytes=attrs.get("embedding_bytes"),
        total_params=attrs.get("total_params"),
        embedding=_group_name(trial, "embedding"),
        body=_group_name(trial, "body"),
        layers=((attrs.get("config") or {}).get("model") or {}).get("layers"),
        baseline=attrs.get("baseline"),
        fail_reason=attrs.get("fail_reason") or attrs.get("pruned_reason"),
        start=_iso(trial.datetime_start),
        complete=_iso(trial.datetime_complete),
    )


def _sort_key(directions: list[str]) -> Callable[[TrialSummary], float]:
    sign = -1.0 if directions and directions[0] == "maximize" else 1.0
    return lambda t: sign * (t.value if t.value is not None and math.isfinite(t.value) else -sign * math.inf)


def max_min_front(points: list[tuple[int, float, float]]) -> list[int]:
    """The ids of ``(id, x, y)`` points on the Pareto front of max ``x``, min ``y``, by ascending ``x`` (then ``y``).

    A point is on the front unless another one is at least as good on both (``x' >= x`` and ``y' <= y``) and better
    on one; equal points are all on it. Points with a non-finite coordinate are left out. O(n log n).
    """
    finite = [p for p in points if math.isfinite(p[1]) and math.isfinite(p[2])]
    finite.sort(key=lambda p: (-p[1], p[2]))
    front: list[tuple[int, float, float]] = []
    best_y = math.inf  # the lowest y of the points with a strictly higher x
    i = 0
    while i < len(finite):
        j = i
        while j < len(finite) and finite[j][1] == finite[i][1]:
            j += 1
        group_min = finite[i][2]  # same x: sorted by y, so the first is the lowest
        front.extend(p for p in finite[i:j] if p[2] == group_min and group_min < best_y)
        best_y = min(best_y, group_min)
        i = j
    front.sort(key=lambda p: (p[1], p[2], p[0]))
    return [p[0] for p in front]


def _rmse_points(trials: list[TrialSummary]) -> list[dict[str, Any]]:
    points = []
    for t in trials:
        x, y = t.valid_metrics.get(FRONT_X), t.valid_metrics.get(RMSE)
        if t.state == "COMPLETE" and x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
            points.append({"trial": t.number, FRONT_X: x, RMSE: y})
    return points


def importance_evaluator() -> tuple[Any, str]:
    """fANOVA (seeded) when scikit-learn is installed (Optuna's fANOVA needs it), else PED-ANOVA; and its name."""
    import importlib.util

    import optuna

    if importlib.util.find_spec("sklearn") is not None:
        return optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"


def importance_target(optuna_study: Any, index: int) -> Callable[[Any], float] | None:
    """The target of objective ``index`` for the importance evaluator (None: the single objective itself).

    PED-ANOVA ranks an explicit target as lower-is-better, so a maximised objective is negated (importances do not
    depend on the sign otherwise).
    """
    directions = optuna_study.directions
    if len(directions) == 1:
        return None
    sign = -1.0 if directions[index].name == "MAXIMIZE" else 1.0
    return lambda t: sign * t.values[index]


def _importances(optuna_study: Any, objectives: list[str], complete: int) -> tuple[dict[str, dict[str, float]], str]:
    import optuna

    if complete < MIN_IMPORTANCE_TRIALS:
        return {}, f"{NOT_AVAILABLE}: needs at least {MIN_IMPORTANCE_TRIALS} complete trials, the study has {complete}"
    out: dict[str, dict[str, float]] = {}
    reasons = []
    for i, name in enumerate(objectives):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # PED-ANOVA's note on explicit targets (handled)
                values = optuna.importance.get_param_importances(
                    optuna_study, evaluator=importance_evaluator()[0], target=importance_target(optuna_study, i)
                )
        except Exception as exc:  # too few distinct values, empty intersection search space, …
            reasons.append(f"{name}: {exc}")
            continue
        if values:
            out[name] = {k: float(v) for k, v in values.items()}
    if not out:
        return {}, f"{NOT_AVAILABLE}: " + ("; ".join(reasons) or "no parameter is shared by every complete trial")
    return out, ""


def collect(optuna_study: Any, storage_url: str | None = None) -> ReportData:
    """Read a study into plain values. Pure: reads the study, changes nothing, draws nothing.

    Args:
        optuna_study: an ``optuna.Study`` (any state: empty, all failed, single- or multi-objective).
        storage_url: shown in the report (with any password masked).
    """

    attrs = dict(optuna_study.user_attrs)
    directions = [d.name.lower() for d in optuna_study.directions]
    metric = metric_of(optuna_study)
    objectives = [str(o) for o in attrs.get("objectives") or [metric]]
    if len(objectives) != len(directions):
        objectives = [f"objective {i}" for i in range(len(directions))] if len(directions) > 1 else [metric]
    study_max_epochs = attrs.get("max_epochs")
    frozen = optuna_study.get_trials(deepcopy=False)
    trials = [_summary(t, study_max_epochs) for t in frozen]
    counts = {state.name: n for state, n in count_states(optuna_study).items()}

    starts = [t.datetime_start for t in frozen if t.datetime_start is not None]
    ends = [t.datetime_complete for t in frozen if t.datetime_complete is not None]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    finished = [t for t in trials if t.state in ("COMPLETE", "PRUNED")]
    budget = sum(t.max_epochs or t.epochs_run for t in finished)
    run = sum(t.epochs_run for t in finished)
    saved_pruning = sum(max((t.max_epochs or t.epochs_run) - t.epochs_run, 0) for t in finished if t.state == "PRUNED")
    saved_early = sum(max((t.max_epochs or t.epochs_run) - t.epochs_run, 0) for t in finished if t.state == "COMPLETE")

    multi = len(directions) > 1
    by_number = {t.number: t for t in trials}
    best = None
    best_test = None
    retrain = None
    pareto: list[int] = []
    if multi:
        try:
            pareto = sorted(t.number for t in optuna_study.best_trials)
        except Exception:  # no complete trial
            pareto = []
    else:
        try:
            best_frozen = optuna_study.best_trial
        except ValueError:
            best_frozen = None
        if best_frozen is not None:
            best = by_number[best_frozen.number]
            retrain = retrain_command(optuna_study, best_frozen, storage_url)
            if attrs.get("test_trial") == best.number and attrs.get("test_metrics"):
                best_test = {k: float(v) for k, v in attrs["test_metrics"].items()}

    complete = [t for t in trials if t.state == "COMPLETE" and t.values is not None]
    top = sorted(complete, key=_sort_key(directions))[:TOP_N]
    importances, importance_note = _importances(optuna_study, objectives, len(complete))
    if importances:
        first = next(iter(importances.values()))
        main_params = list(first)[:MAX_SLICE_PARAMS]
    else:
        seen: dict[str, int] = {}
        for t in complete:
            for key in t.params:
                seen[key] = seen.get(key, 0) + 1
        main_params = sorted(seen, key=lambda k: -seen[k])[:MAX_SLICE_PARAMS]

    groups: dict[str, dict[str, list[float]]] = {"embedding": {}, "body": {}}
    for t in complete:
        value = t.value
        if value is None or not math.isfinite(value):
            continue
        for key in groups:
            name = getattr(t, key)
            if name is not None:
                groups[key].setdefault(name, []).append(value)

    reruns = []
    for number, entry in (attrs.get("seed_reruns") or {}).items():
        if isinstance(entry, Mapping):
            row = {"trial": int(number), **{k: entry[k] for k in entry}}
            original = by_number.get(int(number))
            row["valid"] = original.valid_metrics.get(str(entry.get("metric", metric))) if original else None
            reruns.append(row)
    reruns.sort(key=lambda r: -(r.get("mean") or 0.0))

    rmse_points = _rmse_points(trials)
    rmse_front = max_min_front([(p["trial"], p[FRONT_X], p[RMSE]) for p in rmse_points])
    curve_names = {name for t in trials for name in t.curves}
    curve_metrics = sorted((n for n in curve_names if n != metric), key=lambda n: (lower_is_better(n), n))

    settings = {
        key: attrs.get(key)
        for key in ("dataset", "protocol", "space", "space_path", "sampler", "pruner", "max_epochs", "data_hash")
    }
    return ReportData(
        study_name=optuna_study.study_name,
        storage=None if storage_url is None else mask_url(storage_url),
        directions=directions,
        objectives=objectives,
        metric=metric,
        settings=settings,
        data_info=dict(attrs.get("data_info") or {}),
        counts=counts,
        wall_seconds=wall,
        trial_seconds=float(sum(t.seconds or 0.0 for t in trials)),
        epochs_budget=int(budget),
        epochs_run=int(run),
        epochs_saved_by_pruning=int(saved_pruning),
        epochs_saved_by_early_stop=int(saved_early),
        trials=trials,
        best=best,
        best_test_metrics=best_test,
        retrain_command=retrain,
        pareto=pareto,
        baselines=[t for t in trials if t.baseline],
        importances=importances,
        importance_note=importance_note,
        main_params=main_params,
        groups={k: v for k, v in groups.items()},
        top=top,
        seed_reruns=reruns,
        generated=datetime.now(timezone.utc).isoformat(sep=" ", timespec="seconds"),
        metric_columns=[*SHOWN_METRICS, *([RMSE] if any(RMSE in t.valid_metrics for t in trials) else [])],
        curve_metrics=curve_metrics,
        rmse_points=rmse_points,
        rmse_front=rmse_front,
    )


# --------------------------------------------------------------------------------------------- formatting


def esc(value: Any) -> str:
    """``value`` as HTML text: any ``scheme://user:password@`` password masked, then escaped."""
    return html.escape(mask_secrets(str(value)))


def fmt(value: Any, digits: int = 4) -> str:
    """A number (or anything) formatted and escaped for a table cell."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return esc(value)
        return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.3g}"
    return esc(value)


def fmt_seconds(seconds: float | None) -> str:
    return format_seconds(seconds, missing="–")


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "–"


def fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{esc(k)}={fmt(v, 4) if isinstance(v, float) else esc(v)}" for k, v in params.items())


def table(header: list[str] | None, rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; cells are already-escaped HTML. Without a header, the first cell of a row is its heading."""
    if header is None:
        body = "".join(
            "<tr>" + f"<th>{row[0]}</th>" + "".join(f"<td>{c}</td>" for c in row[1:]) + "</tr>" for row in rows
        )
        return f'<table class="{cls}"><tbody>{body}</tbody></table>'
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def na(reason: str = "") -> str:
    return f'<p class="na">{esc(reason or NOT_AVAILABLE)}</p>'


# --------------------------------------------------------------------------------------------- figures


def build_figures(optuna_study: Any, data: ReportData) -> dict[str, Any]:
    """The figures of the report: ``{key: plotly Figure}``, or ``{key: "not available: reason"}``.

    Uses ``optuna.visualization`` for the optimization history, importances, parallel coordinates, slices, Pareto
    front and timeline; the other figures are drawn from ``data`` with plain plotly.
    """
    import optuna.visualization as vis

    figures: dict[str, Any] = {}
    complete = [t for t in data.trials if t.state == "COMPLETE"]
    multi = data.multi_objective
    target = (lambda t: t.values[0]) if multi else None
    target_name = data.objectives[0]

    def attempt(key: str, make: Callable[[], Any], needs: int = 1) -> None:
        if len(complete) < needs:
            figures[key] = f"{NOT_AVAILABLE}: needs at least {needs} complete trial{'s' if needs > 1 else ''}"
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's experimental/target notes: the report says what it shows
                figures[key] = make()
        except Exception as exc:  # a figure that cannot be drawn must not sink the report
            figures[key] = f"{NOT_AVAILABLE}: {type(exc).__name__}: {exc}"

    attempt("history", lambda: vis.plot_optimization_history(optuna_study, target=target, target_name=target_name))
    attempt("curves", lambda: learning_curves_figure(data))
    for name in data.curve_metrics:
        attempt(f"curves-{name}", lambda name=name: learning_curves_figure(data, name))
    if data.importances:
        attempt(
            "importances",
            lambda: vis.plot_param_importances(
                optuna_study,
                evaluator=importance_evaluator()[0],
                target=importance_target(optuna_study, 0),
                target_name=target_name,
            ),
        )
    else:
        figures["importances"] = data.importance_note or NOT_AVAILABLE
    attempt(
        "parallel",
        lambda: vis.plot_parallel_coordinate(optuna_study, target=target, target_name=target_name),
        needs=2,
    )
    if data.main_params:
        attempt(
            "slices",
            lambda: vis.plot_slice(optuna_study, params=data.main_params, target=target, target_name=target_name),
        )
    else:
        figures["slices"] = f"{NOT_AVAILABLE}: no parameters"
    attempt("techniques", lambda: groups_figure(data))
    if multi:
        if len(data.directions) in (2, 3):
            attempt("memory", lambda: vis.plot_pareto_front(optuna_study, target_names=data.objectives))
        else:
            figures["memory"] = f"{NOT_AVAILABLE}: a Pareto front needs 2 or 3 objectives"
    else:
        attempt("memory", lambda: memory_figure(data))
    if data.rmse_points:
        attempt("rmse", lambda: rmse_front_figure(data))
    if data.trials:
        attempt("durations", lambda: vis.plot_timeline(optuna_study), needs=0)
    else:
        figures["durations"] = f"{NOT_AVAILABLE}: no trials"
    if data.baselines and data.best is not None:
        figures["baselines"] = baselines_figure(data)
    if data.seed_reruns:
        figures["reruns"] = reruns_figure(data)
    for fig in figures.values():
        if not isinstance(fig, str):
            fig.update_layout(template="plotly_white", margin={"t": 50, "l": 60, "r": 30, "b": 50})
    return figures


def learning_curves_figure(data: ReportData, metric: str | None = None) -> Any:
    """Validation metric per epoch of every trial; pruned trials end in an × where they were stopped.

    ``metric=None`` draws each trial's learning curve (the study's metric); a name draws that curve of
    :attr:`TrialSummary.curves` (a rating head's ``top100`` and ``rmse``).
    """
    import plotly.graph_objects as go

    name = data.metric if metric is None else metric

    def curve_of(t: TrialSummary) -> list[list[float]]:
        return t.learning_curve if metric is None else t.curves.get(metric, [])

    fig = go.Figure()
    colors = {"COMPLETE": "rgba(31,119,180,0.55)", "PRUNED": "rgba(255,127,14,0.55)", "FAIL": "rgba(214,39,40,0.6)"}
    for state in ("COMPLETE", "PRUNED", "FAIL"):
        xs: list[Any] = []
        ys: list[Any] = []
        texts: list[Any] = []
        for t in data.trials:
            if t.state != state or not curve_of(t):
                continue
            for epoch, value in curve_of(t):
                xs.append(epoch)
                ys.append(value)
                texts.append(f"trial {t.number}")
            xs.append(None)
            ys.append(None)
            texts.append(None)
        if xs:
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    text=texts,
                    mode="lines+markers",
                    marker={"size": 4},
                    line={"color": colors[state], "width": 1.5},
                    name=state.lower(),
                    hovertemplate="%{text}<br>epoch %{x}: %{y:.4f}<extra></extra>",
                )
            )
    stops = [t for t in data.trials if t.state == "PRUNED" and curve_of(t)]
    if stops:
        fig.add_trace(
            go.Scatter(
                x=[curve_of(t)[-1][0] for t in stops],
                y=[curve_of(t)[-1][1] for t in stops],
                text=[f"trial {t.number} pruned at epoch {t.pruned_at_epoch or curve_of(t)[-1][0]}" for t in stops],
                mode="markers",
                marker={"symbol": "x", "size": 10, "color": "rgb(200,80,0)"},
                name="pruned here",
                hovertemplate="%{text}<extra></extra>",
            )
        )
    if data.best is not None and curve_of(data.best):
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in curve_of(data.best)],
                y=[p[1] for p in curve_of(data.best)],
                mode="lines+markers",
                line={"color": "rgb(44,160,44)", "width": 3},
                name=f"best (trial {data.best.number})",
            )
        )
    better = " (lower is better)" if lower_is_better(name) else ""
    fig.update_layout(
        title=f"validation {name} per epoch{better}",
        xaxis_title="epoch",
        yaxis_title=f"validation {name}{better}",
        height=450,
    )
    if not fig.data:
        raise ValueError("no trial has a learning curve")
    return fig


def groups_figure(data: ReportData) -> Any:
    """Box plots of the objective by embedding technique (left) and tower body (right)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not any(data.groups.values()):
        raise ValueError("no complete trial records an embedding technique or a tower body")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("embedding technique", "tower body"), shared_yaxes=True)
    for col, key in enumerate(("embedding", "body"), start=1):
        for name, values in sorted(data.groups.get(key, {}).items()):
            fig.add_trace(go.Box(y=values, name=name, boxpoints="all", jitter=0.4, showlegend=False), row=1, col=col)
    fig.update_yaxes(title_text=data.objectives[0], row=1, col=1)
    fig.update_layout(height=420)
    return fig


def memory_figure(data: ReportData) -> Any:
    """Objective vs. embedding-table bytes of every complete trial, coloured by embedding technique."""
    import plotly.graph_objects as go

    fig = go.Figure()
    by_technique: dict[str, list[TrialSummary]] = {}
    for t in data.trials:
        if t.state == "COMPLETE" and t.value is not None and t.embedding_bytes:
            by_technique.setdefault(t.embedding or "?", []).append(t)
    if not by_technique:
        raise ValueError("no complete trial records embedding_bytes")
    for name, ts in sorted(by_technique.items()):
        fig.add_trace(
            go.Scatter(
                x=[t.embedding_bytes / 2**20 for t in ts],
                y=[t.value for t in ts],
                text=[f"trial {t.number}" for t in ts],
                mode="markers",
                marker={"size": 9},
                name=name,
                hovertemplate="%{text}<br>%{x:.3f} MiB: %{y:.4f}<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"{data.metric} vs. embedding-table memory",
        xaxis={"title": "embedding tables (MiB, log scale)", "type": "log"},
        yaxis_title=data.metric,
        height=420,
    )
    return fig


def rmse_front_figure(data: ReportData) -> Any:
    """Validation top-100 (x) against RMSE (y) of every complete trial with both; the Pareto front highlighted."""
    import plotly.graph_objects as go

    if not data.rmse_points:
        raise ValueError(f"no complete trial has both validation {FRONT_X} and {RMSE}")
    by_trial = {p["trial"]: p for p in data.rmse_points}
    on_front = set(data.rmse_front)
    others = [p for p in data.rmse_points if p["trial"] not in on_front]
    front = [by_trial[n] for n in data.rmse_front]
    hover = f"%{{text}}<br>{FRONT_X} %{{x:.4f}}<br>{RMSE} %{{y:.4f}}<extra></extra>"
    fig = go.Figure()
    if others:
        fig.add_trace(
            go.Scatter(
                x=[p[FRONT_X] for p in others],
                y=[p[RMSE] for p in others],
                text=[f"trial {p['trial']}" for p in others],
                mode="markers",
                marker={"size": 8, "color": "rgba(31,119,180,0.55)"},
                name="complete trials",
                hovertemplate=hover,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[p[FRONT_X] for p in front],
            y=[p[RMSE] for p in front],
            text=[f"trial {p['trial']} (front)" for p in front],
            mode="lines+markers",
            marker={"size": 11, "color": "rgb(214,39,40)"},
            line={"color": "rgb(214,39,40)", "width": 2},
            name=f"Pareto front ({len(front)})",
            hovertemplate=hover,
        )
    )
    fig.update_layout(
        title=f"validation {FRONT_X} (higher is better) vs. {RMSE} (lower is better)",
        xaxis_title=f"validation {FRONT_X}",
        yaxis_title=f"validation {RMSE}",
        height=450,
    )
    return fig


def baselines_figure(data: ReportData) -> Any:
    import plotly.graph_objects as go

    rows = [data.best, *[t for t in data.baselines if data.best is None or t.number != data.best.number]]
    fig = go.Figure()
    for t in rows:
        label = f"trial {t.number} ({t.label}" + (
            ", best)" if data.best is not None and t.number == data.best.number else ")"
        )
        fig.add_trace(go.Bar(x=list(SHOWN_METRICS), y=[t.valid_metrics.get(m) for m in SHOWN_METRICS], name=label))
    fig.update_layout(barmode="group", title="validation metrics", height=380)
    return fig


def reruns_figure(data: ReportData) -> Any:
    import plotly.graph_objects as go

    rows = data.seed_reruns
    fig = go.Figure(
        go.Bar(
            x=[f"trial {r['trial']}" for r in rows],
            y=[r.get("mean") for r in rows],
            error_y={"type": "data", "array": [r.get("ci95") or 0.0 for r in rows], "visible": True},
            name="test mean ± 95% CI",
        )
    )
    fig.update_layout(title=f"test {rows[0].get('metric', data.metric)} over seeds (mean ± 95% interval)", height=360)
    return fig


# --------------------------------------------------------------------------------------------- page

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:16px 24px 64px}
h1{font-size:1.6em;margin:0.4em 0}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}
nav{font-size:0.9em;line-height:1.8}nav a{margin-right:12px;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f0f0f0}
td.params,td .params{font-family:ui-monospace,monospace;font-size:0.85em}
.na{color:#777;font-style:italic}.kv th{width:180px}.kv{min-width:640px}
code,pre{background:#f0f0f0;padding:2px 4px;border-radius:3px;font-size:0.85em}pre{padding:8px;white-space:pre-wrap}
.figure{background:#fff;border:1px solid #eee;margin:8px 0}.meta{color:#666;font-size:0.85em}
"""


def _figure_html(key: str, figure: Any) -> str:
    if figure is None:
        return na()
    if isinstance(figure, str):
        return na(figure)
    import plotly.io as pio

    div = pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{key}",
        default_height=f"{figure.layout.height or 450}px",
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="figure">{div}</div>'


def _summary_html(d: ReportData) -> str:
    s, info = d.settings, d.data_info
    rows = info.get("rows") or {}
    counts = d.counts
    budget = d.epochs_budget
    saved = d.epochs_saved_by_pruning
    pct = f" ({100.0 * saved / budget:.1f}% of {budget:,})" if budget else ""
    items = [
        ("study", esc(d.study_name)),
        ("storage", esc(d.storage) if d.storage else "–"),
        ("objective(s)", esc(", ".join(f"{o} ({dr})" for o, dr in zip(d.objectives, d.directions, strict=False)))),
        ("dataset", esc(s.get("dataset") or "–")),
        (
            "split protocol",
            esc(s.get("protocol") or "–")
            + (
                f" — rows train/valid/test: {fmt(rows.get('train'))}/{fmt(rows.get('valid'))}/{fmt(rows.get('test'))}"
                if rows
                else ""
            ),
        ),
        (
            "users / items",
            f"{fmt(info.get('num_users'))} / {fmt(info.get('num_items'))}" if info else "–",
        ),
        (
            "search space",
            esc(s.get("space") or "–")
            + (f" (<code>{esc(s['space_path'])}</code>)" if s.get("space_path") not in (None, s.get("space")) else ""),
        ),
        ("sampler / pruner", f"{esc(s.get('sampler') or '–')} / {esc(s.get('pruner') or '–')}"),
        ("max epochs", fmt(s.get("max_epochs"))),
        ("data hash", esc(s.get("data_hash") or "–")),
        (
            "trials",
            f"{counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, {counts.get('FAIL', 0)} failed"
            + (f", {counts.get('RUNNING', 0)} running" if counts.get("RUNNING") else "")
            + (f", {counts.get('WAITING', 0)} waiting" if counts.get("WAITING") else ""),
        ),
        (
            "wall time",
            f"{fmt_seconds(d.wall_seconds)} (first trial start to last trial end); "
            f"{fmt_seconds(d.trial_seconds)} in trials",
        ),
        (
            "epochs",
            f"{d.epochs_run:,} trained of {budget:,} if every finished trial ran to its max epochs; "
            f"pruning saved {saved:,}{pct}"
            + (f", early stopping {d.epochs_saved_by_early_stop:,}" if d.epochs_saved_by_early_stop else ""),
        ),
    ]
    return table(None, [[esc(k), v] for k, v in items], cls="kv")


def _best_html(d: ReportData) -> str:
    if d.multi_objective:
        if not d.pareto:
            return na(f"{NOT_AVAILABLE}: no complete trial yet")
        by_number = {t.number: t for t in d.trials}
        rows = [
            [
                str(n),
                *[fmt(v) for v in (by_number[n].values or [])],
                f'<span class="params">{fmt_params(by_number[n].params)}</span>',
            ]
            for n in d.pareto
        ]
        return (
            f"<p>A multi-objective study has no single best trial; its Pareto front holds {len(d.pareto)} trials.</p>"
            + table(["trial", *[esc(o) for o in d.objectives], "params"], rows)
        )
    b = d.best
    if b is None:
        return na(f"{NOT_AVAILABLE}: no complete trial yet")
    metric_names = sorted(set(b.valid_metrics) | set(d.best_test_metrics or {}), key=_metric_order)
    metric_rows = [
        [esc(m), fmt(b.valid_metrics.get(m)), fmt((d.best_test_metrics or {}).get(m)) if d.best_test_metrics else "–"]
        for m in metric_names
    ]
    test_note = (
        ""
        if d.best_test_metrics
        else '<p class="na">test metrics: not measured yet (finish <code>python -m study run</code>)</p>'
    )
    params = table(
        ["param", "value"], [[esc(k), fmt(v) if isinstance(v, float) else esc(v)] for k, v in b.params.items()]
    )
    facts = (
        f"<p>trial <b>{b.number}</b>: validation {esc(d.metric)} = <b>{fmt(b.value)}</b> at epoch {fmt(b.best_epoch)} "
        f"of {fmt(b.epochs_run)}; {fmt(b.total_params)} parameters, embedding tables {fmt_bytes(b.embedding_bytes)}, "
        f"{fmt(b.seconds, 1)} s</p>"
    )
    return (
        facts
        + '<div style="display:flex;gap:24px;flex-wrap:wrap"><div>'
        + params
        + "</div><div>"
        + table(["metric", "validation", "test"], metric_rows)
        + test_note
        + "</div></div>"
        + f"<p>Retrain it:</p><pre>{esc(d.retrain_command or '')}</pre>"
    )


def _metric_order(name: str) -> tuple[int, int]:
    kind = next((i for i, k in enumerate(("top", "recall", "ndcg")) if name.startswith(k)), 9)
    digits = "".join(ch for ch in name if ch.isdigit())
    return kind, int(digits) if digits else 0


def _baselines_html(d: ReportData, figure: Any) -> str:
    if not d.baselines:
        return na(f"{NOT_AVAILABLE}: the study has no tutorial baseline trials (run with --baselines)")
    rows = []
    shown = [
        *([d.best] if d.best is not None else []),
        *[t for t in d.baselines if d.best is None or t.number != d.best.number],
    ]
    for t in shown:
        rows.append(
            [
                str(t.number),
                esc(t.label) + (" <b>(best)</b>" if d.best is not None and t.number == d.best.number else ""),
                esc(t.layers if t.layers is not None else "–"),
                esc(t.state.lower()),
                *[fmt(t.valid_metrics.get(m)) for m in d.metric_columns],
                fmt_bytes(t.embedding_bytes),
                fmt(t.seconds, 1),
                f'<span class="params">{fmt_params(t.params)}</span>',
            ]
        )
    header = ["trial", "config", "layers", "state", *[f"valid {m}" for m in d.metric_columns], "embeddings", "seconds"]
    header.append("params")
    return table(header, rows) + (_figure_html("baselines", figure) if figure is not None else "")


def _techniques_html(d: ReportData, figure: Any) -> str:
    rows = []
    for key, label in (("embedding", "embedding technique"), ("body", "tower body")):
        for name, values in sorted(d.groups.get(key, {}).items()):
            best = max(values) if d.directions and d.directions[0] == "maximize" else min(values)
            rows.append([esc(label), esc(name), str(len(values)), fmt(sum(values) / len(values)), fmt(best)])
    text = table(["grouped by", "name", "complete trials", "mean", "best"], rows) if rows else ""
    return text + _figure_html("techniques", figure)


def _top_html(d: ReportData) -> str:
    if not d.top:
        return na(f"{NOT_AVAILABLE}: no complete trial yet")
    rows = []
    for rank, t in enumerate(d.top, start=1):
        rows.append(
            [
                str(rank),
                str(t.number),
                " / ".join(fmt(v) for v in t.values or []),
                *[fmt(t.valid_metrics.get(m)) for m in d.metric_columns],
                esc(t.layers if t.layers is not None else "–"),
                fmt(t.best_epoch),
                fmt(t.epochs_run),
                fmt_bytes(t.embedding_bytes),
                fmt(t.seconds, 1),
                esc(t.label if t.baseline else ""),
                f'<span class="params">{fmt_params(t.params)}</span>',
            ]
        )
    header = ["#", "trial", esc(" / ".join(d.objectives)), *[f"valid {m}" for m in d.metric_columns]]
    header += ["layers", "best epoch", "epochs", "embeddings", "seconds", "baseline", "params"]
    return table(header, rows)


def _rmse_html(d: ReportData, figure: Any) -> str:
    if not d.rmse_points:
        return na(f"{NOT_AVAILABLE}: no complete trial has both validation {FRONT_X} and {RMSE} (a rating head)")
    by_trial = {p["trial"]: p for p in d.rmse_points}
    rows = [[str(n), fmt(by_trial[n][FRONT_X]), fmt(by_trial[n][RMSE])] for n in d.rmse_front]
    text = (
        f"<p>Validation {FRONT_X} (higher is better) against {RMSE} (lower is better) of the {len(d.rmse_points)} "
        f"complete trials that have both; the {len(d.rmse_front)} on their Pareto front (no other trial is at least "
        "as good on both and better on one) are connected.</p>"
    )
    return text + _figure_html("rmse", figure) + table(["trial", f"valid {FRONT_X}", f"valid {RMSE}"], rows)


def _reruns_html(d: ReportData, figure: Any) -> str:
    if not d.seed_reruns:
        return na(f"{NOT_AVAILABLE}: run `python -m study evaluate` to re-train the top trials with other seeds")
    rows = [
        [
            str(r["trial"]),
            esc(r.get("metric", d.metric)),
            fmt(r.get("valid")),
            f"{fmt(r.get('mean'))} ± {fmt(r.get('ci95'))}",
            esc(", ".join(fmt(v) for v in r.get("values", []))),
            esc(", ".join(str(s) for s in r.get("seeds", []))),
            fmt(r.get("epochs")),
        ]
        for r in d.seed_reruns
    ]
    header = ["trial", "metric", "validation (search)", "test mean ± 95% CI", "test values", "seeds", "epochs"]
    return table(header, rows) + _figure_html("reruns", figure)


def render_html(data: ReportData, figures: Mapping[str, Any] | None = None) -> str:
    """The report page. ``figures`` is :func:`build_figures`' result (missing keys show as "not available")."""
    import plotly.offline

    figures = dict(figures or {})
    fig = figures.get
    explain_importance = (
        f"<p>{importance_evaluator()[1]} importances (<code>optuna.importance</code>) of the objective over the "
        "complete trials.</p>"
    )
    bodies = {
        "summary": _summary_html(data),
        "best": _best_html(data),
        "baselines": _baselines_html(data, fig("baselines")),
        "history": _figure_html("history", fig("history")),
        "curves": "<p>Each line is one trial; pruned trials end in an × at the epoch where they were stopped.</p>"
        + _figure_html("curves", fig("curves"))
        + "".join(_figure_html(f"curves-{name}", fig(f"curves-{name}")) for name in data.curve_metrics),
        "importances": explain_importance + _figure_html("importances", fig("importances")),
        "parallel": _figure_html("parallel", fig("parallel")),
        "slices": _figure_html("slices", fig("slices")),
        "techniques": _techniques_html(data, fig("techniques")),
        "memory": ("<p>The Pareto front of the objectives.</p>" if data.multi_objective else "")
        + _figure_html("memory", fig("memory")),
        "durations": _figure_html("durations", fig("durations")),
        "top": _top_html(data),
        "reruns": _reruns_html(data, fig("reruns")),
        "rmse": _rmse_html(data, fig("rmse")),
    }
    shown = sections(data)
    nav = "".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title in shown)
    body = "".join(f'<section id="{key}"><h2>{html.escape(title)}</h2>{bodies[key]}</section>' for key, title in shown)
    plotly_js = plotly.offline.get_plotlyjs().replace("</script", "<\\/script")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Study report: {esc(data.study_name)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{plotly_js}</script></head><body><main>'
        f"<h1>Study report: {esc(data.study_name)}</h1>"
        f'<p class="meta">generated {esc(data.generated)} by <code>python -m study report</code></p>'
        f"<nav>{nav}</nav>{body}</main></body></html>\n"
    )


def default_out_path(study_name: str) -> Path:
    """``reports/<study name with unsafe characters replaced>.html``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study"
    return Path("reports") / f"{safe}.html"


def write_report(optuna_study: Any, out: str | Path | None = None, storage_url: str | None = None) -> Path:
    """Collect, draw and write the report of ``optuna_study``; returns the file written."""
    data = collect(optuna_study, storage_url=storage_url)
    text = render_html(data, build_figures(optuna_study, data))
    path = Path(out) if out else default_out_path(optuna_study.study_name)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"--out {path}: cannot write the report there ({exc.strerror or exc}); pass --out in a folder you can write"
        ) from None
    return path
