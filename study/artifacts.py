"""Per-trial artifacts and a live study note for optuna-dashboard, written while a study runs.

* During ``python -m study run`` every trial uploads three small artifacts while it is still running (Optuna
  refuses to attach artifacts to a finished trial): ``learning_curve.json`` (validation metric and loss per epoch),
  ``learning_curve.csv`` (the same as a table) and ``config.json`` (the exact config it trained). After each trial
  the study's dashboard note is rewritten with a summary of the best trial so far.
* Artifacts live in an Optuna ``FileSystemArtifactStore`` next to the storage file: ``<db stem>-artifacts/`` for
  ``sqlite:///PATH`` and ``journal:PATH``. Server databases (PostgreSQL, MySQL) have no such folder, so there the
  uploads are skipped (the note is still written).

Uploads and the note are best effort: a failure prints one warning and never fails or slows a trial noticeably
(a few small files and storage writes per trial).
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study.results import StudyAttr, TrialAttr, best_trial, count_states, metric_of, retrain_command
from study.storage import storage_file

ARTIFACT_FILES = ("learning_curve.json", "learning_curve.csv", "config.json")
_warned: set[str] = set()


def artifact_dir_for(storage_url: str) -> Path | None:
    """``<db stem>-artifacts/`` next to a SQLite or journal file; None for server databases and in-memory SQLite."""
    path = storage_file(storage_url)
    if path is None:
        return None
    return path.with_name(f"{path.stem}-artifacts")


def artifact_store_for(storage_url: str, create: bool = True) -> Any:
    """The ``FileSystemArtifactStore`` of a storage (see :func:`artifact_dir_for`), or None where there is none.

    Args:
        create: make the folder when missing; otherwise return None when it does not exist.
    """
    from optuna.artifacts import FileSystemArtifactStore

    folder = artifact_dir_for(storage_url)
    if folder is None:
        return None
    if not folder.is_dir():
        if not create:
            return None
        folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def _warn_once(what: str, exc: BaseException) -> None:
    if what not in _warned:
        _warned.add(what)
        print(f"warning: {what} failed ({type(exc).__name__}: {exc}); the study goes on without it", file=sys.stderr)


# --------------------------------------------------------------------------------------------- artifacts


def write_trial_files(trial_number: int, user_attrs: dict[str, Any], folder: Path) -> list[Path]:
    """Write the artifact files of one trial into ``folder``; returns their paths (see ``ARTIFACT_FILES``)."""
    curve = [[int(e), float(v)] for e, v in user_attrs.get(TrialAttr.LEARNING_CURVE) or []]
    losses = [[int(e), float(v)] for e, v in user_attrs.get(TrialAttr.LOSS_CURVE) or []]
    metric = (user_attrs.get(TrialAttr.CONFIG) or {}).get("train", {}).get("metric", "metric")
    doc = {
        "trial": trial_number,
        "metric": metric,
        "learning_curve": curve,
        "loss_curve": losses,
        "best_epoch": user_attrs.get(TrialAttr.BEST_EPOCH),
        "epochs_run": user_attrs.get(TrialAttr.EPOCHS_RUN),
        "pruned_at_epoch": user_attrs.get(TrialAttr.PRUNED_AT_EPOCH),
        "valid_metrics": user_attrs.get(TrialAttr.VALID_METRICS, {}),
    }
    paths = [folder / name for name in ARTIFACT_FILES]
    paths[0].write_text(json.dumps(doc, indent=1), encoding="utf-8")
    by_epoch: dict[int, list[Any]] = {}
    for epoch, loss in losses:
        by_epoch.setdefault(epoch, ["", ""])[1] = loss
    for epoch, value in curve:
        by_epoch.setdefault(epoch, ["", ""])[0] = value
    with paths[1].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", f"valid_{metric}", "loss"])
        for epoch in sorted(by_epoch):
            writer.writerow([epoch, *by_epoch[epoch]])
    paths[2].write_text(json.dumps(user_attrs.get(TrialAttr.CONFIG) or {}, indent=1), encoding="utf-8")
    return paths


def upload_trial_artifacts(trial: Any, storage: Any, artifact_store: Any) -> None:
    """Upload the learning curve (JSON + CSV) and config of a *running* trial to ``artifact_store``."""
    from optuna.artifacts import upload_artifact

    with tempfile.TemporaryDirectory(prefix="study-artifacts-") as tmp:
        for path in write_trial_files(trial.number, dict(trial.user_attrs), Path(tmp)):
            upload_artifact(artifact_store=artifact_store, file_path=str(path), study_or_trial=trial, storage=storage)


class ArtifactObjective:
    """Wraps an Optuna objective: after it returns or raises (pruned, failed), the trial's artifacts are uploaded
    while the trial is still running."""

    def __init__(self, objective: Callable[[Any], Any], artifact_store: Any) -> None:
        self.objective = objective
        self.artifact_store = artifact_store

    def __call__(self, trial: Any) -> Any:
        try:
            return self.objective(trial)
        finally:
            try:
                upload_trial_artifacts(trial, trial.storage, self.artifact_store)
            except Exception as exc:  # best effort: never fail a trial for its artifacts
                _warn_once("uploading trial artifacts", exc)

    def __getattr__(self, name: str) -> Any:  # the wrapped Objective's fields stay readable
        if name == "objective":
            raise AttributeError(name)
        return getattr(self.objective, name)


# --------------------------------------------------------------------------------------------- study note


def _md(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def study_note(optuna_study: Any, last_trial: Any = None, storage_url: str | None = None) -> str:
    """Markdown for the study's dashboard note: counts and the best trial so far (or the Pareto front)."""
    counts = {state.name: n for state, n in count_states(optuna_study).items()}
    attrs = optuna_study.user_attrs
    metric = metric_of(optuna_study)
    lines = [f"## {_md(optuna_study.study_name)}", ""]
    lines.append(
        f"*{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed"
        + (f" — updated after trial {last_trial.number}" if last_trial is not None else "")
        + "*"
    )
    lines.append("")
    lines.append(
        f"dataset `{_md(attrs.get(StudyAttr.DATASET, '?'))}` ({_md(attrs.get(StudyAttr.PROTOCOL, '?'))} split), space "
        f"`{_md(attrs.get(StudyAttr.SPACE, '?'))}`, sampler {_md(attrs.get(StudyAttr.SAMPLER, '?'))}, "
        f"pruner {_md(attrs.get(StudyAttr.PRUNER, '?'))}"
    )
    lines.append("")
    if len(optuna_study.directions) > 1:
        front = optuna_study.best_trials
        lines.append(f"### Pareto front: {len(front)} trials")
        objectives = attrs.get(StudyAttr.OBJECTIVES) or [f"objective {i}" for i in range(len(optuna_study.directions))]
        lines += [
            "",
            "| trial | " + " | ".join(_md(o) for o in objectives) + " |",
            "|---" * (len(objectives) + 1) + "|",
        ]
        for t in sorted(front, key=lambda t: t.number)[:15]:
            lines.append(f"| {t.number} | " + " | ".join(_md(float(v)) for v in t.values) + " |")
        return "\n".join(lines) + "\n"
    best = best_trial(optuna_study)
    if best is None:
        lines.append("No complete trial yet.")
        return "\n".join(lines) + "\n"
    ua = best.user_attrs
    lines.append(f"### Best trial: #{best.number} — valid {_md(metric)} = {best.value:.4f}")
    lines.append("")
    valid = ua.get(TrialAttr.VALID_METRICS, {})
    shown = [m for m in ("top10", "top50", "top100") if m in valid]
    if shown:
        lines.append("validation: " + ", ".join(f"{m} {valid[m]:.4f}" for m in shown))
        lines.append("")
    if attrs.get(StudyAttr.TEST_TRIAL) == best.number and attrs.get(StudyAttr.TEST_METRICS):
        test = attrs[StudyAttr.TEST_METRICS]
        lines.append("test: " + ", ".join(f"{m} {test[m]:.4f}" for m in ("top10", "top50", "top100") if m in test))
        lines.append("")
    facts = []
    if ua.get(TrialAttr.BEST_EPOCH) is not None:
        facts.append(f"best epoch {ua[TrialAttr.BEST_EPOCH]} of {ua.get(TrialAttr.EPOCHS_RUN, '?')}")
    if ua.get("embedding_bytes") is not None:
        facts.append(f"embedding tables {ua['embedding_bytes'] / 2**20:.2f} MiB")
    if ua.get(TrialAttr.SECONDS) is not None:
        facts.append(f"{ua[TrialAttr.SECONDS]:.1f} s")
    if facts:
        lines += [", ".join(facts), ""]
    lines += ["| param | value |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in best.params.items()]
    lines += ["", "Retrain:", "", "```", retrain_command(optuna_study, best, storage_url), "```"]
    return "\n".join(lines) + "\n"


def after_trial(optuna_study: Any, frozen_trial: Any, storage_url: str | None = None) -> None:
    """Optuna callback body: rewrite the study's dashboard note (best trial so far). Never raises."""
    try:
        from optuna_dashboard import save_note

        names = [str(n) for n in optuna_study.user_attrs.get(StudyAttr.OBJECTIVES) or []]
        if len(names) == len(optuna_study.directions) and optuna_study.metric_names is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental in Optuna
                optuna_study.set_metric_names(names)  # "top100" instead of "Objective 0" in the dashboard
        save_note(optuna_study, study_note(optuna_study, frozen_trial, storage_url))
    except Exception as exc:
        _warn_once("updating the dashboard note", exc)


def with_dashboard(objective: Callable[[Any], Any], callbacks: list[Any], storage_url: str) -> tuple[Any, list[Any]]:
    """The run loop's objective and callbacks with the dashboard hooks added (see module doc).

    Artifacts are uploaded only for storages with a folder (SQLite file, journal file); the note always.
    """
    try:
        store = artifact_store_for(storage_url)
    except Exception as exc:
        _warn_once("creating the artifact folder", exc)
        store = None
    if store is not None:
        objective = ArtifactObjective(objective, store)
    return objective, [*callbacks, lambda s, t: after_trial(s, t, storage_url)]
