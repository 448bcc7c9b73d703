"""Command line: ``python -m study <command>``.

Exit codes: 0 success, 1 bad input or a failed command (one-line ``error:`` message; ``--debug`` shows the
traceback), 2 usage error (argparse), 130 interrupted by Ctrl-C; 75 only from a ``--jobs`` worker that ran its
``--recycle-after`` trials (its parent starts a fresh one in its place).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import study  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from study.config import DEFAULT_VALIDATION_SAMPLE
from study.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, ConfigError, StudyError
from study.storage import DEFAULT_STORAGE
from study.workers import (
    DEFAULT_RECYCLE_AFTER,
    EXIT_RECYCLE,
    die_with_parent,
    restart_after_default,
    worker_number,
)

# Commands that train (and so import TensorFlow up front); the others only read a storage or a file.
TRAINING_COMMANDS = ("train", "run", "evaluate", "export", "recommend")
# run --jobs N above this many processes per core is refused; above one per core, warned about.
MAX_JOBS_PER_CORE = 4
# An error line longer than this is cut (a value quoted in it can be megabytes, e.g. a YAML of nested anchors).
MAX_ERROR_CHARS = 1000


def shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with "…" (the start names the file/field and the fix)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1.5h`` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text or "")
    if not match:
        raise ConfigError(f"--timeout: expected a duration like 90s, 30m or 2h, but got {text!r}")
    value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if value <= 0:
        raise ConfigError(f"--timeout: must be > 0, but got {text!r}")
    return value


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="embedded (default), grouplens:PATH, tfds:NAME or csv:PATH")
    p.add_argument("--protocol", default=None, help="split protocol: random (default), temporal or tutorial")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="print less")


# --------------------------------------------------------------------------------------------- train


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train one config and print a line per epoch (try a config before a search)")
    _add_data_args(p)
    p.add_argument("--config", help="YAML file with fixed model:/train: values (the search-space schema)")
    p.add_argument("--study", dest="study_name", help="re-train a stored trial of this study (with --trial)")
    p.add_argument("--trial", help="with --study: the trial number, or 'best'")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"with --study: its storage (default {DEFAULT_STORAGE})")
    p.add_argument("--layers", help="tower widths, e.g. 64,32 (the last is the output embedding size)")
    p.add_argument("--activation")
    p.add_argument("--body", help="mlp or deep_cross")
    p.add_argument("--embedding", help="embedding technique, e.g. full")
    p.add_argument("--embedding-dim", type=int)
    p.add_argument("--optimizer")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--metric", help="metric picking the best epoch (default top100)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-jit", action="store_true", help="do not compile the epoch with XLA")
    p.add_argument("--test", action="store_true", help="also score the final model on the test split")
    _add_common(p)


def base_train_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """The config ``train`` starts from, before its flags, and the study it comes from (or None).

    ``--study NAME --trial N`` takes the trial's stored config, every field of it, and the study's data; else
    ``--config FILE``; else the defaults.
    """
    from study.config import TrialConfig

    if args.trial is not None and args.study_name is None:
        raise ConfigError("--trial: needs --study NAME (the study the trial belongs to)")
    if args.study_name is None:
        if args.config:
            from study.search_space import load_config_file

            return load_config_file(args.config), None
        return TrialConfig(), None
    from study.results import open_study, resolve_trial, trial_config

    if args.trial is None:
        raise ConfigError("--study: needs --trial N (or --trial best): which trial to re-train")
    for flag, value in (("--config", args.config), ("--dataset", args.dataset), ("--protocol", args.protocol)):
        if value is not None:
            raise ConfigError(f"{flag}: not with --study, which re-trains on the study's own data and config")
    optuna_study = open_study(args.storage, args.study_name)
    return trial_config(resolve_trial(optuna_study, args.trial, complete=False)), optuna_study


def cmd_train(args: argparse.Namespace) -> int:
    from study.config import TrialConfig

    cfg, optuna_study = base_train_config(args)
    model_over = {
        k: v
        for k, v in {
            "layers": args.layers,
            "activation": args.activation,
            "body": args.body,
            "embedding": args.embedding,
            "embedding_dim": args.embedding_dim,
        }.items()
        if v is not None
    }
    train_over = {
        k: v
        for k, v in {
            "optimizer": args.optimizer,
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "eval_every": args.eval_every,
            "metric": args.metric,
            "seed": args.seed,
        }.items()
        if v is not None
    }
    if args.no_jit:
        train_over["jit"] = False
    merged = cfg.to_dict()
    merged["model"].update(model_over)
    merged["train"].update(train_over)
    cfg = TrialConfig.from_dict(merged, source="flags")

    from study import data as data_mod
    from study.train import Evaluator, Trainer, build_model, validate_config

    validate_config(cfg)
    if optuna_study is not None:
        from study.results import load_study_data

        data = load_study_data(optuna_study)
    else:
        data = data_mod.load(args.dataset or "embedded", args.protocol or "random")
    if cfg.model.rating_head and not data.has_ratings:
        raise ConfigError(
            f"{args.config or 'model.rating_head'}: the rating head trains on ratings, but {data.dataset} has no "
            "rating column; add a 'rating' column to the data, or set rating_head: false"
        )
    print(
        f"data: {data.dataset} ({data.protocol} split) train={len(data.train)} valid={len(data.valid)} "
        f"test={len(data.test)} users={data.num_users - 1} items={data.num_items - 1}"
    )
    shown_model = {
        k: v
        for k, v in cfg.to_dict()["model"].items()
        if k in ("layers", "activation", "body", "embedding", "embedding_dim")
    }
    shown_train = {
        k: v
        for k, v in cfg.to_dict()["train"].items()
        if k in ("optimizer", "learning_rate", "batch_size", "epochs", "seed")
    }
    print("config: " + " ".join(f"{k}={v}" for k, v in {**shown_model, **shown_train}.items()))
    model = build_model(cfg, data)
    counts = model.param_counts()
    print(f"params: {counts['total_params']:,} total, {counts['embedding_params']:,} in embedding tables")
    metric = cfg.train.metric
    shown = [f"top{k}" for k in cfg.train.ks] + (["rmse"] if cfg.model.rating_head else [])

    def on_epoch(r: Any) -> None:
        line = f"epoch {r.epoch:>3}/{cfg.train.epochs}  loss {r.loss:10.2f}  train {r.train_seconds:5.2f}s"
        if r.metrics:
            line += "  valid " + " ".join(f"{m}={r.metrics[m]:.4f}" for m in shown if m in r.metrics)
            line += f"  (eval {r.eval_seconds:.2f}s)"
        print(line, flush=True)

    trainer = Trainer(model, data, cfg.train)
    result = trainer.fit(callback=on_epoch, metric=metric)
    print(
        f"best epoch {result.best_epoch}: valid {metric}={result.best_value:.4f}; "
        f"{result.seconds_per_epoch:.2f} s/epoch (median), {result.seconds:.1f} s in all"
    )
    if args.test:
        metrics = Evaluator(model).evaluate(data.test, cfg.train.ks)
        print("test (final weights): " + " ".join(f"{m}={metrics[m]:.4f}" for m in shown))
    return EXIT_OK


# --------------------------------------------------------------------------------------------- run


def _run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run (or resume) a hyperparameter study")
    p.add_argument("--trials", type=int, default=100, help="target number of finished trials (default 100)")
    p.add_argument("--timeout", help="start no new trial after this long, e.g. 30m")
    p.add_argument(
        "--trial-timeout", help="fail a trial still training after this long (checked after each epoch), e.g. 10m"
    )
    p.add_argument("--space", default="default", help="search space name in search_spaces/ or a YAML path")
    _add_data_args(p)
    p.add_argument("--storage", default="sqlite:///study.db", help="Optuna storage URL (default sqlite:///study.db)")
    p.add_argument("--study-name", help="default: <dataset>-<space>")
    p.add_argument("--sampler", default=None, help="tpe (default), random, cmaes, gp, qmc, nsga2")
    p.add_argument("--pruner", default=None, help="hyperband (default), median, successive-halving, none")
    p.add_argument("--max-epochs", type=int, help="cap every trial's epochs")
    p.add_argument("--eval-every", type=int, help="evaluate every N epochs")
    p.add_argument("--metric", default=None, help="validation metric to maximise (default top100)")
    p.add_argument("--patience", type=int, help="stop a trial after N evaluations without improvement")
    p.add_argument(
        "--validation-sample",
        type=int,
        metavar="ROWS",
        help=f"score each epoch on this many validation rows (default {DEFAULT_VALIDATION_SAMPLE}, 0 = all); "
        "complete trials are scored on all",
    )
    p.add_argument("--seed", type=int, help="seed the sampler and training: same seed, same sampled params")
    p.add_argument("--baselines", action="store_true", help="enqueue the TFRS tutorial's configs as first trials")
    p.add_argument("--objectives", help="comma-separated, e.g. top100,embedding_bytes (multi-objective)")
    p.add_argument("--max-embedding-mb", type=float, help="prune configs whose embedding tables exceed this size")
    p.add_argument("--no-test", action="store_true", help="skip re-training the best trial on the test split")
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine sharing the study")
    p.add_argument(
        "--recycle-after",
        type=int,
        metavar="K",
        help=f"replace a worker process by a fresh one after K trials, freeing what TensorFlow keeps of each trial "
        f"(0 = never; default {DEFAULT_RECYCLE_AFTER} with --jobs N > 1, 0 with --jobs 1, where K > 0 runs the "
        "trials in one worker process)",
    )
    _add_common(p)


def run_settings_from_args(args: argparse.Namespace) -> Any:
    from study.config import RunSettings
    from study.search_space import load_space

    space = load_space(args.space)
    file_run = dict(space.run)
    defaults = RunSettings()

    def pick(name: str, cli_value: Any) -> Any:
        if cli_value is not None:
            return cli_value
        return file_run.get(name, getattr(defaults, name))

    if args.max_epochs is not None and args.max_epochs < 1:
        raise ConfigError(f"--max-epochs: must be >= 1, but got {args.max_epochs}")
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials: must be >= 1, but got {args.trials}")
    if args.eval_every is not None and args.eval_every < 1:
        raise ConfigError(f"--eval-every: must be >= 1, but got {args.eval_every}")
    if args.patience is not None and args.patience < 0:
        raise ConfigError(f"--patience: must be >= 0, but got {args.patience}")
    if args.validation_sample is not None and args.validation_sample < 0:
        raise ConfigError(f"--validation-sample: must be >= 0 (0 = all rows), but got {args.validation_sample}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs: must be >= 1, but got {args.jobs}")
    cores = os.cpu_count() or 1
    if args.jobs > MAX_JOBS_PER_CORE * cores:
        raise ConfigError(
            f"--jobs: {args.jobs} processes on {cores} cores would spend their time competing; use at most "
            f"{MAX_JOBS_PER_CORE * cores} here (one per core is best), or more machines on one PostgreSQL storage"
        )
    if args.max_embedding_mb is not None and not args.max_embedding_mb > 0:
        raise ConfigError(f"--max-embedding-mb: must be > 0, but got {args.max_embedding_mb}")
    if args.recycle_after is not None and args.recycle_after < 0:
        raise ConfigError(f"--recycle-after: must be >= 0 (0 = never), but got {args.recycle_after}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed: must be in [0, 2**32 - 1], but got {args.seed}")
    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip()) if args.objectives else ()
    repeated = sorted({o for o in objectives if objectives.count(o) > 1})
    if repeated:
        raise ConfigError(f"--objectives: each objective once, but {', '.join(repeated)} is given twice")
    try:
        trial_timeout = parse_duration(args.trial_timeout) if args.trial_timeout else None
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("--timeout", "--trial-timeout", 1)) from None
    return RunSettings(
        space=args.space,
        dataset=pick("dataset", args.dataset),
        protocol=pick("protocol", args.protocol),
        storage=args.storage,
        study_name=args.study_name,
        sampler=pick("sampler", args.sampler),
        pruner=pick("pruner", args.pruner),
        trials=args.trials,
        timeout=parse_duration(args.timeout) if args.timeout else None,
        trial_timeout=trial_timeout,
        max_epochs=args.max_epochs,
        eval_every=pick("eval_every", args.eval_every)
        if (args.eval_every is not None or "eval_every" in file_run)
        else None,
        metric=pick("metric", args.metric),
        seed=args.seed,
        baselines=args.baselines,
        objectives=objectives,
        max_embedding_mb=args.max_embedding_mb,
        patience=args.patience,
        validation_sample=args.validation_sample,
        test_best=not args.no_test,
        quiet=args.quiet,
        jobs=args.jobs,
        recycle_after=recycle_after(args),
        restart_after=restart_after(args),
    )


def recycle_after(args: argparse.Namespace) -> int:
    """``--recycle-after`` as given, else its default: DEFAULT_RECYCLE_AFTER with ``--jobs N > 1``, else 0."""
    if args.recycle_after is not None:
        return args.recycle_after
    return DEFAULT_RECYCLE_AFTER if args.jobs > 1 else 0


def restart_after(args: argparse.Namespace) -> int:
    """Trials after which a single-process run restarts itself (exec): the default with ``--jobs 1`` and no
    ``--recycle-after``; 0 otherwise (workers recycle instead) and in --jobs workers."""
    if args.jobs != 1 or args.recycle_after is not None or worker_number() is not None:
        return 0
    return restart_after_default()


def starts_workers(args: argparse.Namespace) -> bool:
    """Whether this ``run`` is the parent of worker processes (``--jobs N > 1``, or ``--recycle-after K > 0``)."""
    return worker_number() is None and args.jobs >= 1 and (args.jobs > 1 or recycle_after(args) > 0)


def cmd_run(args: argparse.Namespace) -> int:
    from study.workers import wait_for_parent

    if starts_workers(args):
        return _run_jobs(args)
    die_with_parent()  # a --jobs worker ends with its parent
    # A bad flag or space is reported before TensorFlow loads (seconds); a waiting worker reads them in prefetch.
    settings = run_settings_from_args(args) if worker_number() is None else None
    if not args.debug:
        import_tensorflow_quietly()

    def prefetch() -> None:  # a waiting --jobs worker loads the data while its parent validates the run
        from study import data

        settings = run_settings_from_args(args)
        data.load(settings.dataset, settings.protocol)

    # A --jobs worker whose parent stopped the run (bad input, Ctrl-C) before it began ends here.
    if not wait_for_parent(prefetch):
        return EXIT_OK
    from study.runner import run_study

    settings = settings or run_settings_from_args(args)
    summary = run_study(settings)
    if summary.recycled and worker_number() is None:
        from study.workers import restart_in_place

        restart_in_place(args.argv, summary.wall_seconds)
    if summary.recycled:
        return EXIT_RECYCLE
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


def _run_jobs(args: argparse.Namespace) -> int:
    """``run --jobs N`` (or ``--recycle-after K``): the workers start first, so they import TensorFlow while this
    process validates the run; a worker that ran its K trials is replaced by a fresh one (:class:`Workers`).

    This process imports TensorFlow only after the workers are done, to score the best trial on the test split:
    on a small machine a third import beside the workers' would delay their first trials by seconds.
    """
    from study.runner import finish, prepare
    from study.storage import mask_url
    from study.workers import Workers

    started = time.perf_counter()
    settings = run_settings_from_args(args)  # flags and space before any process starts
    cores = os.cpu_count() or 1
    if args.jobs > cores:
        print(
            f"warning: --jobs {args.jobs} is more than the {cores} cores here; each worker gets one thread and they "
            "share the cores",
            file=sys.stderr,
        )
    workers = Workers(args.argv, args.jobs, recycle_after=recycle_after(args))
    try:
        run = prepare(settings)  # data and storage while the workers import TensorFlow
    except BaseException:
        workers.stop()
        raise
    workers.go()
    code = workers.wait()
    if code == EXIT_INTERRUPTED:
        print(
            f"interrupted: finished trials are saved in {mask_url(settings.storage)}; run the same command again to resume"
        )
        return EXIT_INTERRUPTED
    if settings.test_best and not args.debug:
        import_tensorflow_quietly()
    summary = finish(run, started=started)
    if code != 0 and summary.finished < settings.trials:  # else the other workers finished the study: success
        raise StudyError(f"a worker exited with code {code}; finished trials are saved, run the same command to resume")
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


# --------------------------------------------------------------------------------------------- best / list


def _storage_args(p: argparse.ArgumentParser, with_study: bool = True) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    if with_study:
        p.add_argument("--study", "--study-name", dest="study_name", help="study name (default: the only/latest one)")


def cmd_best(args: argparse.Namespace) -> int:
    from study.results import TrialAttr, metric_of, open_study, retrain_command

    optuna_study = open_study(args.storage, args.study_name)
    if len(optuna_study.directions) > 1:
        trials = optuna_study.best_trials
        print(f"study {optuna_study.study_name!r}: {len(trials)} Pareto-optimal trials")
        for t in trials:
            print(f"  trial {t.number}: values={t.values} params={t.params}")
        return EXIT_OK
    try:
        best = optuna_study.best_trial
    except ValueError:
        raise ConfigError(f"study {optuna_study.study_name!r} has no complete trial yet") from None
    metric = metric_of(optuna_study)
    print(
        f"study {optuna_study.study_name!r}: best trial {best.number}, valid {metric}={best.value:.4f} "
        f"at epoch {best.user_attrs.get(TrialAttr.BEST_EPOCH)}"
    )
    print("params:")
    for key, value in best.params.items():
        print(f"  {key}: {value}")
    valid = best.user_attrs.get(TrialAttr.VALID_METRICS, {})
    if valid:
        print("validation: " + " ".join(f"{k}={v:.4f}" for k, v in sorted(valid.items()) if k.startswith("top")))
    test = optuna_study.user_attrs.get("test_metrics")
    if test and optuna_study.user_attrs.get("test_trial") == best.number:
        print("test:       " + " ".join(f"{k}={v:.4f}" for k, v in sorted(test.items()) if k.startswith("top")))
    else:
        print("test:       not measured yet (finish `python -m study run`)")
    print("retrain:    " + retrain_command(optuna_study, best, args.storage))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    import optuna

    from study.results import count_states
    from study.storage import mask_url, open_existing

    storage = open_existing(args.storage)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    if not summaries:
        print(f"{mask_url(args.storage)}: no studies")
        return EXIT_OK
    print(f"{'study':<40} {'complete':>8} {'pruned':>7} {'failed':>7} {'running':>7}  best")
    for s in summaries:
        counts = {
            state.name: n
            for state, n in count_states(optuna.load_study(study_name=s.study_name, storage=storage)).items()
        }
        best = ""
        if s.best_trial is not None and len(s.directions) == 1:
            best = f"{s.best_trial.value:.4f} (trial {s.best_trial.number})"
        print(
            f"{s.study_name:<40} {counts['COMPLETE']:>8} {counts['PRUNED']:>7} {counts['FAIL']:>7} "
            f"{counts['RUNNING']:>7}  {best}"
        )
    return EXIT_OK


# --------------------------------------------------------------------------------------------- report / evaluate / dashboard / export


def _report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a study")
    _storage_args(p)
    p.add_argument("--out", help="HTML file to write (default reports/<study>.html)")
    _add_common(p)


def cmd_report(args: argparse.Namespace) -> int:
    from study.report import write_report
    from study.results import open_study

    optuna_study = open_study(args.storage, args.study_name)
    path = write_report(optuna_study, args.out, storage_url=args.storage)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB; opens offline in any browser)")
    return EXIT_OK


def _evaluate_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="re-train the top trials with other seeds and score them on the test split")
    _storage_args(p)
    p.add_argument("--top", type=int, default=5, help="how many of the best trials (default 5)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per trial (default 3; at least 2)")
    _add_common(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from study.evaluate import evaluate_study
    from study.results import open_study

    optuna_study = open_study(args.storage, args.study_name)
    evaluate_study(optuna_study, top=args.top, seeds=args.seeds)
    print(
        f"stored on the study as user attr 'seed_reruns'; see them with `python -m study report --study {optuna_study.study_name}`"
    )
    return EXIT_OK


def _dashboard_parser(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="serve optuna-dashboard on a storage (with the trials' artifacts)")
    _storage_args(p, with_study=False)
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    _add_common(p)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from study.dashboard import serve

    try:
        serve(args.storage, host=args.host, port=args.port)
    except KeyboardInterrupt:  # the server (bottle) usually catches Ctrl-C itself and returns
        pass
    print("dashboard stopped")
    return EXIT_OK


def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="re-train a trial on train+valid and save it as standalone SavedModels")
    _storage_args(p)
    p.add_argument("--trial", default="best", help="'best' (default) or a trial number")
    p.add_argument("--out", help="output folder (default models/<study>-trial<N>)")
    _add_common(p)


def cmd_export(args: argparse.Namespace) -> int:
    from study.export import export_model
    from study.results import open_study

    optuna_study = open_study(args.storage, args.study_name)
    export_model(optuna_study, args.trial, args.out, storage_url=args.storage)
    return EXIT_OK


def _recommend_parser(sub: Any) -> None:
    p = sub.add_parser("recommend", help="print the top-k titles for a user from an exported model")
    p.add_argument("--model", required=True, help="folder written by `python -m study export`")
    p.add_argument("--user", required=True, help="raw user id as in the data")
    p.add_argument("--k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--time", help="Unix seconds or ISO date of the query (default: the latest time in the data)")
    p.add_argument(
        "--rerank",
        action="store_true",
        help="order the retrieved top k by the rating head's predicted rating, highest first (a model exported "
        "with model.rating_head: true)",
    )
    _add_common(p)


def cmd_recommend(args: argparse.Namespace) -> int:
    from study.export import load_card, parse_time, recommend

    card = load_card(args.model)
    timestamp, source = parse_time(args.time, card)
    result = recommend(args.model, args.user, k=args.k, timestamp=timestamp, rerank=args.rerank)
    if not result["known_user"]:
        examples = ", ".join(repr(u) for u in card.get("data", {}).get("example_users", []))
        raise ConfigError(
            f"--user {args.user!r}: unknown user (not in the model's {card.get('data', {}).get('num_users', '?')} "
            f"training users{'; e.g. ' + examples if examples else ''})"
        )
    if args.rerank:
        _print_reranked(result["items"], f"user {args.user} at time {timestamp} ({source})", args.quiet)
        return EXIT_OK
    if not args.quiet:
        print(f"top {len(result['items'])} for user {args.user} at time {timestamp} ({source}):")
    for rank, (item_id, title, score) in enumerate(result["items"], start=1):
        print(f"{rank:>3}. {title}  [{item_id}]  {score:.3f}" if not args.quiet else title)
    return EXIT_OK


def _print_reranked(items: list[tuple[Any, ...]], who: str, quiet: bool) -> None:
    """``recommend --rerank``: the retrieved top k in predicted-rating order, with both numbers per item."""
    if quiet:
        for item in items:
            print(item[1])
        return
    print(f"top {len(items)} by retrieval score for {who}, re-ranked by predicted rating (highest first):")
    print(f"{'#':>4}  {'rating':>6}  {'score':>8}  {'score rank':>10}  title  [item]")
    for rank, (item_id, title, score, rating, by_score) in enumerate(items, start=1):
        print(f"{rank:>3}.  {rating:>6.3f}  {score:>8.3f}  {by_score:>10}  {title}  [{item_id}]")


# --------------------------------------------------------------------------------------------- main

_COMMANDS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "train": (_train_parser, cmd_train),
    "run": (_run_parser, cmd_run),
    "best": (
        lambda sub: _storage_args(sub.add_parser("best", help="print the best trial and how to retrain it")),
        cmd_best,
    ),
    "list": (
        lambda sub: _storage_args(sub.add_parser("list", help="list the studies in a storage"), with_study=False),
        cmd_list,
    ),
    "report": (_report_parser, cmd_report),
    "evaluate": (_evaluate_parser, cmd_evaluate),
    "dashboard": (_dashboard_parser, cmd_dashboard),
    "export": (_export_parser, cmd_export),
    "recommend": (_recommend_parser, cmd_recommend),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study",
        description="Tower Study: hyperparameter-search studies for two-tower TFRS retrieval models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, _ in _COMMANDS.values():
        add(sub)
    for p in sub.choices.values():
        if not any(a.dest == "debug" for a in p._actions):
            p.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with the C++ start-up chatter (oneDNN/CUDA notices written before logging is set up) muted.

    Those lines go straight to file descriptor 2 and ignore ``TF_CPP_MIN_LOG_LEVEL``, so fd 2 is pointed at
    /dev/null for the import only. Python-level import errors still raise normally.
    """
    import os

    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf
        import tensorflow_recommenders  # noqa: F401

        tf.config.list_physical_devices()  # device start-up notices (e.g. "failed call to cuInit") go here too
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    _, handler = _COMMANDS[args.command]
    try:
        # `run` imports TensorFlow once its flags and space are checked (a --jobs parent: after its workers are done).
        if args.command in TRAINING_COMMANDS and args.command != "run" and not getattr(args, "debug", False):
            import_tensorflow_quietly()
        return handler(args)
    except StudyError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"error: {shorten(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # an unexpected failure: one line unless --debug
        if getattr(args, "debug", False):
            raise
        print(
            f"error: {type(exc).__name__}: {shorten(str(exc))} (run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR
