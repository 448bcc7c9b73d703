"""Small synthetic interaction data with learnable structure, for fast tests of training and studies."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from study.data import EncodedData, encode, split_table

GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi", "Romance"]
WORDS = ["star", "love", "night", "city", "dead", "space", "dream", "war", "girl", "king", "blue", "last"]


def make_table(n_users: int = 120, n_items: int = 300, n_rows: int = 12_000, seed: int = 0) -> pd.DataFrame:
    """A canonical table where users of cluster c mostly rate items of cluster c (so retrieval is learnable)."""
    rng = np.random.default_rng(seed)
    clusters = len(GENRES)
    item_cluster = rng.integers(0, clusters, n_items)
    user_cluster = rng.integers(0, clusters, n_users)
    users = rng.integers(0, n_users, n_rows)
    same = rng.random(n_rows) < 0.8
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(clusters)]
    items = np.where(
        same,
        [rng.choice(by_cluster[user_cluster[u]]) for u in users],
        rng.integers(0, n_items, n_rows),
    )
    titles = [
        f"{WORDS[i % len(WORDS)].title()} {WORDS[(i * 7 + item_cluster[i]) % len(WORDS)]} ({1950 + i % 70})"
        for i in range(n_items)
    ]
    genres = [
        [GENRES[item_cluster[i]]] + ([GENRES[(item_cluster[i] + 1) % clusters]] if i % 3 == 0 else [])
        for i in range(n_items)
    ]
    table = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in users],
            "item_id": [f"i{i}" for i in items],
            "title": [titles[i] for i in items],
            "timestamp": (1_000_000_000 + rng.integers(0, 10_000_000, n_rows)).astype(np.int64),
            "genres": [genres[i] for i in items],
            "rating": rng.integers(1, 6, n_rows).astype(np.float32),
        }
    )
    table.attrs["items"] = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(n_items)], "title": titles, "genres": genres}
    )
    return table


@functools.lru_cache(maxsize=4)
def small_data(protocol: str = "random", seed: int = 0, n_rows: int = 12_000) -> EncodedData:
    """Encoded synthetic data (cached: tests share it read-only)."""
    return encode(split_table(make_table(n_rows=n_rows, seed=seed), protocol, seed=42), dataset="synthetic")
