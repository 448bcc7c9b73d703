"""optuna-dashboard on a study's storage, per-trial artifacts and a live study note.

* :func:`serve` (``python -m study dashboard``) runs optuna-dashboard in-process on the same storage (bound to
  127.0.0.1 unless told otherwise), with the study's artifact folder so the artifacts show in the trial pages.
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

ARTIFACT_FILES = ("learning_curve.json", "learning_curve.csv", "config.json")
_warned: set[str] = set()


def artifact_dir_for(storage_url: str) -> Path | None:
    """``<db stem>-artifacts/`` next to a SQLite or journal file; None for server databases and in-memory SQLite."""
    from study.runner import _sqlite_path

    path = _sqlite_path(storage_url)
    if path is None and storage_url.startswith("journal:") and storage_url[len("journal:") :]:
        path = Path(storage_url[len("journal:") :])
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
    curve = [[int(e), float(v)] for e, v in user_attrs.get("learning_curve") or []]
    losses = [[int(e), float(v)] for e, v in user_attrs.get("loss_curve") or []]
    metric = (user_attrs.get("config") or {}).get("train", {}).get("metric", "metric")
    doc = {
        "trial": trial_number,
        "metric": metric,
        "learning_curve": curve,
        "loss_curve": losses,
        "best_epoch": user_attrs.get("best_epoch"),
        "epochs_run": user_attrs.get("epochs_run"),
        "pruned_at_epoch": user_attrs.get("pruned_at_epoch"),
        "valid_metrics": user_attrs.get("valid_metrics", {}),
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
    paths[2].write_text(json.dumps(user_attrs.get("config") or {}, indent=1), encoding="utf-8")
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


def study_note(optuna_study: Any, last_trial: Any = None) -> str:
    """Markdown for the study's dashboard note: counts and the best trial so far (or the Pareto front)."""
    from optuna.trial import TrialState

    counts: dict[str, int] = {}
    for t in optuna_study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    attrs = optuna_study.user_attrs
    metric = attrs.get("metric", "top100")
    lines = [f"## {_md(optuna_study.study_name)}", ""]
    lines.append(
        f"*{counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, {counts.get('FAIL', 0)} failed"
        + (f" — updated after trial {last_trial.number}" if last_trial is not None else "")
        + "*"
    )
    lines.append("")
    lines.append(
        f"dataset `{_md(attrs.get('dataset', '?'))}` ({_md(attrs.get('protocol', '?'))} split), space "
        f"`{_md(attrs.get('space', '?'))}`, sampler {_md(attrs.get('sampler', '?'))}, "
        f"pruner {_md(attrs.get('pruner', '?'))}"
    )
    lines.append("")
    if len(optuna_study.directions) > 1:
        front = optuna_study.best_trials
        lines.append(f"### Pareto front: {len(front)} trials")
        objectives = attrs.get("objectives") or [f"objective {i}" for i in range(len(optuna_study.directions))]
        lines += [
            "",
            "| trial | " + " | ".join(_md(o) for o in objectives) + " |",
            "|---" * (len(objectives) + 1) + "|",
        ]
        for t in sorted(front, key=lambda t: t.number)[:15]:
            lines.append(f"| {t.number} | " + " | ".join(_md(float(v)) for v in t.values) + " |")
        return "\n".join(lines) + "\n"
    complete = optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        lines.append("No complete trial yet.")
        return "\n".join(lines) + "\n"
    best = optuna_study.best_trial
    ua = best.user_attrs
    lines.append(f"### Best trial: #{best.number} — valid {_md(metric)} = {best.value:.4f}")
    lines.append("")
    valid = ua.get("valid_metrics", {})
    shown = [m for m in ("top10", "top50", "top100") if m in valid]
    if shown:
        lines.append("validation: " + ", ".join(f"{m} {valid[m]:.4f}" for m in shown))
        lines.append("")
    if attrs.get("test_trial") == best.number and attrs.get("test_metrics"):
        test = attrs["test_metrics"]
        lines.append("test: " + ", ".join(f"{m} {test[m]:.4f}" for m in ("top10", "top50", "top100") if m in test))
        lines.append("")
    facts = []
    if ua.get("best_epoch") is not None:
        facts.append(f"best epoch {ua['best_epoch']} of {ua.get('epochs_run', '?')}")
    if ua.get("embedding_bytes") is not None:
        facts.append(f"embedding tables {ua['embedding_bytes'] / 2**20:.2f} MiB")
    if ua.get("seconds") is not None:
        facts.append(f"{ua['seconds']:.1f} s")
    if facts:
        lines += [", ".join(facts), ""]
    lines += ["| param | value |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in best.params.items()]
    try:
        from study.cli import retrain_command

        lines += ["", "Retrain:", "", "```", retrain_command(optuna_study, best), "```"]
    except Exception:
        pass
    return "\n".join(lines) + "\n"


def after_trial(optuna_study: Any, frozen_trial: Any, artifact_store: Any = None) -> None:
    """Optuna callback body: rewrite the study's dashboard note (best trial so far). Never raises.

    ``artifact_store`` is accepted for symmetry; a finished trial cannot take artifacts, so those are uploaded by
    :class:`ArtifactObjective` while the trial runs.
    """
    try:
        from optuna_dashboard import save_note

        names = [str(n) for n in optuna_study.user_attrs.get("objectives") or []]
        if len(names) == len(optuna_study.directions) and optuna_study.metric_names is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental in Optuna
                optuna_study.set_metric_names(names)  # "top100" instead of "Objective 0" in the dashboard
        save_note(optuna_study, study_note(optuna_study, frozen_trial))
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
    return objective, [*callbacks, lambda s, t: after_trial(s, t, store)]


# --------------------------------------------------------------------------------------------- server


def dashboard_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard/"


def serve(storage_url: str, host: str = "127.0.0.1", port: int = 8080, out: Any = None) -> None:
    """Run optuna-dashboard in this process on ``storage_url`` until interrupted.

    Raises:
        ConfigError: a missing SQLite file, an unusable storage or a port that cannot be bound.
    """
    from optuna_dashboard import run_server

    from study.errors import ConfigError
    from study.runner import _sqlite_path, mask_url, open_storage

    out = out or sys.stdout
    if not 0 < port < 65536:
        raise ConfigError(f"--port: must be in 1..65535, but got {port}")
    path = _sqlite_path(storage_url)
    if path is not None and not path.exists():
        raise ConfigError(f"--storage {storage_url}: no such file; run `python -m study run` first")
    storage = open_storage(storage_url, heartbeat=False)
    store = artifact_store_for(storage_url, create=False)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {host}: anyone who can reach this machine can see and edit the studies", file=out)
    print(
        f"optuna-dashboard for {mask_url(storage_url)}"
        + (f" (artifacts in {artifact_dir_for(storage_url)})" if store is not None else "")
        + f": open {dashboard_url(host, port)}  (Ctrl-C to stop)",
        file=out,
        flush=True,
    )
    try:
        run_server(storage, host=host, port=port, artifact_store=store)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); pick another --port") from None
