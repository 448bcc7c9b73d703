"""Where a trial's time goes, one thread on one core (a ``--jobs 2`` worker on 2 cores) against TensorFlow's defaults.

Trains the first ``--trials`` of the parameter sets ``benchmarks/parallel.py`` draws (same space, same seed) for
``--epochs`` epochs each, validating after every epoch as the study does, twice in fresh processes: once with
TensorFlow's default thread pools (the ``--jobs 1`` case), once as a worker (``TOWER_STUDY_THREADS=1``, idle
threads not spinning) pinned to core 0. Each phase is timed apart: building the model, the first epoch (tracing +
XLA compilation + one epoch), the other epochs, the first validation (its compilation included) and the others.
Prints each side's seconds per trial, then exactly:

    phases: trial=R first_epoch=R epochs=R validation=R

the one-thread side's seconds over the default side's for each phase. A worker can add at most ``cores / R`` of
trials/hour to what one process does (``R`` for the whole trial): ``benchmarks/parallel.py``'s ceiling, per phase.

Usage:
    python benchmarks/phases.py [--trials 6] [--epochs 9] [--space quick] [--dataset embedded] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("build", "first_epoch", "epochs", "first_validation", "validations")


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Seconds per trial of each phase (and ``trial``, ``cpu``) in this process."""
    sys.path.insert(0, str(ROOT))
    from study.workers import limit_threads

    limit_threads()
    import optuna

    from benchmarks.parallel import fixed_params
    from study import data as data_mod
    from study.search_space import load_space, suggest
    from study.train import Evaluator, Trainer, build_model

    params = fixed_params(args)
    space = load_space(args.space)
    data = data_mod.load(args.dataset)
    totals = dict.fromkeys((*PHASES, "trial", "cpu"), 0.0)
    for p in params:
        cfg = suggest(optuna.trial.FixedTrial(p), space).replace(train={"epochs": args.epochs})
        wall0, cpu0 = time.perf_counter(), time.process_time()
        t = time.perf_counter()
        model = build_model(cfg, data)
        trainer = Trainer(model, data, cfg.train)
        evaluator = Evaluator(model)
        totals["build"] += time.perf_counter() - t
        for epoch in range(args.epochs):
            t = time.perf_counter()
            trainer.train_epoch()
            totals["first_epoch" if epoch == 0 else "epochs"] += time.perf_counter() - t
            t = time.perf_counter()
            evaluator.evaluate(data.valid)
            totals["first_validation" if epoch == 0 else "validations"] += time.perf_counter() - t
        totals["trial"] += time.perf_counter() - wall0
        totals["cpu"] += time.process_time() - cpu0
    return {k: v / len(params) for k, v in totals.items()}


def run_side(argv: list[str], one_thread: bool) -> dict[str, float]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("TOWER_STUDY_THREADS", None)
    if one_thread:
        env["TOWER_STUDY_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "1" if one_thread else "0", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"phases: the {'one-thread' if one_thread else 'default'} side failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6, help="parameter sets (the first of parallel.py's; default 6)")
    parser.add_argument("--epochs", type=int, default=9, help="epochs per trial, validating after each (default 9)")
    parser.add_argument("--space", default="quick")
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=("0", "1"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trials < 1 or args.epochs < 1:
        parser.error("--trials and --epochs must be >= 1")
    if args.child is not None:
        if args.child == "1" and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(json.dumps(measure(args)))
        return 0

    sides = {"default threads": run_side(argv, one_thread=False), "one thread, one core": run_side(argv, True)}
    for name, s in sides.items():
        print(
            f"{name}: per trial {s['trial']:.2f} s ({s['cpu']:.2f} CPU-seconds): build {s['build']:.2f}, first epoch "
            f"{s['first_epoch']:.2f}, other epochs {s['epochs']:.2f}, first validation {s['first_validation']:.2f}, "
            f"other validations {s['validations']:.2f}",
            flush=True,
        )
    one, default = sides["one thread, one core"], sides["default threads"]
    groups = {"trial": ("trial",), "first_epoch": ("first_epoch",), "epochs": ("epochs",),
              "validation": ("first_validation", "validations")}  # fmt: skip
    ratio = {
        name: sum(one[k] for k in keys) / total if (total := sum(default[k] for k in keys)) > 0 else float("nan")
        for name, keys in groups.items()
    }
    n_cores = os.cpu_count() or 1
    print(f"a worker per core can give at most {n_cores} / {ratio['trial']:.2f} = {n_cores / ratio['trial']:.2f}x the "
          "trials/hour of one process, before start-up and the last trial")  # fmt: skip
    print(
        f"phases: trial={ratio['trial']:.2f} first_epoch={ratio['first_epoch']:.2f} epochs={ratio['epochs']:.2f} "
        f"validation={ratio['validation']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
