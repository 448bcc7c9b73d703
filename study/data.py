"""Data sources → canonical interaction table → splits → integer tensors.

CONTRACT (other modules rely on these names; the implementation is being written):

* ``load_table(spec: str, *, columns: Mapping[str, str] | None = None) -> pandas.DataFrame``
  canonical columns: user_id (str), item_id (str), title (str), timestamp (int64 seconds),
  genres (list[str]), rating (float32). Plus a ``DataFrame.attrs["items"]`` table of all items
  (item_id, title, genres) when the source has an item file (items never rated are candidates too).
* ``split_table(table, protocol="random", *, fractions=(0.8, 0.1, 0.1), seed=42) -> Splits``
* ``encode(splits, *, num_time_buckets=1000, max_title_tokens=10_000) -> EncodedData``
* ``load(spec="embedded", protocol="random", ...) -> EncodedData``: all three in one go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Interactions:
    """One split as integer/float arrays, row i is one (user, item, time) interaction.

    Attributes:
        user: int32 [n], index into ``EncodedData.user_vocab`` (0 = out-of-vocabulary).
        time_bucket: int32 [n], in [0, num_time_buckets] (Discretization over linspace(min, max, B)).
        time_norm: float32 [n], (timestamp - mean) / std over the training split.
        item: int32 [n], row of the candidate table (index into ``EncodedData.item_vocab``).
    """

    user: np.ndarray
    time_bucket: np.ndarray
    time_norm: np.ndarray
    item: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])


@dataclass(frozen=True)
class EncodedData:
    """Everything training needs, with all string work done.

    Attributes:
        train, valid, test: the splits (``valid is test`` under the tutorial protocol).
        item_vocab: item ids (str) by row; row 0 is the out-of-vocabulary item "[UNK]".
        user_vocab: user ids (str) by index; index 0 is "[UNK]".
        titles: str [num_items], the title of each candidate row.
        title_tokens: int32 [num_items, max_len], token ids, 0 = padding, 1 = OOV word.
        genres: int32 [num_items, max_genres], genre ids, 0 = padding (no genre).
        token_vocab, genre_vocab: the words / genre names by id (index 0 = padding, 1 = "[UNK]").
        num_time_buckets: number of rows of the time-bucket embedding (buckets + 1).
        item_train_counts: int64 [num_items], how often each item occurs in the training split.
        user_train_counts: int64 [num_users], how often each user occurs in the training split.
        protocol: split protocol name ("random", "temporal", "tutorial").
        dataset: the dataset spec it came from.
        data_hash: a short hex digest of the split contents (same data + split → same hash).
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    item_vocab: list[str]
    user_vocab: list[str]
    titles: list[str]
    title_tokens: np.ndarray
    genres: np.ndarray
    token_vocab: list[str]
    genre_vocab: list[str]
    num_time_buckets: int
    item_train_counts: np.ndarray
    user_train_counts: np.ndarray
    protocol: str
    dataset: str
    data_hash: str
    info: dict = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.item_vocab)

    @property
    def num_users(self) -> int:
        return len(self.user_vocab)

    @property
    def has_genres(self) -> bool:
        return len(self.genre_vocab) > 2
