"""How the cost of data preparation, training and validation grows with the data size.

Builds a MovieLens-shaped synthetic table per size (users = rows / 100, at least 100; a Zipf-like item popularity
``p ~ 1 / rank^0.9``, users' activity ``~ 1 / rank^0.5``; timestamps over 4 years; titles "Word word name17 (1987)"
whose vocabulary grows with the items; 1-3 of the 18 MovieLens genres per item; ratings 0.5-5.0 in 0.5 steps) and
measures, each size in a fresh process (so each has its own peak RSS):

* encode: ``split_table(table, "random")`` + ``encode`` (all the string work a study does once),
* one representative trial (default towers [64, 32], embedding dim 32, batch 4096, Adagrad 0.1, XLA): its first
  epoch (tracing + compilation + one epoch) and the median of ``--epochs`` further epochs,
* one exact validation pass over every validation row (after an untimed warm-up on a few rows, so tracing is not
  counted) and one over the sample a search scores each epoch on (``DEFAULT_VALIDATION_SAMPLE`` rows),
* the process's peak resident memory.

Per-row costs are per 1M interactions of the whole table (the training split is 80 % of it). Prints a table (one
row per size), each size's per-row costs against the smallest size's, then exactly one closing line:

    scale: encode_per_1m_rows=R1,R2,R3 epoch_per_1m_rows=E1,E2,E3 per_row_epoch_ratio_max=X
        per_row_encode_ratio_max=Y sample_share_max=S exact_valid_s=V1,V2,V3 peak_rss_mb=M1,M2,M3

(one line; one value per size, ``nan`` for a size that failed). ``X`` and ``Y`` are the largest per-row cost over
the smallest across sizes, ``S`` the largest sampled-validation seconds over epoch seconds.

Targets: encoding and a training epoch are linear in rows (X <= 1.25 and Y <= 1.25, per-row cost within 25 % across
sizes); a sampled validation pass costs at most 10 % of an epoch at every size (S <= 0.10); 5M interactions train
within 8 GiB (M3 <= 8192). A size that fails (e.g. out of memory) is reported and the others still run; the exit
code is then 1.

Usage:
    python benchmarks/scale.py [--sizes 100000:2000,1000000:10000,5000000:50000] [--epochs 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = "100000:2000,1000000:10000,5000000:50000"
GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
WORDS = (
    "star", "love", "night", "city", "dead", "space", "dream", "war", "girl", "king", "blue", "last", "black",
    "house", "man", "story", "lost", "world", "day", "little", "dark", "heart", "time", "life", "river", "secret",
    "road", "fire", "summer", "ghost", "return", "island", "wild", "moon", "golden", "brother", "game", "shadow",
)  # fmt: skip
# ml-latest-small's rating counts for 0.5, 1.0, ..., 5.0
RATING_COUNTS = (1370, 2811, 1791, 7551, 5550, 20047, 13136, 26818, 8551, 13211)
START = 1_420_070_400  # 2015-01-01
SPAN = 4 * 365 * 86_400
BATCH_SIZE = 4096


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"100000:2000,1000000:10000"`` -> ``[(100000, 2000), (1000000, 10000)]`` (rows, items)."""
    sizes = []
    for part in text.split(","):
        rows, sep, items = part.strip().partition(":")
        if not sep or not rows.isdigit() or not items.isdigit() or int(rows) < 1000 or int(items) < 10:
            raise ValueError(f"bad size {part!r}: want ROWS:ITEMS, ROWS >= 1000 and ITEMS >= 10")
        sizes.append((int(rows), int(items)))
    return sizes


def zipf(n: int, exponent: float) -> np.ndarray:
    """float64 [n]: probabilities ``~ 1 / rank^exponent`` for ranks 1..n."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


def make_table(rows: int, items: int, seed: int = 0) -> Any:
    """A canonical interaction table (``study.data.CANONICAL_COLUMNS``, string columns in pandas' ``str`` dtype as
    ``load_table`` returns them) with ``attrs["items"]`` holding every item; vectorised over the rows."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_users = max(100, rows // 100)
    # popularity rank -> id, so ids are not sorted by popularity
    item = rng.permutation(items)[rng.choice(items, rows, p=zipf(items, 0.9))]
    user = rng.permutation(n_users)[rng.choice(n_users, rows, p=zipf(n_users, 0.5))]
    timestamp = rng.integers(START, START + SPAN, rows, dtype=np.int64)
    rating_p = np.asarray(RATING_COUNTS, np.float64) / sum(RATING_COUNTS)
    rating = rng.choice(np.arange(1, 11, dtype=np.float32) / 2, rows, p=rating_p).astype(np.float32)

    first = rng.integers(0, len(WORDS), items)
    second = rng.integers(0, len(WORDS), items)
    year = rng.integers(1930, 2024, items)
    # every 4 consecutive items share a "name" word (a franchise): the title vocabulary grows as items / 4
    titles = [
        f"{WORDS[first[i]].title()} {WORDS[second[i]]} {WORDS[(i // 4) % len(WORDS)]}{i // 4} ({year[i]})"
        for i in range(items)
    ]
    n_genres = rng.integers(1, 4, items)
    picks = np.argsort(rng.random((items, len(GENRES))), axis=1)[:, :3]
    genre_lists = [[GENRES[g] for g in picks[i, : n_genres[i]]] for i in range(items)]
    genres = np.empty(items, dtype=object)
    for i, g in enumerate(genre_lists):
        genres[i] = g  # one shared list per item, as the loaders do

    item_ids = pd.array(np.array([str(i + 1) for i in range(items)], dtype=object), dtype="str")
    user_ids = pd.array(np.array([str(u + 1) for u in range(n_users)], dtype=object), dtype="str")
    title_array = pd.array(np.array(titles, dtype=object), dtype="str")
    table = pd.DataFrame(
        {
            "user_id": user_ids.take(user),
            "item_id": item_ids.take(item),
            "title": title_array.take(item),
            "timestamp": timestamp,
            "genres": genres[item],
            "rating": rating,
        }
    )
    table.attrs["items"] = pd.DataFrame(
        {"item_id": item_ids, "title": title_array, "genres": pd.Series(genre_lists, dtype=object)}
    )
    table.attrs["has_ratings"] = True
    return table


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(rows: int, items: int, epochs: int, seed: int) -> dict[str, Any]:
    """Every number of one size, in this process."""
    sys.path.insert(0, str(ROOT))
    from study.config import (
        DEFAULT_VALIDATION_SAMPLE,
        VALIDATION_SAMPLE_SEED,
        ModelConfig,
        TrainConfig,
        TrialConfig,
    )
    from study.data import encode, split_table
    from study.train import Evaluator, Trainer, build_model

    out: dict[str, Any] = {"rows": rows, "items": items}
    t = time.perf_counter()
    table = make_table(rows, items, seed)
    out["generate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    splits = split_table(table, "random", seed=42)
    out["split_s"] = time.perf_counter() - t
    data = encode(splits, dataset=f"synthetic:{rows}:{items}")
    out["encode_s"] = time.perf_counter() - t
    del table, splits  # as after ``study.data.load``: only the encoded data stays
    gc.collect()
    out["peak_rss_encode_mb"] = peak_rss_mb()
    out.update(
        users=data.num_users - 1,
        candidates=data.num_items - 1,
        train_rows=len(data.train),
        valid_rows=len(data.valid),
        title_tokens=len(data.token_vocab),
    )

    cfg = TrialConfig(
        model=ModelConfig(embedding_dim=32),
        train=TrainConfig(optimizer="adagrad", learning_rate=0.1, batch_size=BATCH_SIZE, seed=seed),
    )
    t = time.perf_counter()
    model = build_model(cfg, data)
    trainer = Trainer(model, data, cfg.train)
    out["build_s"] = time.perf_counter() - t
    out["unique_cap"] = trainer.unique_cap
    out["batches"] = trainer.num_batches
    t = time.perf_counter()
    trainer.train_epoch()
    out["first_epoch_s"] = time.perf_counter() - t
    seconds = []
    for _ in range(epochs):
        t = time.perf_counter()
        trainer.train_epoch()
        seconds.append(time.perf_counter() - t)
    out["epoch_s"] = statistics.median(seconds)

    evaluator = Evaluator(model)
    evaluator.evaluate(data.valid.take(np.arange(min(64, len(data.valid)))))  # warm-up: traces both towers
    t = time.perf_counter()
    evaluator.evaluate(data.valid)
    out["exact_valid_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sample = data.valid.sample(DEFAULT_VALIDATION_SAMPLE, VALIDATION_SAMPLE_SEED)
    out["draw_sample_s"] = time.perf_counter() - t  # once per study, not per epoch
    out["sample_rows"] = len(sample)
    t = time.perf_counter()
    evaluator.evaluate(sample)
    out["sampled_valid_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def run_size(rows: int, items: int, epochs: int, seed: int) -> dict[str, Any] | str:
    """One size in a fresh process: its numbers, or why it failed (one line)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(rows), str(items),
           "--epochs", str(epochs), "--seed", str(seed)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"exit code {proc.returncode} after {wall:.0f} s: {tail}"
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        return f"unreadable result line {lines[-1]!r}"
    result["wall_s"] = wall
    return result


def joined(values: list[float], spec: str) -> str:
    return ",".join("nan" if math.isnan(v) else format(v, spec) for v in values)


def max_ratio(values: list[float]) -> float:
    """Largest over smallest of the finite values (nan when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) / min(finite) if finite and min(finite) > 0 else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"ROWS:ITEMS,... (default {DEFAULT_SIZES})")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the first (median; default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", nargs=2, type=int, metavar=("ROWS", "ITEMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.one is not None:
        print(json.dumps(measure(args.one[0], args.one[1], args.epochs, args.seed)), flush=True)
        return 0
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))

    print(
        f"towers [64, 32], embedding dim 32, batch {BATCH_SIZE}, adagrad 0.1, XLA; epoch = median of {args.epochs} "
        f"after the first; seed {args.seed}; one process per size",
        flush=True,
    )
    results: list[dict[str, Any] | None] = []
    for rows, items in sizes:
        r = run_size(rows, items, args.epochs, args.seed)
        if isinstance(r, str):
            print(f"{rows} rows / {items} items: FAILED, {r}", flush=True)
            results.append(None)
            continue
        results.append(r)
        print(
            f"{rows} rows / {items} items: {r['users']} users, {r['candidates']} candidates, {r['title_tokens']} "
            f"title tokens, {r['train_rows']} train / {r['valid_rows']} valid rows; generate {r['generate_s']:.1f} s, "
            f"split {r['split_s']:.1f} s of encode {r['encode_s']:.1f} s, peak RSS after encode "
            f"{r['peak_rss_encode_mb']:.0f} MiB; build {r['build_s']:.1f} s, {r['batches']} batches, "
            f"{r['unique_cap']} distinct-item slots per batch; {r['wall_s']:.0f} s in all",
            flush=True,
        )

    def column(key: str) -> list[float]:
        return [float(r[key]) if r is not None else float("nan") for r in results]

    per_m = [1e6 / rows for rows, _ in sizes]
    encode_pm = [s * f for s, f in zip(column("encode_s"), per_m, strict=True)]
    epoch_pm = [s * f for s, f in zip(column("epoch_s"), per_m, strict=True)]
    share = [s / e for s, e in zip(column("sampled_valid_s"), column("epoch_s"), strict=True)]

    header = (
        f"{'rows':>9} {'items':>6} | {'encode s':>8} {'s/1M':>6} | {'1st ep s':>8} {'epoch s':>8} {'s/1M':>6} | "
        f"{'exact val s':>11} {'sample val s':>12} {'share':>6} | {'peak MiB':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for i, (rows, items) in enumerate(sizes):
        r = results[i]
        if r is None:
            print(f"{rows:>9} {items:>6} | failed")
            continue
        print(
            f"{rows:>9} {items:>6} | {r['encode_s']:>8.2f} {encode_pm[i]:>6.2f} | {r['first_epoch_s']:>8.2f} "
            f"{r['epoch_s']:>8.2f} {epoch_pm[i]:>6.2f} | {r['exact_valid_s']:>11.2f} {r['sampled_valid_s']:>12.3f} "
            f"{share[i]:>6.3f} | {r['peak_rss_mb']:>8.0f}"
        )
    base = next((i for i, r in enumerate(results) if r is not None), None)
    if base is not None:
        print(f"\nper-row cost against {sizes[base][0]} rows:")
        for i, (rows, _) in enumerate(sizes):
            if results[i] is not None:
                print(
                    f"  {rows:>9} rows: encode x{encode_pm[i] / encode_pm[base]:.2f}, "
                    f"epoch x{epoch_pm[i] / epoch_pm[base]:.2f}"
                )
    finite_share = [s for s in share if math.isfinite(s)]
    print(
        f"scale: encode_per_1m_rows={joined(encode_pm, '.2f')} epoch_per_1m_rows={joined(epoch_pm, '.2f')} "
        f"per_row_epoch_ratio_max={max_ratio(epoch_pm):.2f} per_row_encode_ratio_max={max_ratio(encode_pm):.2f} "
        f"sample_share_max={max(finite_share) if finite_share else float('nan'):.3f} "
        f"exact_valid_s={joined(column('exact_valid_s'), '.2f')} peak_rss_mb={joined(column('peak_rss_mb'), '.0f')}"
    )
    return 1 if any(r is None for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
