"""The TFRS multi-task tutorial's three models on the embedded data: rating-only, retrieval-only and joint.

The tutorial ("Multi-task recommenders") trains the same towers with the loss ``rating_weight * rating +
retrieval_weight * retrieval`` at weights 1/0 (rating-only), 0/1 (retrieval-only) and 1/1 (joint) and reports, on
MovieLens 100k, that the rating-only model's top-100 is about 4 times worse than the retrieval-only one's, that its
RMSE is about 1.11 (the retrieval-only model's untrained head is far off), and that the joint model gets close to
the best of both. This script trains the three with our fast trainer: same towers (``--layers``, a rating head of
256 -> 128 -> 1), same epochs, same seeds (``--seeds`` of them; the table shows their means), the tutorial's
Adagrad 0.1, and scores each once on the test split after its last epoch (exact top-100 over all items, RMSE of
the head's predicted ratings).

Prints a table (model, weights, test top-100, test RMSE, seconds), the ratios against the specialised models
measured in the same run, then one machine-readable last line:

    multitask: retrieval_top100=A rating_top100=B joint_top100=C retrieval_rmse=D rating_rmse=E joint_rmse=F
        rating_vs_retrieval_top100=B/A joint_vs_retrieval_top100=C/A joint_vs_rating_rmse=F/E

(one line). Takes about 3 minutes on 2 CPU cores with the defaults.

Usage:
    python benchmarks/multitask.py [--epochs 10] [--seeds 3] [--layers 32] [--batch-size 4096] [--dataset embedded]
"""

from __future__ import annotations

import argparse
import statistics
import time

MODELS: tuple[tuple[str, float, float], ...] = (
    ("rating-only", 1.0, 0.0),
    ("retrieval-only", 0.0, 1.0),
    ("joint", 1.0, 1.0),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--layers", default="32", help="tower widths, e.g. 32 or 64,32")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--dataset", default="embedded")
    args = parser.parse_args(argv)

    from study import data as data_mod
    from study.config import ModelConfig, TrainConfig, TrialConfig
    from study.train import Evaluator, Trainer, build_model

    data = data_mod.load(args.dataset)
    layers = tuple(int(u) for u in args.layers.split(","))
    print(
        f"data: {data.dataset} train={len(data.train)} test={len(data.test)} items={data.num_items - 1}; "
        f"towers {list(layers)}, rating head [256, 128] -> 1, adagrad {args.learning_rate}, batch {args.batch_size}, "
        f"{args.epochs} epochs, seeds 0..{args.seeds - 1}",
        flush=True,
    )
    results: dict[str, dict[str, list[float]]] = {
        name: {"top100": [], "rmse": [], "seconds": []} for name, *_ in MODELS
    }
    for seed in range(args.seeds):
        for name, rating_weight, retrieval_weight in MODELS:
            cfg = TrialConfig(
                model=ModelConfig(
                    layers=layers,
                    rating_head=True,
                    rating_weight=rating_weight,
                    retrieval_weight=retrieval_weight,
                ),
                train=TrainConfig(
                    optimizer="adagrad",
                    learning_rate=args.learning_rate,
                    batch_size=args.batch_size,
                    epochs=args.epochs,
                    seed=seed,
                ),
            )
            start = time.perf_counter()
            model = build_model(cfg, data)
            trainer = Trainer(model, data, cfg.train)
            for _ in range(args.epochs):
                trainer.train_epoch()
            metrics = Evaluator(model).evaluate(data.test, (100,))
            seconds = time.perf_counter() - start
            for key, value in (("top100", metrics["top100"]), ("rmse", metrics["rmse"]), ("seconds", seconds)):
                results[name][key].append(value)
            print(
                f"seed {seed} {name:<15} weights {rating_weight:g}/{retrieval_weight:g}: "
                f"test top100={metrics['top100']:.4f} rmse={metrics['rmse']:.4f} ({seconds:.1f} s)",
                flush=True,
            )

    def mean(name: str, key: str) -> float:
        return statistics.fmean(results[name][key])

    def sd(name: str, key: str) -> float:
        values = results[name][key]
        return statistics.stdev(values) if len(values) > 1 else float("nan")

    print()
    print(f"{'model':<15} {'rating/retrieval':>16} {'test top100':>16} {'test rmse':>16} {'s/model':>8}")
    for name, rating_weight, retrieval_weight in MODELS:
        print(
            f"{name:<15} {f'{rating_weight:g}/{retrieval_weight:g}':>16} "
            f"{mean(name, 'top100'):>8.4f} ± {sd(name, 'top100'):.4f} {mean(name, 'rmse'):>8.4f} ± {sd(name, 'rmse'):.4f} "
            f"{mean(name, 'seconds'):>8.1f}"
        )
    top = {name: mean(name, "top100") for name, *_ in MODELS}
    err = {name: mean(name, "rmse") for name, *_ in MODELS}
    ratios = {
        "rating_vs_retrieval_top100": top["rating-only"] / top["retrieval-only"],
        "joint_vs_retrieval_top100": top["joint"] / top["retrieval-only"],
        "joint_vs_rating_rmse": err["joint"] / err["rating-only"],
    }
    print(
        f"\nrating-only top-100 is {ratios['rating_vs_retrieval_top100']:.2f}x the retrieval-only one "
        f"(the tutorial: about 0.25x); joint top-100 {ratios['joint_vs_retrieval_top100']:.2f}x retrieval-only; "
        f"joint RMSE {ratios['joint_vs_rating_rmse']:.2f}x rating-only"
    )
    print(
        f"multitask: retrieval_top100={top['retrieval-only']:.4f} rating_top100={top['rating-only']:.4f} "
        f"joint_top100={top['joint']:.4f} retrieval_rmse={err['retrieval-only']:.4f} "
        f"rating_rmse={err['rating-only']:.4f} joint_rmse={err['joint']:.4f} "
        + " ".join(f"{k}={v:.3f}" for k, v in ratios.items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
