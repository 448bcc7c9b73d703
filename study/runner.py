"""Create/load a study, samplers, pruners, storage, resume, and the run loop.

``--trials N`` is a target of *finished* trials (complete + pruned) in the study: running the same command again
after a crash or Ctrl-C finishes the remainder. Failed trials are kept and shown but do not count; a trial whose
worker died (SIGKILL, OOM, power loss) is marked FAIL — at once when the worker was a process on this machine, else
through the storage heartbeat — and its parameters are enqueued again.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.config import RunSettings, TrialConfig
from study.errors import ConfigError, StudyError

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module=r"optuna\..*")
optuna.logging.set_verbosity(optuna.logging.WARNING)

HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 30
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

SAMPLERS: dict[str, Callable[[int | None, bool], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed, multi: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True),
    "random": lambda seed, multi: optuna.samplers.RandomSampler(seed=seed),
    "cmaes": lambda seed, multi: _cmaes_sampler(seed, multi),
    "gp": lambda seed, multi: _gp_sampler(seed),
    "qmc": lambda seed, multi: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
    "nsga2": lambda seed, multi: optuna.samplers.NSGAIISampler(seed=seed),
}

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


# --------------------------------------------------------------------------------------------- storage


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print or store)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :]
    return None if path in ("", ":memory:") else Path(path)


def open_storage(url: str, *, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """Open an Optuna storage.

    * ``sqlite:///PATH``: WAL journal + 60 s busy timeout, so the dashboard or other workers reading/writing at the
      same time do not cause "database is locked".
    * ``postgresql://…`` / ``mysql://…``: SQLAlchemy with pre-ping; heartbeat for stale-trial detection.
    * ``journal:PATH``: Optuna's JournalStorage on a file (lock-file based; safe for many local writers).

    Raises:
        ConfigError: unknown scheme, missing driver or unreachable server (password masked).
    """
    shown = mask_url(url)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = url[len("journal:") :]
        if not path:
            raise ConfigError(f"--storage {shown}: journal needs a file path, e.g. journal:study.log")
        try:
            return JournalStorage(JournalFileBackend(path))
        except OSError as exc:
            raise ConfigError(f"--storage {shown}: cannot open journal file ({exc.strerror})") from None
    scheme = url.split(":", 1)[0].split("+", 1)[0] if ":" in url else ""
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise ConfigError(
            f"--storage {shown}: unknown storage scheme {scheme!r}; use sqlite:///PATH, postgresql://USER@HOST/DB, "
            "mysql+pymysql://USER@HOST/DB or journal:PATH"
        )
    kwargs: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    path = _sqlite_path(url)
    if scheme == "sqlite":
        if path is not None:
            if path.parent and not path.parent.exists():
                raise ConfigError(f"--storage {shown}: folder {path.parent} does not exist; create it first")
            _enable_wal(path)
        engine["connect_args"] = {"timeout": 60}
    else:
        engine["pool_pre_ping"] = True
        if scheme in ("postgresql", "postgres"):
            engine["connect_args"] = {"connect_timeout": 10}
        else:
            engine["connect_args"] = {"connect_timeout": 10}
    if heartbeat:
        kwargs.update(
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
            heartbeat_stale_trial_callback=_retry_failed_trial,
        )
    engine_url = _with_installed_driver(url, scheme)
    try:
        storage = optuna.storages.RDBStorage(engine_url, engine_kwargs=engine, **kwargs)
    except ImportError:  # Optuna turns the driver's ModuleNotFoundError into an ImportError
        extra = "postgres" if scheme.startswith("postgres") else "mysql"
        raise ConfigError(
            f"--storage {shown}: the database driver is not installed; pip install 'tower-study[{extra}]'"
        ) from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError, ArgumentError, …
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.replace(engine_url, shown).replace(url, shown)
        raise ConfigError(f"--storage {shown}: cannot open storage ({mask_url(reason)[:200]})") from None
    if scheme == "sqlite":
        _serialize_sqlite_transactions(storage.engine)
    return storage


# Drivers the extras install, in order of preference, for a URL that names none. SQLAlchemy's own default for
# ``postgresql://`` is psycopg 3 since 2.1 (``mysql://``: mysqlclient), which ``tower-study[postgres]`` does not install.
_DRIVERS = {"postgresql": ("psycopg2", "psycopg"), "mysql": ("pymysql", "MySQLdb")}


def _with_installed_driver(url: str, scheme: str) -> str:
    """``postgresql://…`` (or ``postgres://…``) → ``postgresql+psycopg2://…`` when psycopg2 is the installed driver."""
    import importlib.util

    head, sep, rest = url.partition("://")
    if not sep or "+" in head:
        return url
    dialect = "postgresql" if scheme in ("postgresql", "postgres") else scheme
    for module in _DRIVERS.get(dialect, ()):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}+{module.lower()}://{rest}"
    return url


def _serialize_sqlite_transactions(engine: Any) -> None:
    """Make every transaction on a SQLite storage ``BEGIN IMMEDIATE`` (SQLAlchemy's pysqlite recipe).

    pysqlite opens a transaction only at the first write, so Optuna's read-check-write steps (claiming an enqueued
    trial WAITING → RUNNING, failing a RUNNING trial) are not atomic across processes: two workers can both claim the
    same enqueued retry. With the write lock taken at BEGIN, the read and the write happen under one lock (other
    workers wait up to the busy timeout; transactions are a few milliseconds).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not pysqlite, emits BEGIN

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna checked the schema predate the hooks


def _enable_wal(path: Path) -> None:
    try:
        with sqlite3.connect(str(path), timeout=60) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"--storage sqlite:///{path}: not a usable SQLite file ({exc})") from None


def _retry_failed_trial(optuna_study: optuna.Study, trial: FrozenTrial) -> None:
    """Heartbeat callback: a trial whose worker stopped beating is FAIL; enqueue its params again."""
    _enqueue_retry(optuna_study, trial, "worker stopped sending heartbeats (killed or lost)")


def _enqueue_retry(optuna_study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
    try:
        optuna_study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # already FAIL (heartbeat path, or reaped below): Optuna takes no attrs on a finished trial
    retried = trial.user_attrs.get("retry_of", trial.number)
    optuna_study.enqueue_trial(
        trial.params, user_attrs={"retry_of": retried, "retried_from": trial.number}, skip_if_exists=False
    )


def reap_dead_local_workers(optuna_study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose worker was a process on this host that no longer exists as FAIL, and retry them.

    Returns:
        The numbers of the trials marked FAIL.
    """
    import socket

    host = socket.gethostname()
    reaped = []
    for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        w_host, _, pid = worker.rpartition(":")
        if w_host != host or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        reason = f"worker {worker} died during the trial"
        try:
            # The reason first: once the trial is FAIL, Optuna refuses to set its attrs (UpdateFinishedTrialError).
            optuna_study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            optuna_study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except Exception:  # another worker got there first
            continue
        _enqueue_retry(optuna_study, trial, reason)
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


# --------------------------------------------------------------------------------------------- study identity


def default_study_name(dataset: str, space: str) -> str:
    """``<dataset>-<space>`` with anything but letters, digits, ``._-`` turned into ``_``."""
    space_name = Path(space).stem if ("/" in space or space.endswith((".yaml", ".yml"))) else space
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset}-{space_name}").strip("_")


IDENTITY_KEYS = ("dataset", "protocol", "space_fingerprint", "data_hash", "objectives")


def check_identity(optuna_study: optuna.Study, identity: dict[str, Any], storage_url: str) -> None:
    """Refuse to continue a study that was run on other data, another split or another space.

    Raises:
        ConfigError: naming the first difference and how to start a separate study.
    """
    attrs = optuna_study.user_attrs
    for key in IDENTITY_KEYS:
        if key in attrs and attrs[key] != identity[key]:
            raise ConfigError(
                f"study {optuna_study.study_name!r} in {mask_url(storage_url)} was run with {key}={attrs[key]!r}, "
                f"not {identity[key]!r}; pass --study-name NEW to start a separate study"
            )


def load_study_data(optuna_study: optuna.Study) -> Any:
    """The ``EncodedData`` a study was run on (its recorded dataset and protocol), checked against its data hash.

    Raises:
        ConfigError: the study records no dataset (not made by ``python -m study run``) or the data changed since.
    """
    from study import data as data_mod

    attrs = optuna_study.user_attrs
    name = optuna_study.study_name
    if not attrs.get("dataset"):
        raise ConfigError(f"study {name!r} does not record its dataset; was it created by `python -m study run`?")
    data = data_mod.load(attrs["dataset"], attrs.get("protocol", "random"))
    if attrs.get("data_hash") and data.data_hash != attrs["data_hash"]:
        raise ConfigError(
            f"the data of {attrs['dataset']} changed since study {name!r} ran (hash {data.data_hash}, the study "
            f"recorded {attrs['data_hash']}), so its splits are not the ones the study used; re-run the study"
        )
    return data


# --------------------------------------------------------------------------------------------- run


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


def count_states(optuna_study: optuna.Study) -> dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for trial in optuna_study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def format_params(params: dict[str, Any], limit: int = 6) -> str:
    parts = []
    for key, value in list(params.items())[:limit]:
        parts.append(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts) + (" …" if len(params) > limit else "")


class Progress:
    """Progress bar (finished/target, best so far, ETA) and one line per finished trial."""

    def __init__(self, target: int, finished: int, metric: str, quiet: bool, stream: Any = None) -> None:
        self.target = target
        self.start_finished = finished
        self.metric = metric
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.show_bar = True

    def trial_done(self, optuna_study: optuna.Study, trial: FrozenTrial) -> None:
        counts = count_states(optuna_study)
        finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if not self.quiet:
            value = "" if trial.values is None else " ".join(f"{v:.4f}" for v in trial.values)
            if trial.state == TrialState.PRUNED:
                value = f"(best {trial.user_attrs.get('valid_metrics', {}).get(self.metric, float('nan')):.4f})"
            reason = trial.user_attrs.get("fail_reason", "")
            line = (
                f"trial {trial.number:>4} {trial.state.name:<8} {value:<18} "
                f"epochs={trial.user_attrs.get('epochs_run', 0):<3} {trial.user_attrs.get('seconds', 0):6.1f}s  "
                f"{format_params(trial.params)}"
                + (f"  reason: {reason}" if trial.state == TrialState.FAIL and reason else "")
            )
            self._clear()
            print(line, file=self.stream, flush=True)
        self.bar(optuna_study, finished)

    def bar(self, optuna_study: optuna.Study, finished: int) -> None:
        if not self.show_bar:
            return
        done_here = finished - self.start_finished
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done_here * (self.target - finished) if done_here > 0 else float("nan")
        best = _best_value(optuna_study)
        best_text = (
            f"Pareto front: {len(optuna_study.best_trials)} trials"
            if len(optuna_study.directions) > 1
            else f"best {self.metric}={'-' if best is None else f'{best:.4f}'}"
        )
        width = 30
        fill = int(width * min(finished, self.target) / max(self.target, 1))
        text = (
            f"[{'#' * fill}{'.' * (width - fill)}] {finished}/{self.target} finished"
            f"  {best_text}"
            f"  elapsed {_fmt_seconds(elapsed)}  ETA {_fmt_seconds(eta)}"
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
    if len(optuna_study.directions) > 1:
        return None
    try:
        return optuna_study.best_value
    except ValueError:
        return None


def _fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_study(settings: RunSettings, out: Any = None, *, mode: str = "all", started: float | None = None) -> RunSummary:
    """Run (or resume) a study until it holds ``settings.trials`` finished trials.

    Validates everything (space, data, storage, identity) before the first trial: a bad input raises a
    :class:`StudyError` and touches no existing study.

    Args:
        settings: the run settings.
        out: where progress goes (default stdout).
        mode: ``all``; ``prepare`` (validate, create or check the study, enqueue baselines, then return: the parent
            of ``--jobs`` workers); ``finish`` (run no trial; summarise and score the best trial on test).
        started: ``time.perf_counter()`` when the run began, for the wall time reported (default: now, after the
            checks; the ``--jobs`` parent passes its own start to ``finish``).
    """
    from study import data as data_mod
    from study.locks import StartLock
    from study.workers import limit_threads, sampler_seed, worker_number

    limit_threads()
    from study.objective import Objective, objective_direction
    from study.search_space import load_space

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
    if multi and settings.pruner != "none":
        print(
            f"note: pruning is not available for multi-objective studies in Optuna; --pruner {settings.pruner} is "
            "ignored and every trial runs to its last epoch",
            file=out,
        )
    storage = open_storage(settings.storage)
    study_name = settings.study_name or default_study_name(settings.dataset, settings.space)
    identity = {
        "dataset": settings.dataset,
        "protocol": data.protocol,
        "space_fingerprint": space.fingerprint(),
        "data_hash": data.data_hash,
        "objectives": list(objectives),
    }
    try:
        optuna_study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        existed = True
    except KeyError:
        existed = False
    if existed:
        check_identity(optuna_study, identity, settings.storage)
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
            return run_study(settings, out, mode=mode)
        for key, value in identity.items():
            optuna_study.set_user_attr(key, value)
        optuna_study.set_user_attr("space", settings.space)
        optuna_study.set_user_attr("space_path", space.path)
        optuna_study.set_user_attr("metric", settings.metric)
        optuna_study.set_user_attr("sampler", settings.sampler)
        optuna_study.set_user_attr("pruner", settings.pruner if not multi else "none")
        optuna_study.set_user_attr("max_epochs", max_epochs)
        optuna_study.set_user_attr("data_info", data.info)
    reaped = reap_dead_local_workers(optuna_study)
    if reaped:
        print(f"trials {reaped} were running in a worker that died; marked FAIL and queued again", file=out)
    if settings.baselines and not optuna_study.user_attrs.get("baselines_enqueued"):
        _enqueue_baselines(optuna_study, space, out)
    counts = count_states(optuna_study)
    finished_before = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
    if mode == "finish":
        pass
    elif existed:
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
            f"{data.num_items - 1} items), space {space.path}, sampler {settings.sampler}, "
            f"pruner {settings.pruner if not multi else 'none'}",
            file=out,
        )
    if mode == "prepare":
        return RunSummary(
            study_name,
            mask_url(settings.storage),
            settings.trials,
            finished_before,
            finished_before,
            counts[TrialState.COMPLETE],
            counts[TrialState.PRUNED],
            counts[TrialState.FAIL],
            0.0,
        )
    progress = Progress(settings.trials, finished_before, settings.metric, settings.quiet, out)
    if mode == "all":  # TensorFlow is imported here at the latest: the --jobs parent (prepare, finish) never trains
        from study.dashboard import with_dashboard  # per-trial artifacts + study note for optuna-dashboard
        from study.train import versions

        objective = Objective(space=space, data=data, settings=settings, versions=dict(versions()))
        objective, callbacks = with_dashboard(objective, [progress.trial_done], settings.storage)
    progress.show_bar = worker_number() is None
    start = time.perf_counter() if started is None else started
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    interrupted = False
    signalled: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        # Remembered because TensorFlow or Optuna can swallow the KeyboardInterrupt (or turn it into another error)
        # when it lands inside their code; the loop below then stops anyway.
        signalled.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)} if _main_thread() else {}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # Held from counting the trials until the new one is RUNNING in the storage, so workers never start more than
    # --trials between them (see study.locks); released as the objective begins.
    start_lock = StartLock(settings.storage, study_name, getattr(storage, "engine", None))

    def run_objective(trial: optuna.Trial) -> Any:
        start_lock.release()
        return objective(trial)

    ran = 0  # trials this process started
    recycled = False
    try:
        while mode == "all":
            start_lock.acquire()
            counts = count_states(optuna_study)
            finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
            running = counts[TrialState.RUNNING]
            if finished >= settings.trials:
                break
            if deadline is not None and time.monotonic() >= deadline:
                print(f"\n--timeout reached: {finished}/{settings.trials} finished", file=out)
                break
            if finished + running >= settings.trials:
                # Other workers hold the last trials; wait for them (or for their heartbeat to fail).
                start_lock.release()
                time.sleep(0.5)
                reap_dead_local_workers(optuna_study)
                _fail_stale(optuna_study)
                continue
            if settings.recycle_after and worker_number() and ran >= settings.recycle_after:
                # A fresh process takes this worker's place (study.workers.Workers): TensorFlow's XLA cache never
                # evicts, so only leaving frees what this process compiled for its trials.
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
    except KeyboardInterrupt:
        interrupted = True
        _fail_own_running(optuna_study)
    finally:
        start_lock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        progress.close()
    counts = count_states(optuna_study)
    summary = RunSummary(
        study_name=study_name,
        storage=mask_url(settings.storage),
        target=settings.trials,
        finished_before=finished_before,
        finished=counts[TrialState.COMPLETE] + counts[TrialState.PRUNED],
        complete=counts[TrialState.COMPLETE],
        pruned=counts[TrialState.PRUNED],
        failed=counts[TrialState.FAIL],
        wall_seconds=time.perf_counter() - start,
        interrupted=interrupted,
        recycled=recycled,
    )
    if recycled:
        print(
            f"ran {ran} trials (--recycle-after {settings.recycle_after}); leaving for a fresh process "
            f"({summary.finished}/{settings.trials} finished)",
            file=out,
        )
        return summary
    if interrupted:
        print(
            f"\ninterrupted: {summary.finished}/{settings.trials} trials finished and saved in "
            f"{mask_url(settings.storage)} (the running trial is marked FAIL). To resume, run the same command again.",
            file=out,
        )
        return summary
    if not multi:
        best = _best_trial(optuna_study)
        if best is not None:
            summary.best_number, summary.best_value = best.number, best.value
            if settings.test_best and summary.finished >= settings.trials:
                summary.test_metrics = evaluate_best_on_test(optuna_study, best, space, data, settings, out)
    print(
        f"done: {summary.finished}/{settings.trials} finished ({summary.complete} complete, {summary.pruned} pruned, "
        f"{summary.failed} failed) in {_fmt_seconds(summary.wall_seconds)}"
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


def _fail_own_running(optuna_study: optuna.Study) -> None:
    """After Ctrl-C: a trial of this process still RUNNING (interrupted while Optuna was recording it) becomes FAIL."""
    from study.objective import worker_id

    for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("worker") != worker_id():
            continue
        try:
            optuna_study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "interrupted")
            optuna_study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except Exception:  # finished in the meantime
            pass


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _fail_stale(optuna_study: optuna.Study) -> None:
    # No isinstance(…, RDBStorage) check: a loaded study's storage is Optuna's _CachedStorage wrapping it, and
    # fail_stale_trials itself returns at once for a storage without heartbeat.
    optuna.storages.fail_stale_trials(optuna_study)


def _space_epochs(space: Any) -> int:
    """The most epochs a trial of this space can run (the pruner's max resource)."""
    for entry in space.entries:
        if entry.name == "epochs":
            if entry.distribution is None:
                return int(entry.value)
            return int(getattr(entry.distribution, "high", max(getattr(entry.distribution, "choices", [1]))))
    return TrialConfig().train.epochs


def _best_trial(optuna_study: optuna.Study) -> FrozenTrial | None:
    try:
        return optuna_study.best_trial
    except ValueError:
        return None


def _enqueue_baselines(optuna_study: optuna.Study, space: Any, out: Any) -> None:
    from study.search_space import baseline_params

    admitted, rejected = baseline_params(space)
    for params in admitted:
        label = params.get("layers") or "-".join(str(params[k]) for k in sorted(params) if k.startswith("units_"))
        optuna_study.enqueue_trial(params, user_attrs={"baseline": f"tutorial {label}"})
    optuna_study.set_user_attr("baselines_enqueued", len(admitted))
    print(f"baselines: enqueued {len(admitted)} tutorial config(s) as the first trials", file=out)
    for reason in rejected:
        print(f"baselines: not admitted by the space: {reason}", file=out)


def trial_config(optuna_study: optuna.Study, trial: FrozenTrial) -> TrialConfig:
    """The exact config a trial trained (stored as a user attr)."""
    stored = trial.user_attrs.get("config")
    if stored is None:
        raise StudyError(f"trial {trial.number} has no stored config")
    return TrialConfig.from_dict(stored, source=f"trial {trial.number}")


def evaluate_best_on_test(
    optuna_study: optuna.Study, best: FrozenTrial, space: Any, data: Any, settings: RunSettings, out: Any
) -> dict[str, float]:
    """Re-train the best trial's config for its best epoch count and score it once on the test split.

    The test split is never used for selection; the metrics are stored on the study (``test_metrics``).
    """
    from study.train import Evaluator, train

    if optuna_study.user_attrs.get("test_trial") == best.number:
        return dict(optuna_study.user_attrs.get("test_metrics", {}))
    cfg = trial_config(optuna_study, best)
    epochs = int(best.user_attrs.get("best_epoch", cfg.train.epochs))
    cfg = cfg.replace(train={"epochs": epochs, "eval_every": epochs, "patience": 0})
    print(f"re-training best trial {best.number} for {epochs} epochs to score it on the test split…", file=out)
    model, _ = train(cfg, data)
    metrics = Evaluator(model).evaluate(data.test, cfg.train.ks)
    metrics = {k: round(v, 6) for k, v in metrics.items()}
    optuna_study.set_user_attr("test_metrics", metrics)
    optuna_study.set_user_attr("test_trial", best.number)
    optuna_study.set_user_attr("test_protocol", data.protocol)
    return metrics
