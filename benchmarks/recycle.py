"""Peak memory of a ``--jobs`` worker without and with ``--recycle-after``, on the same trials.

TensorFlow's XLA compilation cache never evicts (tensorflow/tensorflow#64170), so a process keeps what it compiled
for every trial it ran: its memory grows with the trials it ran, not with the model it trains now. ``--recycle-after
K`` replaces a worker by a fresh process after K trials. This runs ``python -m study run --jobs J --trials N``
twice, each in a fresh SQLite file training the same ``N`` parameter sets (drawn with ``--seed`` from the space and
enqueued before the timed run, as in ``benchmarks/parallel.py``): once with ``--recycle-after 0`` (each worker one
process for the whole run), once with ``--recycle-after K``. Each run is started from its own small wrapper process,
so ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is the peak resident memory of the largest process of that run alone
(the workers; the parent imports no TensorFlow). Prints one line per run, then exactly:

    recycle: after=K peak_rss=R wall=W

where ``R`` is the peak with ``--recycle-after K`` over the peak without, and ``W`` the wall time likewise (each
fresh process pays the TensorFlow import and the data loading again).

``--in-place`` (with ``--jobs 1``) measures the single-process default instead: the second run passes no
``--recycle-after`` and restarts itself in place (exec) every K trials (``TOWER_STUDY_RESTART_AFTER=K``); exec
keeps the PID, and ``ru_maxrss`` is the peak over all the images of that process.

Usage:
    python benchmarks/recycle.py [--trials 40] [--epochs 3] [--after 10] [--jobs 2] [--space quick]
        [--dataset embedded] [--seed 0] [--in-place]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Runs the command given as JSON in argv[1]; prints its exit code, wall seconds and the peak RSS (KiB) of the
# largest process among its descendants.
_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(json.loads(sys.argv[1]), capture_output=True).returncode
print(code, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def run_once(after: int, args: argparse.Namespace, db: Path, params: list[dict]) -> tuple[float, float]:
    """One ``run`` with ``--recycle-after after``. Returns (wall seconds, peak RSS in MiB)."""
    import optuna

    from benchmarks.parallel import prepare

    storage = f"sqlite:///{db}"
    in_place = args.in_place and after > 0
    recycle = [] if in_place else ["--recycle-after", str(after)]
    argv = [
        "run", "--jobs", str(args.jobs), "--trials", str(args.trials), *recycle,
        "--space", args.space, "--dataset", args.dataset, "--storage", storage, "--study-name", "recycle",
        "--pruner", "none", "--seed", str(args.seed), "--no-test", "--quiet", "--max-epochs", str(args.epochs),
    ]  # fmt: skip
    prepare(argv, storage, "recycle", params)
    cmd = json.dumps([sys.executable, "-m", "study", *argv])
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, cmd], cwd=ROOT, capture_output=True, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", TOWER_STUDY_RESTART_AFTER=str(after) if in_place else "0"),
    )  # fmt: skip
    fields = proc.stdout.split()
    if proc.returncode != 0 or len(fields) != 3 or fields[0] != "0":
        raise SystemExit(f"recycle: `run --recycle-after {after}` failed: {proc.stdout.strip()} {proc.stderr.strip()}")
    wall, peak_mib = float(fields[1]), int(fields[2]) / 1024
    trials = optuna.load_study(study_name="recycle", storage=storage).get_trials(deepcopy=False)
    finished = sum(t.state.name == "COMPLETE" for t in trials)
    processes = len({t.user_attrs.get("worker") for t in trials})
    label = f"restart in place every {after}" if in_place else f"--recycle-after {after}"
    print(
        f"{label}: {finished} trials in {wall:.1f} s by {processes} worker processes; "
        f"largest process peaked at {peak_mib:.0f} MiB",
        flush=True,
    )
    if finished != args.trials:
        raise SystemExit(f"recycle: `run --recycle-after {after}` finished {finished} of {args.trials} trials")
    return wall, peak_mib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--after", type=int, default=10, help="--recycle-after K of the second run (default 10)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--space", default="quick")
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-place", action="store_true", help="--jobs 1: the second run restarts itself (exec)")
    args = parser.parse_args(argv)
    if args.in_place and args.jobs != 1:
        parser.error("--in-place needs --jobs 1")
    if args.trials < 1 or args.epochs < 1 or args.after < 1 or args.jobs < 1:
        parser.error("--trials, --epochs, --after and --jobs must be >= 1")
    from benchmarks.parallel import fixed_params

    params = fixed_params(args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        wall0, peak0 = run_once(0, args, Path(tmp) / "never.db", params)
        wall1, peak1 = run_once(args.after, args, Path(tmp) / "after.db", params)
    print(f"(both runs: {time.perf_counter() - started:.0f} s)")
    print(f"recycle: after={args.after} peak_rss={peak1 / peak0:.2f} wall={wall1 / wall0:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
