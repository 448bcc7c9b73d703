"""The fixed cost of a trial (tracing and XLA compilation) against its training, with and without the JIT warm-up.

Trains the same parameter sets (drawn at random, seeded, from ``--space``) for a Hyperband-like mix of epochs, as a
pruned study runs them: of every ten trials four stop after 1 epoch, three after 3, two after 9, one after 15. Each
epoch is followed by the study's validation pass (on the validation sample). Every path runs in a fresh process:

* ``0``: today's default: the epoch is XLA-compiled before the first one;
* ``N``: ``train.jit_warmup: N``: the first N epochs run as a plain TensorFlow graph, XLA compiles for epoch N+1 on;
* ``never``: no XLA at all (``jit: false``).

A trial's fixed cost is what the study stores as ``compile_seconds``: the whole of every epoch that traced or
compiled its function (so it includes that epoch's training, as the README figures always did). Prints, per path,
the seconds of all trials, the fixed cost and its share, the mean final validation top-100 on the sample (the same
math on every path, so it should agree within noise), then exactly:

    compile_cost: share_before=S0 share_after=S1 trial_time_ratio=R paths=P0,P1[,...] shares=... times=...

``share_before`` is path ``0``'s share, ``share_after`` the second path's (``--paths``: first is the reference),
``trial_time_ratio`` its total trial seconds over the reference's. Target (issue: compile once): fixed cost <= 15 %
of trial time at equal search quality.

Usage:
    python benchmarks/compile_cost.py [--trials 10] [--paths 0,1,never] [--space default] [--seed 0]
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
MIX = (1, 3, 1, 9, 1, 3, 15, 1, 3, 9)  # per ten trials: four of 1 epoch, three of 3, two of 9, one of 15


def measure(args: argparse.Namespace, path: str) -> dict[str, float]:
    """Totals over the trials for one path, in this process."""
    sys.path.insert(0, str(ROOT))
    import optuna

    from benchmarks.parallel import fixed_params
    from study import data as data_mod
    from study.config import DEFAULT_VALIDATION_SAMPLE, VALIDATION_SAMPLE_SEED
    from study.search_space import load_space, suggest
    from study.train import Trainer, build_model

    params = fixed_params(args)
    space = load_space(args.space)
    data = data_mod.load(args.dataset)
    sample = data.valid.sample(DEFAULT_VALIDATION_SAMPLE, VALIDATION_SAMPLE_SEED)
    train = {"jit": False} if path == "never" else {"jit": True, "jit_warmup": int(path)}
    totals = {"seconds": 0.0, "compile": 0.0, "epochs": 0, "top100": 0.0}
    for i, p in enumerate(params):
        epochs = MIX[i % len(MIX)]
        cfg = suggest(optuna.trial.FixedTrial(p), space).replace(train={**train, "epochs": epochs})
        start = time.perf_counter()
        model = build_model(cfg, data)
        result = Trainer(model, data, cfg.train).fit(eval_split=sample)
        totals["seconds"] += time.perf_counter() - start
        totals["compile"] += result.compile_seconds
        totals["epochs"] += result.epochs_run
        totals["top100"] += result.history[-1].metrics["top100"] / len(params)
    return totals


def run_path(argv: list[str], path: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", path, *argv],
        cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"compile_cost: path {path} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--paths", default="0,1,never", help="jit_warmup values or 'never'; the first is the reference")
    parser.add_argument("--space", default="default")
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if args.trials < 1 or len(paths) < 2 or any(p != "never" and not p.isdigit() for p in paths):
        parser.error("--trials must be >= 1 and --paths at least two of: a jit_warmup (0, 1, ...) or never")
    if args.child is not None:
        print(json.dumps(measure(args, args.child)))
        return 0

    results = {}
    for path in paths:
        r = run_path(argv, path)
        results[path] = r
        print(
            f"path {path:>5}: {args.trials} trials, {r['epochs']} epochs in {r['seconds']:.1f} s; fixed cost "
            f"{r['compile']:.1f} s ({r['compile'] / r['seconds']:.1%}); mean final validation top-100 (sample) "
            f"{r['top100']:.4f}",
            flush=True,
        )
    ref, new = results[paths[0]], results[paths[1]]
    shares = ",".join(f"{results[p]['compile'] / results[p]['seconds']:.3f}" for p in paths)
    times = ",".join(f"{results[p]['seconds']:.1f}" for p in paths)
    print(
        f"compile_cost: share_before={ref['compile'] / ref['seconds']:.3f} share_after={new['compile'] / new['seconds']:.3f} "
        f"trial_time_ratio={new['seconds'] / ref['seconds']:.3f} paths={','.join(paths)} shares={shares} times={times}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
