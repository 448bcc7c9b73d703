"""Data sources → canonical interaction table → splits → integer tensors.

CONTRACT (other modules rely on these names):

* ``load_table(spec: str, *, columns: Mapping[str, str] | None = None) -> pandas.DataFrame``
  canonical columns: user_id (str), item_id (str), title (str), timestamp (int64 seconds),
  genres (list[str]), rating (float32). Plus a ``DataFrame.attrs["items"]`` table of all items
  (item_id, title, genres) when the source has an item file (items never rated are candidates too).
* ``split_table(table, protocol="random", *, fractions=(0.8, 0.1, 0.1), seed=42) -> Splits``
* ``encode(splits, *, num_time_buckets=1000, max_title_tokens=10_000) -> EncodedData``
* ``load(spec="embedded", protocol="random", ...) -> EncodedData``: all three in one go; refuses splits too small
  to train on or score (``MIN_TRAIN_ROWS``, ``MIN_TRAIN_USERS``, ``MIN_TRAIN_ITEMS``, ``MIN_EVAL_ROWS``).

Spec forms: ``embedded`` (MovieLens ml-latest-small shipped with the package), ``grouplens:PATH`` (a raw
GroupLens directory: ml-100k, ml-1m/ml-10m, ml-latest(-small)/ml-20m/ml-25m/ml-32m), ``tfds:NAME`` (a
tensorflow-datasets MovieLens ratings dataset, e.g. ``tfds:movielens/100k-ratings``) and ``csv:PATH`` (any
interaction CSV, with a column mapping).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.errors import ConfigError, DataError
from study.names import PROTOCOLS


@dataclass(frozen=True)
class Interactions:
    """One split as integer/float arrays, row i is one (user, item, time) interaction.

    Attributes:
        user: int32 [n], index into ``EncodedData.user_vocab`` (0 = out-of-vocabulary).
        time_bucket: int32 [n], in [0, num_time_buckets] (Discretization over linspace(min, max, B)).
        time_norm: float32 [n], (timestamp - mean) / std over the training split.
        item: int32 [n], row of the candidate table (index into ``EncodedData.item_vocab``).
        rating: float32 [n], the interaction's rating (1.0 for sources without ratings; see
            ``EncodedData.has_ratings``).
    """

    user: np.ndarray
    time_bucket: np.ndarray
    time_norm: np.ndarray
    item: np.ndarray
    rating: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, rows: np.ndarray) -> Interactions:
        """The rows ``rows`` (int [k]) of every array, in that order."""
        return Interactions(
            *(
                _readonly(np.asarray(a)[rows])
                for a in (self.user, self.time_bucket, self.time_norm, self.item, self.rating)
            )
        )

    def sample(self, size: int, seed: int = 0) -> Interactions:
        """``size`` rows drawn without replacement (the same rows for the same split, size and seed), kept in their
        order; every row when ``size`` is 0 or not below the split's length."""
        n = len(self)
        if size <= 0 or size >= n:
            return self
        return self.take(np.sort(np.random.default_rng(seed).choice(n, size, replace=False)))


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

    @property
    def has_ratings(self) -> bool:
        """Whether the source had a rating column (a CSV of clicks has none: its ratings are all 1.0)."""
        return bool(self.info.get("has_ratings", True))


@dataclass(frozen=True)
class Splits:
    """A canonical table split into train / valid / test.

    The split frames carry no ``attrs`` (``pandas.concat`` cannot compare DataFrame-valued attrs); the item
    table is kept in ``items`` instead.

    Attributes:
        train, valid, test: canonical interaction tables (``valid is test`` under the tutorial protocol).
        protocol: "random", "temporal" or "tutorial".
        items: all candidate items (item_id, title, genres), rated or not.
        seed: the permutation seed (None for the temporal protocol).
        has_ratings: whether the source had ratings (``attrs["has_ratings"]`` of the table).
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    protocol: str
    items: pd.DataFrame
    seed: int | None = None
    has_ratings: bool = True


CANONICAL_COLUMNS = ("user_id", "item_id", "title", "timestamp", "genres", "rating")
ITEM_COLUMNS = ("item_id", "title", "genres")
SPEC_FORMS = "embedded, grouplens:PATH, tfds:NAME, csv:PATH"
UNK = "[UNK]"
NO_GENRES = "(no genres listed)"

# Keras TextVectorization's default standardization: ASCII lower-case (tf.strings.lower), strip this
# punctuation, split on ASCII whitespace (tf.strings.split).
_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
_WHITESPACE = re.compile(r"[ \t\n\r\v\f]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_GROUPLENS_LAYOUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ml-100k", ("u.data", "u.item", "u.genre")),
    ("ml-1m", ("ratings.dat", "movies.dat")),
    ("ml-latest", ("ratings.csv", "movies.csv")),
)
_ML_LATEST_RATINGS = ("userId", "movieId", "rating", "timestamp")
_ML_LATEST_MOVIES = ("movieId", "title", "genres")
_TFDS_BATCH = 65_536

# The least data ``load`` accepts (checked after splitting, before anything is trained or scored). Below these a
# run "succeeds" with meaningless numbers (a 1-row file scored top100=0.0000), so it is refused instead.
MIN_TRAIN_ROWS = 10  # fewer is a truncated or placeholder file, not data to tune on; low so small samples still run
MIN_TRAIN_USERS = 2  # with one user the query tower sees a single input and can only learn a constant query
MIN_TRAIN_ITEMS = 2  # the in-batch softmax over one distinct item has zero loss for any weights: nothing to learn
MIN_EVAL_ROWS = 1  # validation (the objective) and test (the final score) each need a row, else metrics are 0 or NaN
_CACHE_SIZE = 4
_cache: OrderedDict[tuple[Any, ...], EncodedData] = OrderedDict()


# --------------------------------------------------------------------------------------------- sources


def load_table(spec: str, *, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Load a data source into the canonical interaction table.

    Args:
        spec: ``embedded``, ``grouplens:PATH``, ``tfds:NAME`` or ``csv:PATH``.
        columns: for ``csv:`` only, canonical name → column of the file. Required columns ``user_id``,
            ``item_id``, ``timestamp`` default to those names; optional ``title``, ``genres`` (``|``-separated)
            and ``rating`` are used when mapped or when the file has a column of that name.

    Returns:
        One row per interaction with columns user_id (str), item_id (str), title (str), timestamp (int64
        seconds), genres (list[str]), rating (float32), in this order. ``attrs["items"]`` holds every item
        (item_id, title, genres) of the source's item file, or the distinct rated items when it has none.
        Note: slices of the table inherit ``attrs``; drop them (``df.attrs = {}``) before ``pandas.concat``.

    Raises:
        DataError: the source is missing, malformed or empty.
        ConfigError: the spec form is unknown or ``columns`` is given for a non-csv source / names an unknown key.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data spec {spec!r} is empty; valid forms: {SPEC_FORMS}")
    spec = spec.strip()
    kind, sep, arg = spec.partition(":")
    if columns and kind != "csv":
        raise ConfigError(f"{spec}: a column mapping applies only to csv:PATH sources; drop it")
    if spec == "embedded":
        ref = importlib.resources.files("study") / "datasets" / "ml-latest-small"
        with importlib.resources.as_file(ref) as path:
            ratings, items = _read_ml_latest(Path(path))
        return _assemble(ratings, items, source=spec)
    if sep and arg.strip():
        arg = arg.strip()
        if kind == "grouplens":
            ratings, items = _read_grouplens(Path(arg).expanduser())
            return _assemble(ratings, items, source=spec)
        if kind == "csv":
            ratings, items = _read_interaction_csv(Path(arg).expanduser(), columns or {})
            return _assemble(ratings, items, source=spec)
        if kind == "tfds":
            ratings, items = _read_tfds(arg)
            return _assemble(ratings, items, source=spec)
    raise DataError(f"unknown data spec {spec!r}; valid forms: {SPEC_FORMS}")


def _assemble(ratings: pd.DataFrame, items: pd.DataFrame, *, source: str) -> pd.DataFrame:
    """Join validated ratings (user_id, item_id, timestamp, rating) with the item table (item_id, title, genres)."""
    if len(ratings) == 0:
        raise DataError(f"{source}: no interactions found; the ratings file has no data rows")
    item_ids = pd.Index(items["item_id"])
    pos = item_ids.get_indexer(ratings["item_id"])
    if (pos < 0).any():  # only possible for hand-built inputs; readers check against their item file
        raise DataError(f"{source}: {int((pos < 0).sum())} interactions name items missing from the item table")
    genres = items["genres"].to_numpy(dtype=object)
    table = pd.DataFrame(
        {
            "user_id": ratings["user_id"].astype("str").array,
            "item_id": ratings["item_id"].astype("str").array,
            "title": items["title"].astype("str").array.take(pos),
            "timestamp": ratings["timestamp"].to_numpy(dtype=np.int64),
            "genres": genres[pos],
            "rating": ratings["rating"].to_numpy(dtype=np.float32),
        }
    )
    table.attrs["items"] = items
    table.attrs["has_ratings"] = bool(ratings.attrs.get("has_ratings", True))
    return table


def _items_frame(item_id: Sequence[Any], title: Sequence[Any], genres: Sequence[list[str]]) -> pd.DataFrame:
    """The canonical item table, first occurrence of each item id kept."""
    frame = pd.DataFrame(
        {
            "item_id": pd.array(np.asarray(item_id, dtype=object), dtype="str"),
            "title": pd.array(np.asarray(title, dtype=object), dtype="str"),
            "genres": pd.Series(list(genres), dtype=object),
        }
    )
    return frame.drop_duplicates("item_id", keep="first", ignore_index=True)


def _split_genres(values: pd.Series) -> list[list[str]]:
    """``"A|B"`` → ``["A", "B"]``; "" and "(no genres listed)" → []. Equal strings share one list."""
    cache: dict[str, list[str]] = {}
    out = []
    for value in values.to_numpy(dtype=object):
        key = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        if key not in cache:
            cache[key] = [g.strip() for g in key.split("|") if g.strip() and g.strip() != NO_GENRES]
        out.append(cache[key])
    return out


# ----------------------------------------------------------------------------- file reading helpers


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path")
    if not path.is_file():
        raise DataError(f"{path}: not a file; expected a text file")
    with path.open("rb") as fh:
        head = fh.read(65_536)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        raise DataError(f"{path}: binary or UTF-16 data, not a text file; save it as UTF-8 text")


def _read_text(path: Path, *, latin1_fallback: bool) -> str:
    """The file decoded as UTF-8 (or latin-1 when it is not valid UTF-8 and ``latin1_fallback``)."""
    _check_file(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if latin1_fallback:
            return data.decode("latin-1")
        raise DataError(f"{path}: not valid UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _read_csv(source: Path | str, path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv`` (C engine) with parse errors turned into one-line DataErrors naming ``path``."""
    try:
        return pd.read_csv(source, engine="c", **kwargs)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected a header and data rows") from None
    except (pd.errors.ParserError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot parse ({reason}); check the separator and quoting") from None


def _read_sep_text(text: str, path: Path, sep: str, ncols: int, what: str, *, numeric: int = 0) -> pd.DataFrame:
    """A headerless separated text (already decoded) as columns 0..ncols-1; checks the field count.

    The last ``numeric`` columns are left to the parser's number inference, the others are read as str.
    """
    if not text.strip():
        raise DataError(f"{path}: the file is empty; expected lines of {what}")
    raw = _read_csv(
        io.StringIO(text),
        path,
        sep=sep,
        header=None,
        dtype={i: str for i in range(ncols - numeric)},
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        skip_blank_lines=True,
    )
    if raw.shape[1] != ncols:
        raise DataError(f"{path}: expected {ncols} fields per line ({what}), found {raw.shape[1]}")
    return raw


def _ids(values: pd.Series, path: Path, column: str, first_line: int) -> pd.Series:
    """Id column as str, rejecting empty values."""
    values = values.astype("str")
    bad = values.isna() | (values.str.strip() == "")
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + first_line
        raise DataError(f"{path}: column '{column}' is empty on line {line}; every row needs a value")
    return values


def _numbers(values: pd.Series, path: Path, column: str, first_line: int, *, integer: bool) -> np.ndarray:
    """Numeric column as int64 (``integer``) or float64; a bad value raises a DataError naming file + column."""
    if integer and pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype=np.int64)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        num = values
    else:
        num = pd.to_numeric(values, errors="coerce")
    if integer and pd.api.types.is_integer_dtype(num.dtype):
        return num.to_numpy(dtype=np.int64)
    arr = num.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(arr)
    if integer:
        bad |= arr != np.round(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        kind = "integer" if integer else "numeric"
        raise DataError(
            f"{path}: column '{column}' has a non-{kind} value {values.iloc[i]!r} on line {i + first_line}; "
            f"fix or remove that row"
        )
    return arr.astype(np.int64) if integer else arr


def _ratings_frame(user: pd.Series, item: pd.Series, rating: np.ndarray, timestamp: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"user_id": user.array, "item_id": item.array, "rating": rating, "timestamp": timestamp})


def _check_items_known(ratings: pd.DataFrame, items: pd.DataFrame, ratings_path: Path, items_path: Path) -> None:
    known = ratings["item_id"].isin(items["item_id"])
    if not known.all():
        unknown = pd.unique(ratings["item_id"][~known])
        raise DataError(
            f"{ratings_path.name}: {len(unknown)} item ids not in {items_path.name} (e.g. {unknown[0]}); "
            f"fix the item file ({items_path})"
        )


# ----------------------------------------------------------------------------------------- GroupLens


def _read_grouplens(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not path.exists():
        raise DataError(f"{path}: directory not found; pass grouplens:PATH with an unpacked GroupLens directory")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory; pass grouplens:PATH with an unpacked GroupLens directory")
    for layout, names in _GROUPLENS_LAYOUTS:
        if all((path / name).is_file() for name in names):
            if layout == "ml-100k":
                return _read_ml100k(path)
            if layout == "ml-1m":
                return _read_ml1m(path)
            return _read_ml_latest(path)
    expected = "; ".join(f"{'+'.join(names)} ({layout})" for layout, names in _GROUPLENS_LAYOUTS)
    raise DataError(f"{path}: unknown GroupLens layout; looked for {expected}")


def _read_ml100k(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ml-100k: u.data (user\\titem\\trating\\ttimestamp), u.item (id|title|...|19 genre flags), u.genre."""
    genre_path, item_path, data_path = path / "u.genre", path / "u.item", path / "u.data"
    genre_names: dict[int, str] = {}
    for n, line in enumerate(_read_text(genre_path, latin1_fallback=True).splitlines(), start=1):
        if not line.strip():
            continue
        name, _, index = line.strip().rpartition("|")
        if not name or not index.strip().isdigit():
            raise DataError(f"{genre_path}: line {n} is {line!r}; expected 'name|index'")
        genre_names[int(index)] = name
    if sorted(genre_names) != list(range(len(genre_names))):
        raise DataError(f"{genre_path}: genre indices {sorted(genre_names)} are not 0..{len(genre_names) - 1}")
    flags_names = [genre_names[i] for i in range(len(genre_names))]

    what = f"id|title|release date|video release date|IMDb url|{len(flags_names)} genre flags"
    raw = _read_sep_text(_read_text(item_path, latin1_fallback=True), item_path, "|", 5 + len(flags_names), what)
    item_ids = _ids(raw[0], item_path, "movie id", 1)
    flags = raw.iloc[:, 5:].to_numpy(dtype=object) == "1"
    genre_lists = [[flags_names[j] for j in np.flatnonzero(row) if flags_names[j] != NO_GENRES] for row in flags]
    items = _items_frame(item_ids.to_numpy(dtype=object), raw[1].to_numpy(dtype=object), genre_lists)

    data = _read_sep_text(
        _read_text(data_path, latin1_fallback=True), data_path, "\t", 4, "user, item, rating, timestamp", numeric=2
    )
    ratings = _ratings_frame(
        _ids(data[0], data_path, "user id", 1),
        _ids(data[1], data_path, "item id", 1),
        _numbers(data[2], data_path, "rating", 1, integer=False),
        _numbers(data[3], data_path, "timestamp", 1, integer=True),
    )
    _check_items_known(ratings, items, data_path, item_path)
    return ratings, items


def _read_ml1m(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ml-1m (and ml-10m): ratings.dat ``UserID::MovieID::Rating::Timestamp``, movies.dat ``MovieID::Title::Genres``."""
    movies_path, ratings_path = path / "movies.dat", path / "ratings.dat"
    # '::' → one unit-separator char, so pandas' fast C parser can read it (sep="::" needs the slow python engine).
    text = _read_text(movies_path, latin1_fallback=True).replace("::", "\x1f")
    raw = _read_sep_text(text, movies_path, "\x1f", 3, "MovieID::Title::Genres")
    items = _items_frame(_ids(raw[0], movies_path, "MovieID", 1).to_numpy(dtype=object), raw[1], _split_genres(raw[2]))

    text = _read_text(ratings_path, latin1_fallback=True).replace("::", "\x1f")
    data = _read_sep_text(text, ratings_path, "\x1f", 4, "UserID::MovieID::Rating::Timestamp", numeric=2)
    ratings = _ratings_frame(
        _ids(data[0], ratings_path, "UserID", 1),
        _ids(data[1], ratings_path, "MovieID", 1),
        _numbers(data[2], ratings_path, "Rating", 1, integer=False),
        _numbers(data[3], ratings_path, "Timestamp", 1, integer=True),
    )
    _check_items_known(ratings, items, ratings_path, movies_path)
    return ratings, items


def _read_header(path: Path, expected: Sequence[str]) -> list[str]:
    """The header of a UTF-8 CSV; raises when one of ``expected`` is missing."""
    _check_file(path)
    header = [str(c) for c in _read_csv(path, path, nrows=0, encoding="utf-8").columns]
    for column in expected:
        if column not in header:
            raise DataError(
                f"{path}: missing column '{column}'; expected columns {','.join(expected)} "
                f"(found: {','.join(header) or 'none'})"
            )
    return header


def _read_ml_latest(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ml-latest(-small), ml-20m, ml-25m, ml-32m: ratings.csv and movies.csv with headers, UTF-8."""
    movies_path, ratings_path = path / "movies.csv", path / "ratings.csv"
    _read_header(movies_path, _ML_LATEST_MOVIES)
    raw = _read_csv(
        movies_path, movies_path, usecols=list(_ML_LATEST_MOVIES), dtype=str, keep_default_na=False, encoding="utf-8"
    )
    items = _items_frame(
        _ids(raw["movieId"], movies_path, "movieId", 2).to_numpy(dtype=object),
        raw["title"].to_numpy(dtype=object),
        _split_genres(raw["genres"]),
    )

    _read_header(ratings_path, _ML_LATEST_RATINGS)
    data = _read_csv(
        ratings_path,
        ratings_path,
        usecols=list(_ML_LATEST_RATINGS),
        dtype={"userId": str, "movieId": str},
        keep_default_na=False,
        encoding="utf-8",
    )
    ratings = _ratings_frame(
        _ids(data["userId"], ratings_path, "userId", 2),
        _ids(data["movieId"], ratings_path, "movieId", 2),
        _numbers(data["rating"], ratings_path, "rating", 2, integer=False),
        _numbers(data["timestamp"], ratings_path, "timestamp", 2, integer=True),
    )
    _check_items_known(ratings, items, ratings_path, movies_path)
    return ratings, items


# ----------------------------------------------------------------------------------------------- csv


def _read_interaction_csv(path: Path, columns: Mapping[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A generic interaction CSV (UTF-8, comma-separated, with a header)."""
    for key in columns:
        if key not in CANONICAL_COLUMNS:
            raise ConfigError(f"columns: unknown key {key!r}; valid keys: {', '.join(CANONICAL_COLUMNS)}")
    _check_file(path)
    header = [str(c) for c in _read_csv(path, path, nrows=0, encoding="utf-8").columns]
    mapping: dict[str, str] = {}
    for key in CANONICAL_COLUMNS:
        name = columns.get(key, key)
        if name in header:
            mapping[key] = name
        elif key in ("user_id", "item_id", "timestamp") or key in columns:
            raise DataError(
                f"{path}: missing column '{name}' (for {key}); available columns: {','.join(header) or 'none'}; "
                f"map {key} to one of them"
            )
    text_cols = {mapping[k] for k in ("user_id", "item_id", "title", "genres") if k in mapping}
    data = _read_csv(
        path,
        path,
        usecols=sorted(set(mapping.values())),
        dtype={c: str for c in text_cols},
        keep_default_na=False,
        encoding="utf-8",
    )
    user = _ids(data[mapping["user_id"]], path, mapping["user_id"], 2)
    item = _ids(data[mapping["item_id"]], path, mapping["item_id"], 2)
    timestamp = _timestamps(data[mapping["timestamp"]], path, mapping["timestamp"])
    if "rating" in mapping:
        rating = _numbers(data[mapping["rating"]], path, mapping["rating"], 2, integer=False)
    else:
        rating = np.ones(len(data), dtype=np.float64)
    title = data[mapping["title"]].astype("str") if "title" in mapping else item
    genres = _split_genres(data[mapping["genres"]]) if "genres" in mapping else [[] for _ in range(len(data))]
    ratings = _ratings_frame(user, item, rating, timestamp)
    ratings.attrs["has_ratings"] = "rating" in mapping
    items = _items_frame(item.to_numpy(dtype=object), title.to_numpy(dtype=object), genres)
    return ratings, items


def _timestamps(values: pd.Series, path: Path, column: str) -> np.ndarray:
    """Integer seconds, or ISO-8601 date strings (naive = UTC) converted to integer seconds."""
    numeric = pd.to_numeric(values, errors="coerce") if not pd.api.types.is_numeric_dtype(values.dtype) else values
    if numeric.notna().all() or not len(values):
        return _numbers(values, path, column, 2, integer=True)
    dates = pd.to_datetime(values.astype("str"), utc=True, format="ISO8601", errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column '{column}' has {values.iloc[i]!r} on line {i + 2}; "
            f"expected integer seconds or an ISO date such as 2018-09-24T12:00:00"
        )
    seconds = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)


# ---------------------------------------------------------------------------------------------- tfds


def _read_tfds(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A tensorflow-datasets MovieLens ratings dataset (+ its ``-movies`` dataset for all items)."""
    spec = f"tfds:{name}"
    try:
        import tensorflow_datasets as tfds  # lazy: importing study.data must not import TensorFlow
    except ImportError as exc:
        raise DataError(
            f"{spec}: tensorflow-datasets is not importable ({exc}); pip install tensorflow-datasets"
        ) from None
    ds, info = _tfds_load(tfds, name, spec)
    frame, first_items = _tfds_arrays(ds, info, spec, ratings=True)
    items = first_items
    movies_name = name.replace("-ratings", "-movies")
    if movies_name != name and _tfds_exists(tfds, movies_name):
        movies_ds, movies_info = _tfds_load(tfds, movies_name, f"tfds:{movies_name}")
        _, movie_items = _tfds_arrays(movies_ds, movies_info, f"tfds:{movies_name}", ratings=False)
        # tfds data is trusted: rated items missing from the movies dataset become candidates too.
        extra = first_items[~first_items["item_id"].isin(movie_items["item_id"])]
        items = pd.concat([movie_items, extra], ignore_index=True) if len(extra) else movie_items
    return frame, items


def _tfds_exists(tfds: Any, name: str) -> bool:
    try:
        tfds.builder(name)
    except Exception:  # noqa: BLE001 - unknown dataset/config name: there is no such dataset
        return False
    return True


def _tfds_load(tfds: Any, name: str, spec: str) -> tuple[Any, Any]:
    try:
        return tfds.load(name, split="train", with_info=True)
    except Exception as exc:  # noqa: BLE001 - tfds raises many types (network, not found, not prepared)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {reason}"[:160]
        raise DataError(
            f"{spec}: could not load ({reason}); run once online or set TFDS_DATA_DIR to a prepared tfds data dir"
        ) from None


def _decode(values: np.ndarray) -> np.ndarray:
    """bytes (object array) → str (object array), decoding each distinct value once."""
    codes, uniques = pd.factorize(values)
    decoded = np.array(
        [u.decode("utf-8", "replace") if isinstance(u, bytes) else str(u) for u in uniques] + [""], dtype=object
    )
    return decoded[codes]  # code -1 (missing) → ""


def _tfds_arrays(ds: Any, info: Any, spec: str, *, ratings: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ratings (user_id, item_id, rating, timestamp) and first-seen items (item_id, title, genres) of a dataset."""
    keys = set(ds.element_spec)
    required = ("user_id", "movie_id", "timestamp") if ratings else ("movie_id",)
    for key in required:
        if key not in keys:
            raise DataError(
                f"{spec}: dataset has no feature '{key}' (has {', '.join(sorted(keys))}); "
                f"expected a MovieLens ratings dataset such as movielens/100k-ratings"
            )
    optional = ("user_rating", "movie_title", "movie_genres")
    keep = [k for k in (*required, *optional) if k in keys]
    try:
        genre_names = list(info.features["movie_genres"].feature.names)
    except Exception:  # noqa: BLE001 - no ClassLabel names: fall back to str(id)
        genre_names = []

    ds = ds.map(lambda ex: {k: ex[k] for k in keep})
    ds = ds.ragged_batch(_TFDS_BATCH) if "movie_genres" in keep else ds.batch(_TFDS_BATCH)
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("user_id", "movie_id", "timestamp", "user_rating")}
    first: dict[bytes, tuple[bytes, list[str]]] = {}
    for batch in ds:
        movie = batch["movie_id"].numpy()
        for key in columns:
            if key in batch:
                columns[key].append(batch[key].numpy())
        _, rows = np.unique(movie, return_index=True)
        new = [r for r in rows if movie[r] not in first]
        if not new:
            continue
        titles = batch["movie_title"].numpy() if "movie_title" in batch else None
        if "movie_genres" in batch:
            splits = batch["movie_genres"].row_splits.numpy()
            flat = batch["movie_genres"].flat_values.numpy()
        for r in new:
            genres: list[str] = []
            if "movie_genres" in batch:
                for gid in flat[splits[r] : splits[r + 1]].tolist():
                    gname = genre_names[gid] if 0 <= gid < len(genre_names) else str(gid)
                    if gname != NO_GENRES and gname not in genres:
                        genres.append(gname)
            first[movie[r]] = (titles[r] if titles is not None else movie[r], genres)

    item_keys = np.array(list(first), dtype=object)
    items = _items_frame(
        _decode(item_keys),
        _decode(np.array([t for t, _ in first.values()], dtype=object)),
        [g for _, g in first.values()],
    )
    if not ratings:
        return pd.DataFrame(), items
    n = sum(len(a) for a in columns["movie_id"])
    if n == 0:
        raise DataError(f"{spec}: the dataset has no examples in split 'train'")
    user = _decode(np.concatenate(columns["user_id"]))
    movie = _decode(np.concatenate(columns["movie_id"]))
    timestamp = np.concatenate(columns["timestamp"]).astype(np.int64)
    rating = np.concatenate(columns["user_rating"]) if columns["user_rating"] else np.ones(n, dtype=np.float32)
    frame = _ratings_frame(pd.Series(user), pd.Series(movie), rating, timestamp)
    frame.attrs["has_ratings"] = bool(columns["user_rating"])
    return frame, items


# -------------------------------------------------------------------------------------------- splits


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    hint = "need 3 non-negative numbers (train, valid, test) summing to 1 with train > 0, e.g. (0.8, 0.1, 0.1)"
    try:
        values = tuple(float(f) for f in fractions)
        if any(isinstance(f, bool) for f in fractions):
            raise TypeError
    except (TypeError, ValueError):
        raise ConfigError(f"fractions={fractions!r}: {hint}") from None
    if (
        len(values) != 3
        or not all(math.isfinite(v) and v >= 0 for v in values)
        or abs(sum(values) - 1.0) > 1e-6
        or values[0] <= 0
    ):
        raise ConfigError(f"fractions={fractions!r}: {hint}")
    return values  # type: ignore[return-value]


def split_table(
    table: pd.DataFrame,
    protocol: str = "random",
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
) -> Splits:
    """Split a canonical table into train / valid / test.

    Protocols:
        random: a ``numpy.random.default_rng(seed)`` permutation cut by ``fractions``.
        temporal: stable sort by timestamp (ties keep table order); the first fraction is train, the next
            valid, the last test (a global time split).
        tutorial: the TFRS retrieval tutorial: a seeded random 80/20 split (``fractions`` is ignored);
            validation IS the test split (``valid is test``).

    Args:
        table: a canonical table (``load_table``); needs user_id, item_id and timestamp.
        protocol: "random", "temporal" or "tutorial".
        fractions: (train, valid, test), non-negative, summing to 1, train > 0.
        seed: the permutation seed (random and tutorial protocols).

    Returns:
        The splits; each frame has a fresh 0..n-1 index and no ``attrs``; ``items`` is the item table.

    Raises:
        ConfigError: unknown protocol or bad fractions.
        DataError: the table lacks a needed column or has too few rows for a non-empty training split.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown split protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    f_train, f_valid, _ = _check_fractions(fractions) if protocol != "tutorial" else (0.8, 0.0, 0.2)
    for column in ("user_id", "item_id", "timestamp"):
        if column not in table.columns:
            raise DataError(f"table: missing column '{column}'; expected columns {', '.join(CANONICAL_COLUMNS)}")
    items = _table_items(table)
    has_ratings = bool(table.attrs.get("has_ratings", True)) and "rating" in table.columns
    n = len(table)
    n_train = int(math.floor(f_train * n + 0.5))
    n_valid = int(math.floor((f_train + f_valid) * n + 0.5)) - n_train
    if n_train == 0:
        raise DataError(f"table: {n} interactions are too few for a training split of {f_train:g}")
    if protocol == "temporal":
        order = np.argsort(table["timestamp"].to_numpy(dtype=np.int64), kind="stable")
    else:
        order = np.random.default_rng(seed).permutation(n)

    def take(idx: np.ndarray) -> pd.DataFrame:
        part = table.iloc[idx].reset_index(drop=True)
        part.attrs = {}
        return part

    train = take(order[:n_train])
    if protocol == "tutorial":
        test = take(order[n_train:])
        return Splits(train, test, test, protocol, items, seed, has_ratings)
    valid = take(order[n_train : n_train + n_valid])
    test = take(order[n_train + n_valid :])
    return Splits(train, valid, test, protocol, items, None if protocol == "temporal" else seed, has_ratings)


def _check_splits(splits: Splits, dataset: str, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> None:
    """Refuse splits too small to train on or score (see ``MIN_TRAIN_ROWS`` and the other minimums).

    Only counts are taken (two ``nunique`` over the training split: a few ms for 100k rows).

    Args:
        splits: from ``split_table``.
        dataset: the data spec, named in the message.
        fractions: the fractions ``split_table`` was given (a zero one is named as the cause of an empty split).

    Raises:
        DataError: one line naming the dataset, the counts found, the minimums and what to do.
    """
    train, valid, test = splits.train, splits.valid, splits.test
    n_train, n_valid, n_test = len(train), len(valid), len(test)
    n_users = int(train["user_id"].nunique()) if n_train else 0
    n_items = int(train["item_id"].nunique()) if n_train else 0
    small_train = n_train < MIN_TRAIN_ROWS or n_users < MIN_TRAIN_USERS or n_items < MIN_TRAIN_ITEMS
    if not small_train and n_valid >= MIN_EVAL_ROWS and n_test >= MIN_EVAL_ROWS:
        return
    found = f"{_plural(n_train, 'training row')} ({_plural(n_users, 'user')}, {_plural(n_items, 'item')})"
    need = (
        f"at least {_plural(MIN_TRAIN_ROWS, 'training row')} from {MIN_TRAIN_USERS} users and {MIN_TRAIN_ITEMS} items"
    )
    few_ids = n_train >= MIN_TRAIN_ROWS and (n_users < MIN_TRAIN_USERS or n_items < MIN_TRAIN_ITEMS)
    fix = "use data with more distinct users and items" if few_ids else "use a larger data set"
    if valid is test:  # tutorial protocol: validation is the test split
        found += f" and {_plural(n_test, 'validation/test row')}"
        need += f", and {_plural(MIN_EVAL_ROWS, 'validation/test row')}"
    else:
        found += f", {_plural(n_valid, 'validation row')} and {_plural(n_test, 'test row')}"
        need += f", and {_plural(MIN_EVAL_ROWS, 'validation row')} and {_plural(MIN_EVAL_ROWS, 'test row')}"
        zero = [name for name, f in zip(("validation", "test"), tuple(fractions)[1:], strict=False) if float(f) <= 0]
        if not small_train and zero:
            fix = f"give the {' and '.join(zero)} split a non-zero fraction (fractions={tuple(fractions)!r})"
    raise DataError(f"{dataset}: the {splits.protocol} split leaves {found}; training and scoring need {need}; {fix}")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _table_items(table: pd.DataFrame) -> pd.DataFrame:
    """The item table of ``attrs["items"]``, or the distinct items of the interactions."""
    items = table.attrs.get("items")
    if isinstance(items, pd.DataFrame) and "item_id" in items.columns:
        return items
    first = table.drop_duplicates("item_id")
    title = first["title"] if "title" in first.columns else first["item_id"]
    genres = first["genres"].tolist() if "genres" in first.columns else [[] for _ in range(len(first))]
    return _items_frame(first["item_id"].to_numpy(dtype=object), title.to_numpy(dtype=object), genres)


# ------------------------------------------------------------------------------------------ encoding


def tokenize(title: str) -> list[str]:
    """Keras TextVectorization's default standardization + split: ASCII lower-case, strip punctuation, split."""
    return [t for t in _WHITESPACE.split(_PUNCTUATION.sub("", title.translate(_ASCII_LOWER))) if t]


def encode(
    splits: Splits,
    *,
    num_time_buckets: int = 1000,
    max_title_tokens: int = 10_000,
    dataset: str = "?",
) -> EncodedData:
    """Turn splits into integer arrays and vocabularies (all string work happens here, once).

    Args:
        splits: from ``split_table``.
        num_time_buckets: number of boundaries of the timestamp discretization (the embedding gets one more row).
        max_title_tokens: cap on the title-word vocabulary size, padding and "[UNK]" included.
        dataset: the data spec, recorded in the result.

    Returns:
        The encoded data; see ``EncodedData``.

    Raises:
        ConfigError: ``num_time_buckets`` < 1 or ``max_title_tokens`` < 2.
    """
    if (
        isinstance(num_time_buckets, bool)
        or not isinstance(num_time_buckets, (int, np.integer))
        or num_time_buckets < 1
    ):
        raise ConfigError(f"num_time_buckets={num_time_buckets!r}: must be an integer >= 1")
    if (
        isinstance(max_title_tokens, bool)
        or not isinstance(max_title_tokens, (int, np.integer))
        or max_title_tokens < 2
    ):
        raise ConfigError(f"max_title_tokens={max_title_tokens!r}: must be an integer >= 2 (padding and [UNK])")
    names = ("train", "valid", "test")
    frames = [splits.train, splits.valid, splits.test]
    distinct = [f for i, f in enumerate(frames) if all(f is not g for g in frames[:i])]

    # vocabularies
    users = pd.unique(np.concatenate([f["user_id"].to_numpy(dtype=object) for f in distinct]))
    user_vocab = [UNK, *sorted(str(u) for u in users)]
    items = splits.items if splits.items is not None else pd.DataFrame(columns=list(ITEM_COLUMNS))
    rated = pd.concat([_table_items(f) for f in distinct], ignore_index=True) if distinct else items
    all_items = pd.concat([items[list(ITEM_COLUMNS)], rated[list(ITEM_COLUMNS)]], ignore_index=True)
    all_items = all_items.drop_duplicates("item_id", keep="first")
    all_items = all_items.assign(item_id=all_items["item_id"].astype("str")).sort_values("item_id", kind="stable")
    item_vocab = [UNK, *all_items["item_id"].tolist()]
    titles = ["", *("" if isinstance(t, float) else str(t) for t in all_items["title"].tolist())]
    item_genres: list[list[str]] = [[], *(list(g) if isinstance(g, (list, tuple)) else [] for g in all_items["genres"])]

    # title words
    tokenized = [tokenize(t) for t in titles]
    counts = Counter(tok for toks in tokenized for tok in toks)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    token_vocab = ["", UNK, *(tok for tok, _ in ranked[: max_title_tokens - 2])]
    token_index = {tok: i for i, tok in enumerate(token_vocab) if i >= 2}
    title_tokens = _pad([[token_index.get(tok, 1) for tok in toks] for toks in tokenized])

    # genres
    genre_vocab = ["", UNK, *sorted({g for gs in item_genres for g in gs})]
    genre_index = {g: i for i, g in enumerate(genre_vocab) if i >= 2}
    genres = _pad([[genre_index[g] for g in gs] for gs in item_genres])

    # time
    stamps = [f["timestamp"].to_numpy(dtype=np.int64) for f in frames]
    all_stamps = np.concatenate([f["timestamp"].to_numpy(dtype=np.int64) for f in distinct])
    t_min, t_max = (int(all_stamps.min()), int(all_stamps.max())) if len(all_stamps) else (0, 0)
    boundaries = np.linspace(float(t_min), float(t_max), num_time_buckets)
    mean = float(stamps[0].mean()) if len(stamps[0]) else 0.0
    std = float(stamps[0].std()) if len(stamps[0]) else 0.0
    std = std if std > 0 else 1.0

    user_lookup = pd.Index(user_vocab)
    item_lookup = pd.Index(item_vocab)
    encoded: list[Interactions] = []
    for frame, ts in zip(frames, stamps, strict=True):
        same = [e for f, e in zip(frames, encoded, strict=False) if f is frame]
        if same:
            encoded.append(same[0])
            continue
        user = user_lookup.get_indexer(frame["user_id"].astype("str"))
        item = item_lookup.get_indexer(frame["item_id"].astype("str"))
        encoded.append(
            Interactions(
                user=_readonly(np.where(user < 0, 0, user).astype(np.int32)),
                time_bucket=_readonly(
                    np.searchsorted(boundaries, ts.astype(np.float64), side="right").astype(np.int32)
                ),
                time_norm=_readonly(((ts - mean) / std).astype(np.float32)),
                item=_readonly(np.where(item < 0, 0, item).astype(np.int32)),
                rating=_readonly(
                    frame["rating"].to_numpy(dtype=np.float32)
                    if "rating" in frame.columns
                    else np.ones(len(frame), np.float32)
                ),
            )
        )
    train, valid, test = encoded
    item_train_counts = np.bincount(train.item, minlength=len(item_vocab)).astype(np.int64)
    user_train_counts = np.bincount(train.user, minlength=len(user_vocab)).astype(np.int64)

    digest = hashlib.sha256()
    digest.update(f"protocol={splits.protocol}\n".encode())
    digest.update("\x1f".join(user_vocab).encode())
    digest.update("\x1e".join(item_vocab).encode())
    for name, part, ts in zip(names, encoded, stamps, strict=True):
        digest.update(f"\n{name}:{len(part)}\n".encode())
        for arr in (part.user, part.item, ts):
            digest.update(np.ascontiguousarray(arr).tobytes())
    info = {
        "dataset": dataset,
        "protocol": splits.protocol,
        "seed": splits.seed,
        "rows": {name: len(part) for name, part in zip(names, encoded, strict=True)},
        "num_interactions": int(sum(len(f) for f in distinct)),
        "num_users": len(user_vocab),
        "num_items": len(item_vocab),
        "num_rated_items": int(np.count_nonzero(np.bincount(np.concatenate([e.item for e in encoded])))),
        "num_title_tokens": len(token_vocab),
        "max_title_len": int(title_tokens.shape[1]),
        "num_genres": len(genre_vocab),
        "timestamp_min": t_min,
        "timestamp_max": t_max,
        "time_mean": mean,
        "time_std": std,
        "has_ratings": splits.has_ratings,
    }
    return EncodedData(
        train=train,
        valid=valid,
        test=test,
        item_vocab=item_vocab,
        user_vocab=user_vocab,
        titles=titles,
        title_tokens=_readonly(title_tokens),
        genres=_readonly(genres),
        token_vocab=token_vocab,
        genre_vocab=genre_vocab,
        num_time_buckets=num_time_buckets + 1,
        item_train_counts=_readonly(item_train_counts),
        user_train_counts=_readonly(user_train_counts),
        protocol=splits.protocol,
        dataset=dataset,
        data_hash=digest.hexdigest()[:16],
        info=info,
    )


def _pad(rows: list[list[int]]) -> np.ndarray:
    """Ragged id lists → int32 [len(rows), max(1, longest)] padded with 0."""
    width = max([1, *(len(r) for r in rows)])
    out = np.zeros((len(rows), width), dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _readonly(arr: np.ndarray) -> np.ndarray:
    """Mark an array read-only: encoded data is cached and shared between trials."""
    arr.flags.writeable = False
    return arr


# ------------------------------------------------------------------------------------------ one call


def load(
    spec: str = "embedded",
    protocol: str = "random",
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    columns: Mapping[str, str] | None = None,
    num_time_buckets: int = 1000,
) -> EncodedData:
    """``load_table`` → ``split_table`` → ``encode``, cached in-process (the last few argument sets).

    The cache key includes the size and modification time of the source files, so edited files are reloaded.
    Arrays of the result are read-only because the result is shared.

    Args:
        spec: see ``load_table``.
        protocol: see ``split_table``.
        fractions: see ``split_table``.
        seed: see ``split_table``.
        columns: see ``load_table`` (csv only).
        num_time_buckets: see ``encode``.

    Returns:
        The encoded data.

    Raises:
        DataError: bad source, or too little data: an empty validation or test split, or a training split with
            fewer than ``MIN_TRAIN_ROWS`` rows, ``MIN_TRAIN_USERS`` users or ``MIN_TRAIN_ITEMS`` items.
        ConfigError: bad spec form, protocol, fractions or bucket count.
    """
    try:
        frac_key = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ConfigError(f"fractions={fractions!r}: need 3 numbers (train, valid, test) summing to 1") from None
    key = (
        spec,
        protocol,
        frac_key,
        seed,
        tuple(sorted((columns or {}).items())),
        num_time_buckets,
        _source_stamp(spec),
    )
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    table = load_table(spec, columns=columns)
    splits = split_table(table, protocol, fractions=fractions, seed=seed)
    _check_splits(splits, spec, fractions)
    data = encode(splits, num_time_buckets=num_time_buckets, dataset=spec)
    _cache[key] = data
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return data


def clear_cache() -> None:
    """Forget the results cached by ``load``."""
    _cache.clear()


def _source_stamp(spec: str) -> tuple[Any, ...]:
    """(name, size, mtime) of the files behind a path spec, so that edits invalidate the cache."""
    kind, _, arg = spec.partition(":")
    if kind not in ("grouplens", "csv") or not arg.strip():
        return ()
    path = Path(arg.strip()).expanduser()
    try:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    except OSError:
        return ()
