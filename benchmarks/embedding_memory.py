"""Accuracy vs memory of the id-embedding techniques (``study.embeddings.EMBEDDINGS``) at a fixed training budget.

Every row trains the same model on the same split -- ``study.data.load(dataset)`` with the default random split,
towers [64, 32], relu, embedding dim 32, Adagrad 0.1, batch 2048, seed 0 -- with only the user-id and item-id
embeddings changed, for ``--epochs`` epochs (evaluated every epoch; the best epoch's validation top-100 is reported).
The other feature tables (time buckets, title words, genres) are the same full tables in every row; they are in
"all emb bytes" but not in "id bytes" (user + item id tables, projections included).

Usage::

    python benchmarks/embedding_memory.py [--epochs 15] [--dataset embedded] [--seed 0] [--only full,hashing]

The last line of the output is machine-readable::

    embedding_memory: best_compression=C at_top100_drop=D

``C`` is the largest reduction factor of id-embedding bytes vs ``full`` among the rows whose validation top-100 is
within 0.01 of full's (``full_top100 - top100 <= 0.01``), ``D`` that row's ``full_top100 - top100``. When no
compressed row qualifies, ``C = 1.00`` and ``D = 0.0000`` (full itself).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import study  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported)

# isort: split
from study.config import ModelConfig, TrainConfig, TrialConfig
from study.data import load
from study.train import train

MAX_DROP = 0.01
LAYERS = (64, 32)
EMBEDDING_DIM = 32
LEARNING_RATE = 0.1
BATCH_SIZE = 2048

#: (label, ModelConfig overrides). 2-3 compression levels per technique.
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("full", {"embedding": "full"}),
    ("qr multiply f=1", {"embedding": "quotient_remainder", "qr_combiner": "multiply", "qr_bucket_fraction": 1.0}),
    ("qr multiply f=4", {"embedding": "quotient_remainder", "qr_combiner": "multiply", "qr_bucket_fraction": 4.0}),
    ("qr concat f=1", {"embedding": "quotient_remainder", "qr_combiner": "concat", "qr_bucket_fraction": 1.0}),
    ("md B=4 a=0.3 min=4", {"embedding": "mixed_dimension", "md_num_blocks": 4, "md_alpha": 0.3, "md_min_dim": 4}),
    ("md B=8 a=0.6 min=4", {"embedding": "mixed_dimension", "md_num_blocks": 8, "md_alpha": 0.6, "md_min_dim": 4}),
    ("hash f=0.25", {"embedding": "hashing", "hash_bucket_fraction": 0.25}),
    ("hash f=0.5", {"embedding": "hashing", "hash_bucket_fraction": 0.5}),
]


@dataclass
class Row:
    label: str
    technique: str
    id_params: int
    id_bytes: int
    all_bytes: int
    top100: float
    best_epoch: int
    seconds_per_epoch: float


def trial_config(overrides: dict[str, Any], epochs: int, seed: int) -> TrialConfig:
    return TrialConfig(
        model=ModelConfig(layers=LAYERS, embedding_dim=EMBEDDING_DIM, **overrides),
        train=TrainConfig(
            optimizer="adagrad",
            learning_rate=LEARNING_RATE,
            batch_size=BATCH_SIZE,
            epochs=epochs,
            eval_every=1,
            seed=seed,
            metric="top100",
        ),
    )


def run_one(label: str, overrides: dict[str, Any], data, epochs: int, seed: int) -> Row:
    _, result = train(trial_config(overrides, epochs, seed), data)
    counts = result.param_counts
    return Row(
        label=label,
        technique=overrides["embedding"],
        id_params=counts["id_embedding_params"],
        id_bytes=counts["id_embedding_params"] * 4,
        all_bytes=counts["embedding_bytes"],
        top100=result.best_metrics["top100"],
        best_epoch=result.best_epoch,
        seconds_per_epoch=result.seconds_per_epoch,
    )


def summary(rows: list[Row]) -> tuple[float, float, Row | None]:
    """``(C, D, row)``: the most compressed row within ``MAX_DROP`` of full's top-100 (see the module docstring)."""
    full = next(r for r in rows if r.technique == "full")
    best: Row | None = None
    for row in rows:
        if row.technique == "full" or full.top100 - row.top100 > MAX_DROP:
            continue
        if best is None or row.id_bytes < best.id_bytes:
            best = row
    if best is None:
        return 1.0, 0.0, None
    return full.id_bytes / best.id_bytes, full.top100 - best.top100, best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated labels or techniques to run (full always runs)")
    args = parser.parse_args(argv)

    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    settings = [s for s in SETTINGS if not wanted or s[0] == "full" or s[0] in wanted or s[1]["embedding"] in wanted]
    data = load(args.dataset)
    print(
        f"data {args.dataset}: {data.num_users} user ids, {data.num_items} item ids, {len(data.train)} train rows; "
        f"towers {list(LAYERS)}, dim {EMBEDDING_DIM}, adagrad {LEARNING_RATE}, batch {BATCH_SIZE}, "
        f"{args.epochs} epochs, seed {args.seed}",
        flush=True,
    )
    header = (
        f"{'technique':<18} {'settings':<20} {'id params':>10} {'id bytes':>10} {'vs full':>8} "
        f"{'all emb bytes':>13} {'top100':>7} {'best ep':>7} {'s/epoch':>7}"
    )
    print(header)
    print("-" * len(header), flush=True)
    rows: list[Row] = []
    start = time.perf_counter()
    for label, overrides in settings:
        row = run_one(label, overrides, data, args.epochs, args.seed)
        rows.append(row)
        full_bytes = rows[0].id_bytes
        print(
            f"{row.technique:<18} {label:<20} {row.id_params:>10,} {row.id_bytes:>10,} "
            f"{full_bytes / row.id_bytes:>7.1f}x {row.all_bytes:>13,} {row.top100:>7.4f} {row.best_epoch:>7} "
            f"{row.seconds_per_epoch:>7.2f}",
            flush=True,
        )
    compression, drop, best = summary(rows)
    print(f"\n{time.perf_counter() - start:.0f} s in all; full top100 {rows[0].top100:.4f}")
    if best is not None:
        print(f"most compressed within {MAX_DROP} of full: {best.label} ({compression:.1f}x, drop {drop:.4f})")
    else:
        print(f"no compressed setting is within {MAX_DROP} of full's top100")
    print(f"embedding_memory: best_compression={compression:.2f} at_top100_drop={drop:.4f}")


if __name__ == "__main__":
    main()
