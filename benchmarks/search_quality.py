"""Search quality of two spaces: the best trial's *test* top-100 of N-trial studies, S seeds each, same data.

Compares today's default space (``--base default``) with the space that adds the retrieval-loss options
(``--extended losses``: sampling-bias correction, accidental hits, hard negatives, and a rating head, each as an
option). For each seed ``s`` in ``first_seed .. first_seed + S - 1`` it runs, as a
subprocess and in a fresh SQLite file,

    python -m study run --space SPACE --trials N --seed s --dataset D --storage sqlite:///TMP/SIDE-sS.db
        --study-name SIDE-sS --quiet [extra run flags]

once per space, with the same seed, so both sides see the same data, split and training seeds. Which space runs
first alternates by seed (base first for the 1st, 3rd, ... seed), so drift in a shared machine's load does not
favour one side. Each run re-trains its best trial at its best epoch count and scores it once on the test split
(the study's ``test_metrics`` user attribute), which is never used for selection: that test top-100 is the score.

Prints one line per run (space, seed, complete / pruned / failed trials, best validation top-100, its test
top-100, wall seconds), a table of mean ± sd per space, the per-seed paired difference (extended - base; the seeds
pair the runs), then, as the last line exactly:

    search_quality: base=M±SD extended=M±SD ratio=R

``M`` and ``SD`` are the mean and sample standard deviation (n - 1; ``nan`` with one seed) of the runs' test
top-100, 4 decimals each, joined by ``±`` (U+00B1) with no spaces; ``R`` is the extended mean over the base mean,
3 decimals. A run that fails or stores no test top-100 counts as ``nan`` (the means then read ``nan``) and the exit
code is 1.

Default size: ``--trials 12 --seeds 3`` (the spaces' own 15 epochs per trial, Hyperband pruning), about 40 minutes
on 2 CPU cores. The arithmetic: on the 2-core VM without AVX-512 the 100-trial default study took 43:55 = 2635 s
(37 complete / 63 pruned), about 26 s per trial. Each run here also pays its own start-up (the TensorFlow import
and data loading, about 12 s there) and the test re-train of its best trial (about one complete trial, some 40 s):
about 60 s per run. Base: 3 runs x (12 trials x 26 s + 60 s) = 1116 s. Extended: its trials compile a little
longer (in one tiny pair on a loaded 2-core machine, the same trial's first epoch took 13.0 s with
``num_hard_negatives: 64`` against 8.6 s without), so say 30 s per trial: 3 x (12 x 30 s + 60 s) = 1260 s.
Together 2376 s, about 40 minutes. Not measured at this size: how Hyperband prunes in a 12-trial study rather than
a 100-trial one, which moves the per-trial cost either way. 12 trials, not fewer: TPE samples its first 10 trials
at random, so 12 leaves it 2 to steer (a smaller N compares the spaces under random search); 3 seeds, not fewer:
the sd needs at least 2, and the paired difference wants more. On a faster machine spend the spare time on seeds
first (``--seeds 5``), then on trials. ``-- --max-epochs E`` caps every trial's epochs (faster, but no longer the
spaces as shipped).
``--keep DIR`` keeps the SQLite files (give a fresh folder: an existing study of the same name is resumed).

Usage:
    python benchmarks/search_quality.py [--base default] [--extended losses] [--trials 12] [--seeds 3]
        [--first-seed 0] [--dataset embedded] [--keep DIR] [-- extra run flags, e.g. --max-epochs 1]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRIC = "top100"
SIDES: tuple[str, str] = ("base", "extended")


@dataclass
class RunResult:
    """One study run: which side and seed, its trial counts, its best validation and test top-100, its wall time."""

    side: str
    space: str
    seed: int
    complete: int
    pruned: int
    failed: int
    best_valid: float
    test: float
    wall_s: float
    returncode: int


def run_study(side: str, space: str, seed: int, args: argparse.Namespace, folder: Path) -> RunResult:
    """Runs one ``python -m study run`` study in ``folder/SIDE-sSEED.db`` and reads its results back.

    Args:
        side: ``base`` or ``extended`` (names the study and its file).
        space: the ``--space`` value (a name in ``search_spaces/`` or a YAML path).
        seed: the ``--seed`` value, shared by both sides.
        args: the parsed command line (trials, dataset, extra run flags).
        folder: where the SQLite file goes.

    Returns:
        The run's counts and scores; ``nan`` scores and zero counts when the run failed before storing them.
    """
    name = f"{side}-s{seed}"
    storage = f"sqlite:///{folder / (name + '.db')}"
    cmd = [
        sys.executable, "-m", "study", "run", "--space", space, "--trials", str(args.trials), "--seed", str(seed),
        "--dataset", args.dataset, "--storage", storage, "--study-name", name, "--quiet", *args.extra,
    ]  # fmt: skip
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    nan = float("nan")
    if proc.returncode != 0:
        print(f"{name}: run failed with exit code {proc.returncode}:", file=sys.stderr)
        print((proc.stdout + proc.stderr)[-4000:], file=sys.stderr)
        return RunResult(side, space, seed, 0, 0, 0, nan, nan, wall, proc.returncode)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_study = optuna.load_study(study_name=name, storage=storage)
    states = [t.state.name for t in optuna_study.get_trials(deepcopy=False)]
    complete = [t for t in optuna_study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    best_valid = nan
    if complete:
        best = optuna_study.best_trial
        best_valid = float(best.user_attrs.get("valid_metrics", {}).get(METRIC, best.value))
    test = float(optuna_study.user_attrs.get("test_metrics", {}).get(METRIC, nan))
    return RunResult(
        side,
        space,
        seed,
        states.count("COMPLETE"),
        states.count("PRUNED"),
        states.count("FAIL"),
        best_valid,
        test,
        wall,
        0,
    )


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the sd is ``nan`` for fewer than two values, both for none."""
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean, sd


def pm(mean: float, sd: float, sign: bool = False) -> str:
    """``M±SD`` with 4 decimals each (``+`` on the mean when ``sign``), as in the closing line."""
    return f"{mean:+.4f}±{sd:.4f}" if sign else f"{mean:.4f}±{sd:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="default", help="the space searched today (default: default)")
    parser.add_argument("--extended", default="losses", help="the space with the extra options (default: losses)")
    parser.add_argument("--trials", type=int, default=12, help="finished trials per study (default 12)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per space, the same for both (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--keep", help="write the SQLite files to this folder instead of a temporary one")
    parser.add_argument("extra", nargs="*", help="more flags for `study run` (after --)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.seeds < 1:
        parser.error("--trials and --seeds must be >= 1")
    spaces = {"base": args.base, "extended": args.extended}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    results: list[RunResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep).resolve() if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            for side in order:
                r = run_study(side, spaces[side], seed, args, folder)
                results.append(r)
                print(
                    f"{side} ({r.space}) seed={seed}: {r.complete} complete / {r.pruned} pruned / {r.failed} failed, "
                    f"best valid {METRIC}={r.best_valid:.4f}, test {METRIC}={r.test:.4f}, {r.wall_s:.0f} s",
                    flush=True,
                )

    print()
    print(
        f"{'space':<10} {'name':<16} {'runs':>4}  {'test ' + METRIC:>15}  {'best valid ' + METRIC:>21}  {'wall s':>7}"
    )
    summary: dict[str, tuple[float, float]] = {}
    for side in SIDES:
        runs = [r for r in results if r.side == side]
        test = mean_sd([r.test for r in runs])
        valid = mean_sd([r.best_valid for r in runs])
        wall = statistics.fmean(r.wall_s for r in runs)
        summary[side] = test
        print(f"{side:<10} {spaces[side]:<16} {len(runs):>4}  {pm(*test):>15}  {pm(*valid):>21}  {wall:>7.0f}")

    by_seed = {(r.side, r.seed): r.test for r in results}
    diffs = [by_seed[("extended", s)] - by_seed[("base", s)] for s in seeds]
    print(
        f"paired by seed, extended - base, test {METRIC}: {pm(*mean_sd(diffs), sign=True)} over {len(seeds)} seeds "
        f"({', '.join(f'{d:+.4f}' for d in diffs)})"
    )
    (base_mean, base_sd), (ext_mean, ext_sd) = summary["base"], summary["extended"]
    ratio = ext_mean / base_mean if base_mean else float("nan")
    missing = [f"{r.side}-s{r.seed}" for r in results if math.isnan(r.test)]
    if missing:
        print(f"search_quality: no test {METRIC} from {', '.join(missing)}; see above", file=sys.stderr)
    print(f"search_quality: base={pm(base_mean, base_sd)} extended={pm(ext_mean, ext_sd)} ratio={ratio:.3f}")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
