"""Trials per hour of ``python -m study run --jobs 1`` vs ``--jobs N`` on the same space, each in a fresh SQLite file.

Each run is the whole command as a user runs it (start-up, the TensorFlow import of every worker, data loading,
the trials), with ``--pruner none`` so every trial does the same work and ``--no-test`` so only the
search is timed. Both runs train the same ``--trials`` parameter sets (drawn at random from the space with
``--seed`` and enqueued in each fresh study before it is timed), so they do the same work: with each run's sampler
drawing its own, the ratio swung by ±0.07 with the configurations drawn. Trials are the ``quick`` space's small
models trained ``--epochs 9`` epochs each (Hyperband's middle rung; the default 100-trial study averages 7.2 epochs
per trial): with the space's own 3 epochs a trial is mostly XLA compilation, which already keeps both cores busy in
one process (``--epochs 3`` measures that mix). Prints one line per run, then exactly:

    parallel: jobs=N speedup=S

where ``S = trials/hour with --jobs N / trials/hour with --jobs 1``. Target on a 2-core CPU: S >= 1.3 for N = 2.
TensorFlow is imported once, untimed, before the runs, so neither pays a cold disk cache. On a shared VM the same
run's time moves by up to 10 % from one minute to the next (single pairs gave 1.20-1.44 here); ``--repeat R`` runs
R pairs, alternating which run goes first, prints each pair's ratio and makes S their median.
Each run also prints, from the storage's timestamps and the trials' recorded timings: the span of the trials alone
and the seconds before the first and after the last; the mean trial time and its first epoch (tracing + XLA
compilation); for N > 1, how long a worker with no trial left waited for the last one and the trials/hour while
every worker had a trial; the CPU-seconds of the run (the command and its workers) and the cores they kept busy on
average; and the load average (on a shared machine other work skews every figure). Two diagnostic lines before the
last: the ratio of those busy rates (``--jobs 1``: its trials alone), what a study much longer than this one
approaches, since start-up and the last trial running alone are costs per run (S counts them); and S taken apart,
exactly, as (cores busy with ``--jobs N`` / with ``--jobs 1``) / (CPU-seconds per trial, ``--jobs N`` over
``--jobs 1``), with the most S could be if ``--jobs N`` kept every core busy all the run: what one process leaves
of the cores is all that more processes can win.
``--keep DIR`` keeps the SQLite files for a closer look.

Usage:
    python benchmarks/parallel.py [--trials 24] [--epochs 9] [--space quick] [--dataset embedded] [--jobs 2] [-v]
        [--repeat 1] [--keep DIR]
        [-- extra flags]
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fixed_params(args: argparse.Namespace) -> list[dict]:
    """``args.trials`` parameter sets drawn at random (seeded) from the space: both runs train exactly these."""
    import optuna

    from study.search_space import load_space, suggest

    space = load_space(args.space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    params = []
    for _ in range(args.trials):
        trial = draw.ask()
        suggest(trial, space)
        params.append(dict(trial.params))
        draw.tell(trial, 0.0)
    return params


def prepare(argv: list[str], storage: str, study_name: str, params: list[dict]) -> None:
    """Create the study of ``python -m study`` + ``argv`` (untimed, as its parent would) and enqueue ``params``, so
    the timed run trains exactly those trials."""
    import io

    import optuna

    from study.cli import build_parser, run_settings_from_args
    from study.runner import prepare
    from study.storage import open_storage

    prepare(run_settings_from_args(build_parser().parse_args(argv)), out=io.StringIO())
    prepared = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    for p in params:
        prepared.enqueue_trial(p)


def run_once(jobs: int, args: argparse.Namespace, db: Path, params: list[dict]) -> tuple[float, int, float, float]:
    """Run the study with ``--jobs jobs`` in a fresh SQLite file ``db``.

    Returns:
        (wall seconds, finished trials, trials/hour while every worker had a trial, CPU seconds of the run).

    The study is created first (untimed) with ``params`` enqueued, so the run trains those trials in some order.
    """
    import optuna

    storage = f"sqlite:///{db}"
    argv = [
        "run", "--jobs", str(jobs), "--trials", str(args.trials),
        "--space", args.space, "--dataset", args.dataset, "--storage", storage, "--study-name", "parallel",
        "--pruner", "none", "--seed", str(args.seed), "--no-test", "--quiet", "--max-epochs", str(args.epochs),
        *args.extra,
    ]  # fmt: skip
    prepare(argv, storage, "parallel", params)
    cmd = [sys.executable, "-m", "study", *argv]
    load = os.getloadavg()[0]
    started = datetime.datetime.now()  # Optuna stores naive local times
    before_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True, text=True)
    wall = time.perf_counter() - start
    # User + system time of the command and every worker it waited for (RUSAGE_CHILDREN counts reaped descendants).
    after_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after_cpu.ru_utime - before_cpu.ru_utime) + (after_cpu.ru_stime - before_cpu.ru_stime)
    if args.verbose or proc.returncode != 0:
        print(proc.stdout + proc.stderr, end="", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"parallel: `run --jobs {jobs}` failed with exit code {proc.returncode}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="parallel", storage=storage).get_trials(deepcopy=False)
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    failed = sum(t.state.name == "FAIL" for t in trials)
    trained = sorted(repr(sorted(t.params.items())) for t in trials if t.state.name in ("COMPLETE", "PRUNED"))
    if trained != sorted(repr(sorted(p.items())) for p in params):
        raise SystemExit(f"parallel: `run --jobs {jobs}` did not train exactly the enqueued trials")
    # Diagnostic only: the trials' own span (first start to last end), i.e. without the start-up of the processes.
    first, last = min(t.datetime_start for t in trials), max(t.datetime_complete for t in trials)
    span = (last - first).total_seconds()
    before, after = (first - started).total_seconds(), wall - (last - started).total_seconds()
    # Where the trials' own time went: first epochs (tracing + XLA compilation, which one process already spreads
    # over both cores) against the rest (the other epochs, the validation passes).
    trial_s = sum(t.user_attrs.get("seconds", 0.0) for t in trials)
    compile_s = sum(t.user_attrs.get("compile_seconds", 0.0) for t in trials)
    # How long the first worker to run out of trials waited for the last one (the end of the run on one core).
    ends: dict[str, datetime.datetime] = {}
    for t in trials:
        worker = t.user_attrs.get("worker", "")
        ends[worker] = max(ends.get(worker, t.datetime_complete), t.datetime_complete)
    idle = (last - min(ends.values())).total_seconds() if len(ends) > 1 else 0.0
    # Trials/hour from the first trial's start until the first worker ran out of trials: what a long study approaches
    # (start-up and the last trial running alone are costs per run, not per hour).
    busy_end = min(ends.values())
    busy_rate = sum(t.datetime_complete <= busy_end for t in trials) / (busy_end - first).total_seconds() * 3600
    print(
        f"jobs={jobs}: {finished} trials ({failed} failed) in {wall:.1f} s wall = {finished / wall * 3600:.0f} "
        f"trials/hour; the trials alone took {span:.1f} s ({finished / span * 3600:.0f} trials/hour; {before:.1f} s "
        f"before the first, {after:.1f} s after the last); "
        f"load average before: {load:.2f} on {os.cpu_count()} cores; per trial {trial_s / finished:.2f} s, of which "
        f"first epoch {compile_s / finished:.2f} s; {cpu:.0f} CPU-seconds ({cpu / finished:.2f} per trial), "
        f"{cpu / wall:.2f} cores busy on average"
        + (
            f"; a worker with no trial left waited {idle:.1f} s for the last one; {busy_rate:.0f} trials/hour while "
            "every worker had a trial"
            if jobs > 1
            else ""
        ),
        flush=True,
    )
    return wall, finished, busy_rate, cpu


def warm_up() -> float:
    """Import TensorFlow and the trainer once in a throwaway process (untimed), so neither timed run is the one that
    reads TensorFlow's libraries from a cold disk cache (on a fresh machine that added ~2 s to whichever ran first)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "import study.train"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"parallel: importing study.train failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24, help="finished trials per run (default 24)")
    parser.add_argument("--epochs", type=int, default=9, help="epochs per trial (--max-epochs; default 9)")
    parser.add_argument("--space", default="quick")
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--jobs", type=int, default=2, help="the parallel run's --jobs (compared with --jobs 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=1, help="pairs of runs, alternating which goes first; S is their median"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the CLI's output too")
    parser.add_argument("--keep", type=Path, help="keep the SQLite files in this folder (jobs1.db, jobs2.db, ...)")
    parser.add_argument("extra", nargs="*", help="more flags for `study run` (after --)")
    args = parser.parse_args(argv)
    if args.jobs < 2:
        parser.error("--jobs: must be >= 2")
    if args.repeat < 1:
        parser.error("--repeat: must be >= 1")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"warm-up: imported TensorFlow once, untimed, in {warm_up():.1f} s", flush=True)
        params = fixed_params(args)
        speedups, busy = [], []
        factors: list[tuple[float, float, float]] = []
        for pair in range(args.repeat):
            order = (1, args.jobs) if pair % 2 == 0 else (args.jobs, 1)
            rates, busy_rates, cores, cpu_per_trial = {}, {}, {}, {}
            for jobs in order:
                name = f"jobs{jobs}" if args.repeat == 1 else f"jobs{jobs}-{pair + 1}"
                (folder / f"{name}.db").unlink(missing_ok=True)
                wall, finished, busy_rates[jobs], cpu = run_once(jobs, args, folder / f"{name}.db", params)
                rates[jobs] = finished / wall * 3600
                cores[jobs], cpu_per_trial[jobs] = cpu / wall, cpu / finished
            speedups.append(rates[args.jobs] / rates[1])
            busy.append(busy_rates[args.jobs] / busy_rates[1])
            # S = (cores busy with --jobs N / with --jobs 1) / (CPU-seconds per trial, --jobs N / --jobs 1), exactly:
            # what --jobs 1 leaves of the cores is all that --jobs N can win, less what its trials cost more.
            factors.append((cores[1], cores[args.jobs], cpu_per_trial[args.jobs] / cpu_per_trial[1]))
            if args.repeat > 1:
                print(f"pair {pair + 1} (--jobs {order[0]} first): speedup={speedups[-1]:.2f}", flush=True)
    print(
        f"diagnostic, not the target: trials/hour while every worker had a trial (what a long study approaches; "
        f"--jobs 1's trials alone), jobs={args.jobs} over jobs=1: {statistics.median(busy):.2f}"
    )
    one, many, cost = (statistics.median(f[i] for f in factors) for i in range(3))
    n_cores = os.cpu_count() or 1
    print(
        f"diagnostic, where S comes from (medians): cores busy on average {one:.2f} with --jobs 1, {many:.2f} with "
        f"--jobs {args.jobs}; CPU-seconds per trial {cost:.2f}x those of --jobs 1; S = ({many:.2f} / {one:.2f}) / "
        f"{cost:.2f}; with all {n_cores} cores busy throughout, at most ({n_cores} / {one:.2f}) / {cost:.2f} = "
        f"{n_cores / one / cost:.2f}"
    )
    if args.repeat > 1:
        print(f"median of {args.repeat} pairs; all: {', '.join(f'{s:.2f}' for s in speedups)}")
    print(f"parallel: jobs={args.jobs} speedup={statistics.median(speedups):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
