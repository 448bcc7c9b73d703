"""The main job, timed: ``python -m study run --trials 100`` on the embedded default, in a fresh storage.

Prints the CLI's own output, then one closing line:

    study_budget: trials=100 wall_s=W complete=C pruned=P failed=F best_valid_top100=B test_top100=T epochs_total=E
        peak_rss_mb=M

(one line). ``M`` is the peak resident memory of the run's largest process (``getrusage`` of the children; a
``--jobs 1`` run's restarts keep its PID, and the peak spans them).

Target on a 2-core CPU: W <= 1200 s with the default space. ``epochs_total`` sums the epochs every trial ran; the
report compares it with running every trial to ``max_epochs``.

Usage:
    python benchmarks/study_budget.py [--trials 100] [--space default] [--seed 0] [-- extra run flags]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--space", default="default")
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="write the study to this SQLite file instead of a temporary one")
    parser.add_argument("extra", nargs="*", help="more flags for `study run` (after --)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.keep).resolve() if args.keep else Path(tmp) / "budget.db"
        storage = f"sqlite:///{db}"
        cmd = [
            sys.executable, "-m", "study", "run", "--trials", str(args.trials), "--space", args.space,
            "--dataset", args.dataset, "--storage", storage, "--seed", str(args.seed), "--study-name", "budget",
            *args.extra,
        ]  # fmt: skip
        print("$ " + " ".join(cmd), flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, env=os.environ.copy())
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        if proc.returncode != 0:
            print(f"study_budget: run failed with exit code {proc.returncode}", file=sys.stderr)
            return proc.returncode

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optuna_study = optuna.load_study(study_name="budget", storage=storage)
        states = [t.state.name for t in optuna_study.trials]
        epochs = sum(int(t.user_attrs.get("epochs_run", 0)) for t in optuna_study.trials)
        test = optuna_study.user_attrs.get("test_metrics", {})
        best = optuna_study.best_value
        print(
            f"study_budget: trials={args.trials} wall_s={wall:.0f} complete={states.count('COMPLETE')} "
            f"pruned={states.count('PRUNED')} failed={states.count('FAIL')} best_valid_top100={best:.4f} "
            f"test_top100={test.get('top100', float('nan')):.4f} epochs_total={epochs} peak_rss_mb={peak_mb:.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
