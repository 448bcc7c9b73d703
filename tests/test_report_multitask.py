"""The report of a multi-task study (towers with a rating head): RMSE columns, the top-100 vs. RMSE front, and the
learning curves of both; a study without a head keeps its plain report.

One real study per module (tiny towers, 2 epochs, no XLA, ``--metric rmse``, no pruner so every trial completes).
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from e2e_util import write_dataset, write_space
from test_report import parse

from study.names import TrialAttr
from study.report import (
    RMSE_SECTION,
    SECTIONS,
    SHOWN_METRICS,
    build_figures,
    collect,
    max_min_front,
    render_html,
    sections,
)

# A fixed rating head on tiny towers; the learning rate and the loss weights vary, so trials differ on both metrics.
MT_REPORT_SPACE = """\
model:
  layers: [16]
  embedding_dim: 8
  rating_head: true
  rating_layers: [8]
  rating_weight: {type: float, low: 0.1, high: 10.0, log: true}
train:
  learning_rate: {type: float, low: 0.02, high: 0.5, log: true}
  batch_size: 512
  epochs: 2
  eval_every: 1
  jit: false
"""
TRIALS = 5


@dataclasses.dataclass(frozen=True)
class MtStudy:
    storage: str
    name: str

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)


@pytest.fixture(scope="module")
def mt_study() -> Iterator[MtStudy]:
    from study.config import RunSettings
    from study.runner import run_study

    folder = Path(tempfile.mkdtemp(prefix="study-report-mt-"))
    try:
        csv = write_dataset(folder / "ratings.csv", n_rows=3000)
        space = write_space(folder / "mt.yaml", MT_REPORT_SPACE)
        storage = f"sqlite:///{folder}/mt.db"
        settings = RunSettings(
            space=str(space),
            dataset=f"csv:{csv}",
            storage=storage,
            study_name="mt",
            sampler="random",
            pruner="none",
            metric="rmse",
            trials=TRIALS,
            seed=0,
            quiet=True,
        )
        run_study(settings, out=io.StringIO())
        yield MtStudy(storage, "mt")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _plain_copy(optuna_study: optuna.Study) -> optuna.Study:
    """The same trials as if trained without a head: no rmse anywhere, no ``curves``; top100 maximised."""
    plain = optuna.create_study(study_name="plain", direction="maximize")
    plain.set_user_attr("metric", "top100")
    for t in optuna_study.get_trials():
        attrs = dict(t.user_attrs)
        attrs.pop(TrialAttr.CURVES, None)
        valid = {k: v for k, v in (attrs.get(TrialAttr.VALID_METRICS) or {}).items() if k != "rmse"}
        attrs[TrialAttr.VALID_METRICS] = valid
        attrs[TrialAttr.LEARNING_CURVE] = t.user_attrs[TrialAttr.CURVES]["top100"]
        plain.add_trial(
            optuna.trial.create_trial(
                params=t.params,
                distributions=t.distributions,
                value=valid["top100"],
                user_attrs=attrs,
                intermediate_values={e: v for e, v in attrs[TrialAttr.LEARNING_CURVE]},
            )
        )
    return plain


def _two_objective_copy(optuna_study: optuna.Study) -> optuna.Study:
    """The same trials as a ``--objectives top100,rmse`` study (its learning curves then hold top100)."""
    multi = optuna.create_study(study_name="front", directions=["maximize", "minimize"])
    multi.set_user_attr("metric", "top100")
    multi.set_user_attr("objectives", ["top100", "rmse"])
    for t in optuna_study.get_trials():
        attrs = {**t.user_attrs, TrialAttr.LEARNING_CURVE: t.user_attrs[TrialAttr.CURVES]["top100"]}
        valid = attrs[TrialAttr.VALID_METRICS]
        multi.add_trial(
            optuna.trial.create_trial(
                params=t.params,
                distributions=t.distributions,
                values=[valid["top100"], valid["rmse"]],
                user_attrs=attrs,
            )
        )
    return multi


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` dominates ``b`` on (max top100, min rmse)."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


# --------------------------------------------------------------------------------------------- collect


def test_collect_gathers_the_stored_rmse_and_the_front(mt_study: MtStudy) -> None:
    s = mt_study.load()
    data = collect(s)
    frozen = {t.number: t for t in s.trials}
    assert data.counts["COMPLETE"] == TRIALS and data.directions == ["minimize"] and data.metric == "rmse"
    assert data.metric_columns == [*SHOWN_METRICS, "rmse"]
    assert data.curve_metrics == ["top100"]  # the learning curve already holds rmse (the study's metric)
    for t in data.trials:
        stored = frozen[t.number].user_attrs
        assert t.valid_metrics["rmse"] == stored[TrialAttr.VALID_METRICS]["rmse"]
        assert t.curves == stored[TrialAttr.CURVES]
        assert [p[1] for p in t.curves["rmse"]] == [p[1] for p in t.learning_curve]
    # every complete trial is a point, with its stored values
    points = {p["trial"]: (p["top100"], p["rmse"]) for p in data.rmse_points}
    assert set(points) == set(frozen)
    for n, (top100, rmse) in points.items():
        valid = frozen[n].user_attrs[TrialAttr.VALID_METRICS]
        assert (top100, rmse) == (valid["top100"], valid["rmse"])
        assert 0.0 <= top100 <= 1.0 and 0.0 < rmse < 10.0
    # the front by hand: nothing on it is dominated, everything off it is
    front = set(data.rmse_front)
    assert front and len(front) == len(data.rmse_front)
    for n, p in points.items():
        dominated = any(_dominates(q, p) for m, q in points.items() if m != n)
        assert dominated == (n not in front), (n, p, points, data.rmse_front)
    xs = [points[n][0] for n in data.rmse_front]
    assert xs == sorted(xs)  # drawn left to right
    # the best trial (lowest rmse) is on the front; a single-objective study has no best_trials front of its own
    assert data.best is not None and data.best.number in front and data.pareto == []
    assert data.best_test_metrics is not None and data.best_test_metrics["rmse"] > 0


def test_max_min_front_by_hand() -> None:
    points = [
        (0, 0.5, 1.0),
        (1, 0.6, 1.2),
        (2, 0.4, 1.1),  # dominated by 0
        (3, 0.6, 1.3),  # dominated by 1 (same top100, higher rmse)
        (4, 0.5, 1.0),  # equal to 0: both on the front
        (5, 0.9, math.nan),  # not finite: left out
        (6, 0.7, 2.0),
        (7, 0.3, 0.9),
    ]
    assert max_min_front(points) == [7, 0, 4, 1, 6]
    assert max_min_front([]) == []


# --------------------------------------------------------------------------------------------- html


def test_report_shows_rmse_columns_front_and_both_curves(mt_study: MtStudy) -> None:
    s = mt_study.load()
    data = collect(s)
    figures = build_figures(s, data)
    for key in ("rmse", "curves", "curves-top100"):
        assert not isinstance(figures[key], str), figures[key]
    front = figures["rmse"]
    assert front.layout.xaxis.title.text == "validation top100"
    assert front.layout.yaxis.title.text == "validation rmse"
    on_front = next(tr for tr in front.data if tr.name.startswith("Pareto front"))
    assert [int(re.match(r"trial (\d+)", t).group(1)) for t in on_front.text] == data.rmse_front  # hover: trial
    assert (
        "rmse" in figures["curves"].layout.yaxis.title.text and "lower is better" in figures["curves"].layout.title.text
    )
    assert figures["curves-top100"].layout.yaxis.title.text == "validation top100"

    text = render_html(data, figures)
    page = parse(text)
    assert page.headings == [title for _, title in sections(data)]
    assert RMSE_SECTION in sections(data) and [h for h in page.headings if h != RMSE_SECTION[1]] == [
        title for _, title in SECTIONS
    ]
    assert {"fig-rmse", "fig-curves", "fig-curves-top100"} <= page.figures
    assert text.count("<th>valid rmse</th>") >= 2  # the top trials' table and the front's table
    assert f"<td>rmse</td><td>{data.best.valid_metrics['rmse']:.4f}</td>" in text  # best trial: valid and test
    assert f"<td>{data.best_test_metrics['rmse']:.4f}</td>" in text


def test_a_study_without_a_head_has_no_rmse_column_or_figure(mt_study: MtStudy) -> None:
    plain = _plain_copy(mt_study.load())
    data = collect(plain)
    assert data.metric_columns == list(SHOWN_METRICS)
    assert data.rmse_points == [] and data.rmse_front == [] and data.curve_metrics == []
    assert all(t.curves == {} for t in data.trials)
    figures = build_figures(plain, data)
    assert "rmse" not in figures and not any(key.startswith("curves-") for key in figures)
    text = render_html(data, figures)
    page = parse(text)
    assert page.headings == [title for _, title in SECTIONS]
    assert "valid rmse" not in text and "fig-rmse" not in page.figures and RMSE_SECTION[1] not in text
    assert "<th>valid top100</th>" in text


def test_two_objective_study_draws_the_rmse_curves_and_the_same_front_as_optuna(mt_study: MtStudy) -> None:
    multi = _two_objective_copy(mt_study.load())
    data = collect(multi)
    assert data.curve_metrics == ["rmse"] and data.metric_columns == [*SHOWN_METRICS, "rmse"]
    # on these values Optuna's own front of the two objectives is ours
    assert sorted(data.rmse_front) == data.pareto == sorted(t.number for t in multi.best_trials)
    figures = build_figures(multi, data)
    curves = figures["curves-rmse"]
    assert not isinstance(curves, str), curves
    assert curves.layout.yaxis.title.text == "validation rmse (lower is better)"
    assert figures["curves"].layout.yaxis.title.text == "validation top100"
    page = parse(render_html(data, figures))
    assert {"fig-curves", "fig-curves-rmse", "fig-rmse", "fig-memory"} <= page.figures
