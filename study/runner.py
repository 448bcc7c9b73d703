"""A run of a study, in named steps: :func:`prepare`, :func:`run_trials`, :func:`finish` (:func:`run_study` does all
three; the parent of ``run --jobs N`` prepares and finishes while its workers run the trials).

``--trials N`` is a target of *finished* trials (complete + pruned) in the study: running the same command again
after a crash or Ctrl-C finishes the remainder. Failed trials are kept and shown but do not count; a trial whose
worker died (SIGKILL, OOM, power loss) is marked FAIL — at once when the worker was a process on this machine, else
through the storage heartbeat — and its parameters are enqueued again.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.config import RunSettings, TrialConfig
from study.errors import ConfigError, StudyError
from study.locks import StartLock
from study.progress import Progress, format_seconds
from study.results import (
    StudyAttr,
    TrialAttr,
    best_trial,
    count_states,
    finished_count,
    retrain_config,
)
from study.storage import mask_url, open_storage

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module=r"optuna\..*")
optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLERS: dict[str, Callable[[int | None, bool], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed, multi: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True),
    "random": lambda seed, multi: optuna.samplers.RandomSampler(seed=seed),
    "cmaes": lambda seed, multi: _cmaes_sampler(seed, multi),
    "gp": lambda seed, multi: _gp_sampler(seed),
    "qmc": lambda seed, multi: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
    "nsga2": lambda seed, multi: optuna.samplers.NSGAIISampler(seed=seed),
}

#: A run stops with an error after this many failed trials in a row (a NaN loss or a timeout now and then is normal,
#: every trial failing is a broken setup).
MAX_FAILED_IN_A_ROW = 10

PRUNERS: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    "hyperband": lambda max_epochs: optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=max(max_epochs, 1), reduction_factor=3
    ),
    "median": lambda max_epochs: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    "successive-halving": lambda max_epochs: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
    "none": lambda max_epochs: optuna.pruners.NopPruner(),
}


def _cmaes_sampler(seed: int | None, multi: bool) -> optuna.samplers.BaseSampler:
    if multi:
        raise ValueError(
            "sampler 'cmaes' is single-objective only; with --objectives use tpe, nsga2, random, qmc or gp"
        )
    return optuna.samplers.CmaEsSampler(
        seed=seed, warn_independent_sampling=False, independent_sampler=optuna.samplers.TPESampler(seed=seed)
    )


def _gp_sampler(seed: int | None) -> optuna.samplers.BaseSampler:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError(
            "sampler 'gp': Optuna's GPSampler needs PyTorch; `pip install torch` or pick another sampler"
        ) from None
    return optuna.samplers.GPSampler(seed=seed)


def build_sampler(name: str, seed: int | None = None, multi_objective: bool = False) -> optuna.samplers.BaseSampler:
    """A sampler by name; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        factory = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; valid samplers are {sorted(SAMPLERS)}") from None
    return factory(seed, multi_objective)


def build_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """A pruner by name; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        factory = PRUNERS[name]
    except KeyError:
        raise ValueError(f"unknown pruner {name!r}; valid pruners are {sorted(PRUNERS)}") from None
    return factory(max_epochs)


# --------------------------------------------------------------------------------------------- failed trials


def enqueue_retry(optuna_study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
    """Record why ``trial`` failed (when it still takes attributes) and queue its parameters again."""
    try:
        optuna_study._storage.set_trial_user_attr(trial._trial_id, TrialAttr.FAIL_REASON, reason)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # already FAIL (heartbeat path, or reaped below): Optuna takes no attrs on a finished trial
    retried = trial.user_attrs.get(TrialAttr.RETRY_OF, trial.number)
    optuna_study.enqueue_trial(
        trial.params,
        user_attrs={TrialAttr.RETRY_OF: retried, TrialAttr.RETRIED_FROM: trial.number},
        skip_if_exists=False,
    )


def retry_stale_trial(optuna_study: optuna.Study, trial: FrozenTrial) -> None:
    """Heartbeat callback: a trial whose worker stopped beating is FAIL; enqueue its params again."""
    enqueue_retry(optuna_study, trial, "worker stopped sending heartbeats (killed or lost)")


def reap_dead_local_workers(optuna_study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose worker was a process on this host that no longer exists as FAIL, and retry them.

    Returns:
        The numbers of the trials marked FAIL.
    """
    import socket

    host = socket.gethostname()
    reaped = []
    for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(TrialAttr.WORKER, "")
        w_host, _, pid = worker.rpartition(":")
        if w_host != host or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        reason = f"worker {worker} died during the trial"
        try:
            # The reason first: once the trial is FAIL, Optuna refuses to set its attrs (UpdateFinishedTrialError).
            optuna_study._storage.set_trial_user_attr(trial._trial_id, TrialAttr.FAIL_REASON, reason)
            optuna_study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except Exception:  # another worker got there first
            continue
        enqueue_retry(optuna_study, trial, reason)
        reaped.append(trial.number)
    return reaped


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed worker stays a zombie until the parent waits for it: dead all the same
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:  # no /proc (macOS) or gone in the meantime
        return True


def _fail_own_running(optuna_study: optuna.Study) -> None:
    """After Ctrl-C: a trial of this process still RUNNING (interrupted while Optuna was recording it) becomes FAIL."""
    from study.objective import worker_id

    for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(TrialAttr.WORKER) != worker_id():
            continue
        try:
            optuna_study._storage.set_trial_user_attr(trial._trial_id, TrialAttr.FAIL_REASON, "interrupted")
            optuna_study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except Exception:  # finished in the meantime
            pass


# --------------------------------------------------------------------------------------------- study identity


def default_study_name(dataset: str, space: str) -> str:
    """``<dataset>-<space>`` with anything but letters, digits, ``._-`` turned into ``_``."""
    space_name = Path(space).stem if ("/" in space or space.endswith((".yaml", ".yml"))) else space
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset}-{space_name}").strip("_")


IDENTITY_KEYS = (
    StudyAttr.DATASET,
    StudyAttr.PROTOCOL,
    StudyAttr.SPACE_FINGERPRINT,
    StudyAttr.DATA_HASH,
    StudyAttr.OBJECTIVES,
)


def check_identity(
    optuna_study: optuna.Study, identity: dict[str, Any], storage_url: str, given: dict[str, str] | None = None
) -> None:
    """Refuse to continue a study that this tool did not make, or that was run on other data, another split or
    another space.

    Args:
        given: what the run was given, by identity key, for a message that names more than a hash (``space_path``
            for the fingerprint, the dataset for the data hash).

    Raises:
        ConfigError: naming the first difference and how to start a separate study.
    """
    attrs = optuna_study.user_attrs
    where = f"study {optuna_study.study_name!r} in {mask_url(storage_url)}"
    if not any(key in attrs for key in IDENTITY_KEYS):
        raise ConfigError(
            f"{where} was not made by `python -m study run` (it records no dataset, space or data hash), so it is "
            "left as it is; pass --study-name NEW to start a study of this tool's own"
        )
    stored = {
        StudyAttr.SPACE_FINGERPRINT: attrs.get(StudyAttr.SPACE_PATH),
        StudyAttr.DATA_HASH: attrs.get(StudyAttr.DATASET),
    }
    for key in IDENTITY_KEYS:
        if key in attrs and attrs[key] != identity[key]:
            detail = ""
            if key in stored and given and key in given:
                detail = f" (stored: {stored[key]}; given: {given[key]})"
            raise ConfigError(
                f"{where} was run with {key}={attrs[key]!r}, not {identity[key]!r}{detail}; pass --study-name NEW to "
                "start a separate study"
            )


# --------------------------------------------------------------------------------------------- the steps


@dataclass
class RunSummary:
    """What ``run`` did (printed at the end and returned for tests)."""

    study_name: str
    storage: str
    target: int
    finished_before: int
    finished: int
    complete: int
    pruned: int
    failed: int
    wall_seconds: float
    interrupted: bool = False
    recycled: bool = False
    best_number: int | None = None
    best_value: float | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class PreparedRun:
    """A validated run and its study, ready for trials (what :func:`prepare` returns)."""

    settings: RunSettings
    space: Any  # study.search_space.SearchSpace
    data: Any  # study.data.EncodedData
    optuna_study: optuna.Study
    storage: optuna.storages.BaseStorage
    finished_before: int

    @property
    def study_name(self) -> str:
        return self.optuna_study.study_name

    @property
    def multi_objective(self) -> bool:
        return len(self.optuna_study.directions) > 1

    def summary(self, started: float, **flags: Any) -> RunSummary:
        """The study's counts now, as a :class:`RunSummary` (``flags``: interrupted, recycled)."""
        counts = count_states(self.optuna_study)
        return RunSummary(
            study_name=self.study_name,
            storage=mask_url(self.settings.storage),
            target=self.settings.trials,
            finished_before=self.finished_before,
            finished=finished_count(counts),
            complete=counts[TrialState.COMPLETE],
            pruned=counts[TrialState.PRUNED],
            failed=counts[TrialState.FAIL],
            wall_seconds=time.perf_counter() - started,
            **flags,
        )


def run_study(settings: RunSettings, out: Any = None) -> RunSummary:
    """Run (or resume) a study until it holds ``settings.trials`` finished trials: prepare, run trials, finish.

    Validates everything (space, data, storage, identity) before the first trial: a bad input raises a
    :class:`~study.errors.StudyError` and touches no existing study.
    """
    from study.workers import elapsed_before_restart

    out = out or sys.stdout
    run = prepare(settings, out)
    started = time.perf_counter() - elapsed_before_restart()  # a restarted run counts its time before the restart
    summary = run_trials(run, out, started)
    if summary.interrupted or summary.recycled:
        return summary
    return finish(run, out, started)


def prepare(settings: RunSettings, out: Any = None) -> PreparedRun:
    """Validate the run, create the study or check that the stored one is the same, queue baselines, say what runs.

    Imports no TensorFlow (the parent of ``--jobs`` workers prepares while they import it).

    Raises:
        ConfigError: a bad setting, space, dataset or storage, or a stored study of other data, space or objectives.
    """
    from study import data as data_mod
    from study.names import metric_cutoff
    from study.objective import COST_OBJECTIVES, check_rating_head, objective_direction
    from study.search_space import load_space
    from study.workers import sampler_seed

    out = out or sys.stdout
    space = load_space(settings.space)
    objectives = settings.objectives or (settings.metric,)
    try:
        directions = [objective_direction(name) for name in objectives]
    except ValueError as exc:
        raise ConfigError(f"{'--objectives' if settings.objectives else '--metric'}: {exc}") from None
    if settings.trials < 1:
        raise ConfigError(f"--trials: must be >= 1, but got {settings.trials}")
    data = data_mod.load(settings.dataset, settings.protocol)
    for name in objectives:
        k = (metric_cutoff(name) or 0) if name not in COST_OBJECTIVES else 0
        if k >= data.num_items - 1:
            flag = "--objectives" if settings.objectives else "--metric"
            raise ConfigError(
                f"{flag} {name}: the cut-off {k} is not below the {data.num_items - 1} items of {settings.dataset}, "
                "so every model would score 1.0; pick a smaller k"
            )
    check_rating_head(space, data, settings)
    max_epochs = settings.max_epochs or _space_epochs(space)
    multi = len(objectives) > 1
    try:
        sampler = build_sampler(settings.sampler, sampler_seed(settings.seed), multi)
    except ValueError as exc:
        raise ConfigError(f"--sampler {settings.sampler}: {exc}") from None
    try:
        pruner = build_pruner(settings.pruner, max_epochs)
    except ValueError as exc:
        raise ConfigError(f"--pruner {settings.pruner}: {exc}") from None
    pruner_name = settings.pruner if not multi else "none"
    if multi and settings.pruner != "none":
        print(
            f"note: pruning is not available for multi-objective studies in Optuna; --pruner {settings.pruner} is "
            "ignored and every trial runs to its last epoch",
            file=out,
        )
    storage = open_storage(settings.storage, on_stale_trial=retry_stale_trial)
    study_name = settings.study_name or default_study_name(settings.dataset, settings.space)
    identity = {
        StudyAttr.DATASET: settings.dataset,
        StudyAttr.PROTOCOL: data.protocol,
        StudyAttr.SPACE_FINGERPRINT: space.fingerprint(),
        StudyAttr.DATA_HASH: data.data_hash,
        StudyAttr.OBJECTIVES: list(objectives),
    }
    try:
        optuna_study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        existed = True
    except KeyError:
        existed = False
    if existed:
        if not optuna_study.user_attrs and not optuna_study.get_trials(deepcopy=False):
            time.sleep(2.0)  # a study another process created a moment ago gets its attributes next
        given = {StudyAttr.SPACE_FINGERPRINT: space.path, StudyAttr.DATA_HASH: settings.dataset}
        check_identity(optuna_study, identity, settings.storage, given)
        if list(optuna_study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
            raise ConfigError(
                f"study {study_name!r} optimises {[d.name.lower() for d in optuna_study.directions]}; "
                "pass --study-name NEW for other objectives"
            )
    else:
        try:
            optuna_study = optuna.create_study(
                study_name=study_name, storage=storage, sampler=sampler, pruner=pruner, directions=directions
            )
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it a moment ago
            return prepare(settings, out)
        stored = {
            **identity,
            StudyAttr.SPACE: settings.space,
            StudyAttr.SPACE_PATH: space.path,
            StudyAttr.METRIC: settings.metric,
            StudyAttr.SAMPLER: settings.sampler,
            StudyAttr.PRUNER: pruner_name,
            StudyAttr.MAX_EPOCHS: max_epochs,
            StudyAttr.DATA_INFO: data.info,
            StudyAttr.VALIDATION_SAMPLE: settings.validation_rows,
        }
        for key, value in stored.items():
            optuna_study.set_user_attr(key, value)
    settings = _stored_validation_sample(optuna_study, settings, out)
    reaped = reap_dead_local_workers(optuna_study)
    if reaped:
        print(f"trials {reaped} were running in a worker that died; marked FAIL and queued again", file=out)
    if settings.baselines and not optuna_study.user_attrs.get(StudyAttr.BASELINES_ENQUEUED):
        _enqueue_baselines(optuna_study, space, out)
    counts = count_states(optuna_study)
    finished_before = finished_count(counts)
    if existed:
        remaining = max(settings.trials - finished_before, 0)
        print(
            f"resuming study {study_name!r} in {mask_url(settings.storage)}: {finished_before} finished "
            f"({counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
            f"{counts[TrialState.FAIL]} failed); {remaining} to go for --trials {settings.trials}",
            file=out,
        )
    else:
        print(
            f"study {study_name!r} in {mask_url(settings.storage)}: {settings.trials} trials on {settings.dataset} "
            f"({data.protocol} split: {len(data.train)}/{len(data.valid)}/{len(data.test)} rows, "
            f"{data.num_items - 1} items), space {space.path}, sampler {settings.sampler}, pruner {pruner_name}",
            file=out,
        )
    if 0 < settings.validation_sample < len(data.valid):
        print(
            f"each epoch is scored on the same {settings.validation_sample} of the {len(data.valid)} validation rows; "
            "a complete trial's best epoch on all of them (--validation-sample)",
            file=out,
        )
    return PreparedRun(settings, space, data, optuna_study, storage, finished_before)


def _stored_validation_sample(optuna_study: optuna.Study, settings: RunSettings, out: Any) -> RunSettings:
    """``settings`` with the validation sample size the study was created with (0, all rows, for studies made
    before there was one), so every trial of a study is pruned on the same rows."""
    stored = int(optuna_study.user_attrs.get(StudyAttr.VALIDATION_SAMPLE) or 0)
    if settings.validation_sample is not None and settings.validation_sample != stored:
        print(
            f"note: study {optuna_study.study_name!r} was created with --validation-sample {stored}; "
            f"--validation-sample {settings.validation_sample} is ignored so that its trials stay comparable",
            file=out,
        )
    return dataclasses.replace(settings, validation_sample=stored)


def run_trials(run: PreparedRun, out: Any = None, started: float | None = None) -> RunSummary:
    """Start trials until the study holds ``--trials`` finished ones, ``--timeout`` passes, this worker has run its
    ``--recycle-after`` trials, or Ctrl-C / SIGTERM (the running trial is marked FAIL).

    Several processes may run this on one study at once: a :class:`~study.locks.StartLock` makes "count, then start
    a trial" atomic between them, so they never start more than ``--trials`` in all.
    """
    from study.artifacts import with_dashboard
    from study.objective import Objective
    from study.workers import limit_threads, parent_gone, worker_number

    limit_threads()
    from study.train import versions  # TensorFlow is imported here: after limit_threads, before any op runs

    out = out or sys.stdout
    settings, optuna_study = run.settings, run.optuna_study
    started = time.perf_counter() if started is None else started
    progress = Progress(
        settings.trials, run.finished_before, settings.metric, settings.quiet, out, time.perf_counter() - started
    )
    progress.show_bar = worker_number() is None
    objective = Objective(space=run.space, data=run.data, settings=settings, versions=dict(versions()))
    last: dict[str, Any] = {}  # the last trial this process ran (state, why it failed)

    def remember(_: optuna.Study, trial: FrozenTrial) -> None:
        last["state"], last["reason"] = trial.state, trial.user_attrs.get(TrialAttr.FAIL_REASON, "no reason stored")

    objective, callbacks = with_dashboard(objective, [progress.trial_done, remember], settings.storage)
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    signalled: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        # Remembered because TensorFlow or Optuna can swallow the KeyboardInterrupt (or turn it into another error)
        # when it lands inside their code; the loop below then stops anyway.
        signalled.append(signum)
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # Held from counting the trials until the new one is RUNNING in the storage, so workers never start more than
    # --trials between them (see study.locks); released as the objective begins.
    start_lock = StartLock(settings.storage, run.study_name, getattr(run.storage, "engine", None))

    def run_objective(trial: optuna.Trial) -> Any:
        start_lock.release()
        return objective(trial)

    ran = 0  # trials this process started
    failed_in_a_row = 0
    interrupted = recycled = False
    try:
        while True:
            start_lock.acquire()
            counts = count_states(optuna_study)
            finished = finished_count(counts)
            if finished >= settings.trials:
                break
            if deadline is not None and time.monotonic() >= deadline:
                print(f"\n--timeout reached: {finished}/{settings.trials} finished", file=out)
                break
            if finished + counts[TrialState.RUNNING] >= settings.trials:
                # Other workers hold the last trials; wait for them (or for their heartbeat to fail).
                start_lock.release()
                time.sleep(0.5)
                reap_dead_local_workers(optuna_study)
                # A loaded study's storage is Optuna's cache around it; this returns at once without a heartbeat.
                optuna.storages.fail_stale_trials(optuna_study)
                continue
            if parent_gone():  # a --jobs worker whose parent died (where no signal told it): stop as on Ctrl-C
                start_lock.release()
                raise KeyboardInterrupt
            limit = settings.recycle_after if worker_number() else settings.restart_after
            if limit and ran >= limit:
                # A fresh process takes this one's place (a --jobs worker: study.workers.Workers; a single process:
                # exec, see study.workers.restart_in_place): TensorFlow's XLA cache never evicts, so only a new
                # process frees what this one compiled for its trials.
                recycled = True
                start_lock.release()
                break
            ran += 1
            try:
                optuna_study.optimize(
                    run_objective, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=False
                )
            except Exception:
                if not signalled:
                    raise
            finally:
                start_lock.release()  # when the trial never reached the objective (ask failed)
            if signalled:
                raise KeyboardInterrupt
            failed_in_a_row = failed_in_a_row + 1 if last.get("state") == TrialState.FAIL else 0
            if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                # Failed trials do not count towards --trials, so a cause that fails every trial would loop forever.
                raise StudyError(
                    f"{failed_in_a_row} trials in a row failed, the last with: {last['reason']}; the finished trials "
                    f"are saved in {mask_url(settings.storage)}: fix the cause and run the same command to resume"
                )
    except KeyboardInterrupt:
        interrupted = True
        _fail_own_running(optuna_study)
    finally:
        start_lock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        progress.close()
    summary = run.summary(started, interrupted=interrupted, recycled=recycled)
    if recycled and worker_number():
        print(
            f"ran {ran} trials (--recycle-after {settings.recycle_after}); leaving for a fresh process "
            f"({summary.finished}/{settings.trials} finished)",
            file=out,
        )
    elif recycled:
        print(
            f"ran {ran} trials; restarting as a fresh process to free TensorFlow's compiled code "
            f"({summary.finished}/{settings.trials} finished; --recycle-after 0 turns this off)",
            file=out,
        )
    elif interrupted:
        print(
            f"\ninterrupted: {summary.finished}/{settings.trials} trials finished and saved in "
            f"{mask_url(settings.storage)} (the running trial is marked FAIL). To resume, run the same command again.",
            file=out,
        )
    return summary


def finish(run: PreparedRun, out: Any = None, started: float | None = None) -> RunSummary:
    """Summarise the study and, once it holds ``--trials`` finished trials, score its best trial on the test split
    (single objective, unless ``--no-test``). Trains nothing and imports no TensorFlow without the test score."""
    out = out or sys.stdout
    settings = run.settings
    reaped = reap_dead_local_workers(run.optuna_study)  # trials of --jobs workers that were killed
    if reaped:
        print(f"trials {reaped} were running in a worker that died; marked FAIL and queued again", file=out)
    summary = run.summary(time.perf_counter() if started is None else started)
    if not run.multi_objective:
        best = best_trial(run.optuna_study)
        if best is not None:
            summary.best_number, summary.best_value = best.number, best.value
            if settings.test_best and summary.finished >= settings.trials:
                summary.test_metrics = evaluate_best_on_test(run.optuna_study, best, run.data, out)
    print(
        f"done: {summary.finished}/{settings.trials} finished ({summary.complete} complete, {summary.pruned} pruned, "
        f"{summary.failed} failed) in {format_seconds(summary.wall_seconds)}"
        + (
            f"; best trial {summary.best_number}: {settings.metric}={summary.best_value:.4f}"
            if summary.best_value is not None
            else ""
        )
        + (
            f", test {settings.metric}={summary.test_metrics.get(settings.metric, float('nan')):.4f}"
            if summary.test_metrics
            else ""
        ),
        file=out,
    )
    return summary


def evaluate_best_on_test(optuna_study: optuna.Study, best: FrozenTrial, data: Any, out: Any) -> dict[str, float]:
    """Re-train the best trial's config for its best epoch count and score it once on the test split.

    The test split is never used for selection; the metrics are stored on the study (``test_metrics``).
    """
    from study.train import Evaluator, train

    attrs = optuna_study.user_attrs
    if attrs.get(StudyAttr.TEST_TRIAL) == best.number:
        return dict(attrs.get(StudyAttr.TEST_METRICS, {}))
    cfg = retrain_config(best)
    print(
        f"re-training best trial {best.number} for {cfg.train.epochs} epochs to score it on the test split…", file=out
    )
    model, _ = train(cfg, data)
    metrics = Evaluator(model).evaluate(data.test, cfg.train.ks)
    metrics = {k: round(v, 6) for k, v in metrics.items()}
    optuna_study.set_user_attr(StudyAttr.TEST_METRICS, metrics)
    optuna_study.set_user_attr(StudyAttr.TEST_TRIAL, best.number)
    optuna_study.set_user_attr(StudyAttr.TEST_PROTOCOL, data.protocol)
    return metrics


def _space_epochs(space: Any) -> int:
    """The most epochs a trial of this space can run (the pruner's max resource)."""
    for entry in space.entries:
        if entry.name == "epochs":
            if entry.distribution is None:
                return int(entry.value)
            return int(getattr(entry.distribution, "high", max(getattr(entry.distribution, "choices", [1]))))
    return TrialConfig().train.epochs


def _enqueue_baselines(optuna_study: optuna.Study, space: Any, out: Any) -> None:
    from study.search_space import baseline_params

    admitted, rejected = baseline_params(space)
    for params in admitted:
        label = params.get("layers") or "-".join(str(params[k]) for k in sorted(params) if k.startswith("units_"))
        optuna_study.enqueue_trial(params, user_attrs={TrialAttr.BASELINE: f"tutorial {label}"})
    optuna_study.set_user_attr(StudyAttr.BASELINES_ENQUEUED, len(admitted))
    print(f"baselines: enqueued {len(admitted)} tutorial config(s) as the first trials", file=out)
    for reason in rejected:
        print(f"baselines: not admitted by the space: {reason}", file=out)
