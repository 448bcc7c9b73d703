"""Tests of study.data: sources → canonical table → splits → encoded arrays."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study import data as D
from study.errors import ConfigError, DataError

CANONICAL = ["user_id", "item_id", "title", "timestamp", "genres", "rating"]

# The same 6 ratings and 5 movies are in each GroupLens fixture format (movie 4 is never rated).
EXPECTED_ROWS = [
    ("1", "1", "Toy Story (1995)", 964982703, ["Animation", "Comedy"], 4.0),
    ("1", "3", "Shawshank Redemption, The (1994)", 964981247, ["Crime", "Drama"], 5.0),
    ("2", "2", "Café Society (1995)", 964983815, ["Drama"], 3.0),
    ("2", "5", "Untitled Genres (2001)", 964982931, [], 2.0),
    ("3", "1", "Toy Story (1995)", 964984000, ["Animation", "Comedy"], 5.0),
    ("3", "2", "Café Society (1995)", 964980000, ["Drama"], 1.0),
]
EXPECTED_ITEMS = [
    ("1", "Toy Story (1995)", ["Animation", "Comedy"]),
    ("2", "Café Society (1995)", ["Drama"]),
    ("3", "Shawshank Redemption, The (1994)", ["Crime", "Drama"]),
    ("4", "Unrated Movie (2000)", ["Comedy"]),
    ("5", "Untitled Genres (2001)", []),
]
CSV_COLUMNS = {
    "user_id": "uid",
    "item_id": "iid",
    "timestamp": "when",
    "rating": "score",
    "title": "name",
    "genres": "tags",
}


def rows(table: pd.DataFrame) -> list[tuple]:
    return [
        (r.user_id, r.item_id, r.title, int(r.timestamp), list(r.genres), float(r.rating))
        for r in table.itertuples(index=False)
    ]


def check_schema(table: pd.DataFrame) -> None:
    assert list(table.columns) == CANONICAL
    assert table["timestamp"].dtype == np.int64
    assert table["rating"].dtype == np.float32
    for column in ("user_id", "item_id", "title"):
        assert all(isinstance(v, str) for v in table[column]), column
    assert all(isinstance(g, list) and all(isinstance(x, str) for x in g) for g in table["genres"])
    items = table.attrs["items"]
    assert list(items.columns) == ["item_id", "title", "genres"]
    assert items["item_id"].is_unique


def tiny_table() -> pd.DataFrame:
    """4 interactions, 3 users, 3 items (i3 never rated), for hand-worked encoding values."""
    table = pd.DataFrame(
        {
            "user_id": ["u2", "u1", "u1", "u3"],
            "item_id": ["i1", "i2", "i1", "i2"],
            "title": [
                "Matrix, The: Reloaded! (2003)",
                "The Matrix (1999)",
                "Matrix, The: Reloaded! (2003)",
                "The Matrix (1999)",
            ],
            "timestamp": np.array([100, 200, 300, 400], dtype=np.int64),
            "genres": [["Action"], ["Action", "Sci-Fi"], ["Action"], ["Action", "Sci-Fi"]],
            "rating": np.ones(4, dtype=np.float32),
        }
    )
    table.attrs["items"] = pd.DataFrame(
        {
            "item_id": ["i2", "i1", "i3"],
            "title": ["The Matrix (1999)", "Matrix, The: Reloaded! (2003)", "Zebra's Café"],
            "genres": [["Action", "Sci-Fi"], ["Action"], []],
        }
    )
    return table


def copy_fixture(fixtures_dir: Path, name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(fixtures_dir / name, target)
    return target


# ------------------------------------------------------------------------------------------- sources


@pytest.mark.parametrize("layout", ["ml-100k", "ml-1m", "ml-latest"])
def test_grouplens_formats_load_to_the_same_canonical_table(fixtures_dir: Path, layout: str) -> None:
    table = D.load_table(f"grouplens:{fixtures_dir / layout}")
    check_schema(table)
    assert rows(table) == EXPECTED_ROWS
    items = table.attrs["items"]
    assert [(r.item_id, r.title, list(r.genres)) for r in items.itertuples(index=False)] == EXPECTED_ITEMS


def test_csv_source_with_column_mapping_and_iso_dates(fixtures_dir: Path) -> None:
    table = D.load_table(f"csv:{fixtures_dir / 'interactions.csv'}", columns=CSV_COLUMNS)
    check_schema(table)
    assert rows(table) == [
        ("alice", "a", "Alpha, The", 1577836800, ["X", "Y"], 5.0),  # 2020-01-01T00:00:00 (naive = UTC)
        ("alice", "b", "Beta", 1577923200, [], 3.5),  # 2020-01-02
        ("bob", "a", "Alpha, The", 1577836810, ["X", "Y"], 1.0),
        ("bob", "c", "Gamma", 1577836800, [], 2.0),  # 01:00+01:00 == 00:00Z
    ]
    assert table.attrs["items"]["item_id"].tolist() == ["a", "b", "c"]


def test_csv_defaults_title_is_item_and_rating_is_one(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("user_id,item_id,timestamp,extra\nu,x,10,?\nv,y,20,?\n", encoding="utf-8")
    table = D.load_table(f"csv:{path}")
    assert rows(table) == [("u", "x", "x", 10, [], 1.0), ("v", "y", "y", 20, [], 1.0)]


def test_embedded_dataset(embedded_table: pd.DataFrame) -> None:
    check_schema(embedded_table)
    assert len(embedded_table) == 100836
    assert embedded_table["user_id"].nunique() == 610
    items = embedded_table.attrs["items"]
    assert len(items) == 9742
    first = embedded_table.iloc[0]
    assert (first.user_id, first.item_id, first.title, int(first.timestamp), float(first.rating)) == (
        "1",
        "1",
        "Toy Story (1995)",
        964982703,
        4.0,
    )
    assert first.genres == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert not any("(no genres listed)" in g for g in items["genres"])
    assert (items["genres"].map(len) == 0).sum() == 34  # the 34 movies with "(no genres listed)"


def test_importing_study_data_does_not_import_tensorflow() -> None:
    code = "import sys, study.data; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tfds_source_with_mock_data() -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        table = D.load_table("tfds:movielens/100k-ratings")
        genre_names = set(tfds.builder("movielens/100k-ratings").info.features["movie_genres"].feature.names)
    check_schema(table)
    assert len(table) == 12
    items = table.attrs["items"]
    # all rated items are candidates, plus the (mock) movies of movielens/100k-movies
    assert set(table["item_id"]) <= set(items["item_id"])
    assert len(items) > table["item_id"].nunique()
    genres = {g for gs in items["genres"] for g in gs}
    assert genres and genres <= genre_names - {"(no genres listed)"}
    assert all(len(gs) == len(set(gs)) for gs in items["genres"])
    data = D.encode(D.split_table(table), dataset="tfds:movielens/100k-ratings")
    assert data.num_items == len(items) + 1
    assert len(data.train) + len(data.valid) + len(data.test) == 12


def test_tfds_load_failure_is_a_one_line_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Failed to resolve files.grouplens.org\nmore detail")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(DataError) as err:
        D.load_table("tfds:movielens/100k-ratings")
    message = str(err.value)
    assert message.startswith("tfds:movielens/100k-ratings: could not load (ConnectionError: Failed to resolve")
    assert "TFDS_DATA_DIR" in message and "\n" not in message


# ------------------------------------------------------------------------------------------ bad input


def error_for(spec: str, **kwargs: object) -> str:
    with pytest.raises(DataError) as err:
        D.load_table(spec, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_unknown_spec_lists_valid_forms() -> None:
    for spec in ("kaggle:foo", "movielens", "csv:", ""):
        assert "embedded, grouplens:PATH, tfds:NAME, csv:PATH" in error_for(spec)


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert str(missing) in error_for(f"grouplens:{missing}")
    assert str(missing / "x.csv") in error_for(f"csv:{missing / 'x.csv'}")


def test_unknown_layout_lists_files_looked_for(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n", encoding="utf-8")
    message = error_for(f"grouplens:{tmp_path}")
    assert str(tmp_path) in message
    for name in ("u.data", "ratings.dat", "movies.csv"):
        assert name in message


def test_missing_column(fixtures_dir: Path, tmp_path: Path) -> None:
    d = copy_fixture(fixtures_dir, "ml-latest", tmp_path)
    (d / "ratings.csv").write_text("userId,itemId,rating,timestamp\n1,1,4.0,5\n", encoding="utf-8")
    message = error_for(f"grouplens:{d}")
    assert str(d / "ratings.csv") in message and "'movieId'" in message and "itemId" in message

    message = error_for(f"csv:{fixtures_dir / 'interactions.csv'}", columns={**CSV_COLUMNS, "rating": "stars"})
    assert "interactions.csv" in message and "'stars'" in message and "uid,iid,when" in message
    message = error_for(f"csv:{fixtures_dir / 'interactions.csv'}")  # default user_id column absent
    assert "'user_id'" in message


def test_empty_files(fixtures_dir: Path, tmp_path: Path) -> None:
    d = copy_fixture(fixtures_dir, "ml-latest", tmp_path)
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n", encoding="utf-8")
    assert "no interactions" in error_for(f"grouplens:{d}")
    (d / "ratings.csv").write_bytes(b"")
    message = error_for(f"grouplens:{d}")
    assert str(d / "ratings.csv") in message and "empty" in message
    d = copy_fixture(fixtures_dir, "ml-1m", tmp_path)
    (d / "ratings.dat").write_bytes(b"\n")
    assert str(d / "ratings.dat") in error_for(f"grouplens:{d}")


@pytest.mark.parametrize(
    "content",
    [
        "userId,movieId,rating,timestamp\n1,1,4.0,5\n".encode("utf-16"),
        bytes(range(256)) * 4,
    ],
    ids=["utf16", "binary"],
)
def test_binary_or_utf16_file(fixtures_dir: Path, tmp_path: Path, content: bytes) -> None:
    d = copy_fixture(fixtures_dir, "ml-latest", tmp_path)
    (d / "ratings.csv").write_bytes(content)
    assert str(d / "ratings.csv") in error_for(f"grouplens:{d}")


def test_latin1_bytes_in_a_utf8_format(fixtures_dir: Path, tmp_path: Path) -> None:
    d = copy_fixture(fixtures_dir, "ml-latest", tmp_path)
    (d / "movies.csv").write_bytes((fixtures_dir / "ml-latest" / "movies.csv").read_text("utf-8").encode("latin-1"))
    message = error_for(f"grouplens:{d}")
    assert str(d / "movies.csv") in message and "UTF-8" in message


@pytest.mark.parametrize(
    ("layout", "file", "old", "new", "column", "line"),
    [
        ("ml-latest", "ratings.csv", "1,3,5.0,", "1,3,five,", "column 'rating' has a non-numeric value 'five'", 3),
        ("ml-latest", "ratings.csv", ",964982703", ",9649827.5", "column 'timestamp' has a non-integer value", 2),
        ("ml-1m", "ratings.dat", "::3::5::", "::3::x::", "column 'Rating' has a non-numeric value 'x'", 2),
        ("ml-100k", "u.data", "\t964984000", "\tlate", "column 'timestamp' has a non-integer value 'late'", 5),
    ],
)
def test_non_numeric_values(
    fixtures_dir: Path, tmp_path: Path, layout: str, file: str, old: str, new: str, column: str, line: int
) -> None:
    d = copy_fixture(fixtures_dir, layout, tmp_path)
    text = (d / file).read_text("latin-1")
    assert old in text
    (d / file).write_text(text.replace(old, new), encoding="latin-1")
    message = error_for(f"grouplens:{d}")
    assert message.startswith(f"{d / file}: {column}") and f"on line {line};" in message


def test_rated_item_missing_from_item_file(fixtures_dir: Path, tmp_path: Path) -> None:
    d = copy_fixture(fixtures_dir, "ml-latest", tmp_path)
    with (d / "ratings.csv").open("a", encoding="utf-8") as fh:
        fh.write("3,999,4.0,964982703\n")
    assert "ratings.csv: 1 item ids not in movies.csv (e.g. 999)" in error_for(f"grouplens:{d}")


def test_wrong_field_count(fixtures_dir: Path, tmp_path: Path) -> None:
    d = copy_fixture(fixtures_dir, "ml-1m", tmp_path)
    (d / "ratings.dat").write_text("1::1::4\n", encoding="latin-1")
    message = error_for(f"grouplens:{d}")
    assert str(d / "ratings.dat") in message and "expected 4 fields" in message


def test_bad_csv_dates(fixtures_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "dates.csv"
    path.write_text("user_id,item_id,timestamp\nu,x,2020-01-01\nu,y,yesterday\n", encoding="utf-8")
    message = error_for(f"csv:{path}")
    assert str(path) in message and "'timestamp'" in message and "'yesterday'" in message


def test_column_mapping_errors(fixtures_dir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'userid'"):
        D.load_table(f"csv:{fixtures_dir / 'interactions.csv'}", columns={"userid": "uid"})
    with pytest.raises(ConfigError, match="csv:PATH"):
        D.load_table("embedded", columns={"user_id": "uid"})


# -------------------------------------------------------------------------------------------- splits


def test_random_split_sizes_disjoint_and_seeded(embedded_table: pd.DataFrame) -> None:
    table = embedded_table.assign(row=np.arange(len(embedded_table)))
    splits = D.split_table(table, "random", fractions=(0.8, 0.1, 0.1), seed=42)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (80669, 10083, 10084)
    parts = [set(s["row"]) for s in (splits.train, splits.valid, splits.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set.union(*parts) == set(range(len(table)))
    assert len(splits.items) == 9742 and splits.train.attrs == {}
    pd.concat([splits.train, splits.valid])  # split frames must be concat-able (no DataFrame attrs)
    again = D.split_table(table, "random", seed=42)
    other = D.split_table(table, "random", seed=7)
    assert again.train["row"].tolist() == splits.train["row"].tolist()
    assert other.train["row"].tolist() != splits.train["row"].tolist()


def test_temporal_split_orders_by_time_with_stable_ties() -> None:
    table = pd.DataFrame(
        {
            "user_id": list("abcdefghij"),
            "item_id": ["x"] * 10,
            "timestamp": np.array([5, 1, 3, 3, 9, 2, 3, 8, 7, 6], dtype=np.int64),
        }
    )
    splits = D.split_table(table, "temporal", fractions=(0.5, 0.2, 0.3), seed=1)
    assert splits.train["user_id"].tolist() == ["b", "f", "c", "d", "g"]  # 1, 2, 3, 3, 3 (ties in table order)
    assert splits.valid["user_id"].tolist() == ["a", "j"]  # 5, 6
    assert splits.test["user_id"].tolist() == ["i", "h", "e"]  # 7, 8, 9
    assert splits.protocol == "temporal"


def test_temporal_split_of_embedded(embedded_table: pd.DataFrame) -> None:
    splits = D.split_table(embedded_table, "temporal")
    assert splits.train["timestamp"].max() <= splits.valid["timestamp"].min()
    assert splits.valid["timestamp"].max() <= splits.test["timestamp"].min()


def test_tutorial_protocol_is_80_20_with_valid_as_test() -> None:
    n = 100_000
    table = pd.DataFrame({"user_id": np.arange(n).astype(str), "item_id": "x", "timestamp": np.arange(n)})
    splits = D.split_table(table, "tutorial", fractions=(0.5, 0.25, 0.25))  # fractions do not apply
    assert (len(splits.train), len(splits.test)) == (80_000, 20_000)
    assert splits.valid is splits.test and splits.protocol == "tutorial"
    assert not set(splits.train["user_id"]) & set(splits.test["user_id"])
    data = D.encode(splits)
    assert data.valid is data.test


@pytest.mark.parametrize(
    "fractions", [(0.5, 0.5), (0.9, 0.2, -0.1), (0.0, 0.5, 0.5), (0.8, 0.1, 0.2), ("a", "b", "c"), None]
)
def test_bad_fractions(fractions: object) -> None:
    with pytest.raises(ConfigError, match="fractions="):
        D.split_table(tiny_table(), "random", fractions=fractions)  # type: ignore[arg-type]


def test_zero_valid_fraction_is_allowed() -> None:
    splits = D.split_table(tiny_table(), "random", fractions=(0.75, 0.0, 0.25))
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (3, 0, 1)
    assert len(D.encode(splits).valid) == 0


def test_unknown_protocol() -> None:
    with pytest.raises(ConfigError, match="'leave-one-out'.*random, temporal, tutorial"):
        D.split_table(tiny_table(), "leave-one-out")


# ------------------------------------------------------------------------------------------ encoding


def test_encoding_hand_worked_values() -> None:
    splits = D.split_table(tiny_table(), "temporal", fractions=(0.5, 0.25, 0.25))
    data = D.encode(splits, num_time_buckets=3, dataset="tiny")
    assert data.user_vocab == ["[UNK]", "u1", "u2", "u3"]
    assert data.item_vocab == ["[UNK]", "i1", "i2", "i3"]
    assert data.titles == ["", "Matrix, The: Reloaded! (2003)", "The Matrix (1999)", "Zebra's Café"]
    # counts: matrix 2, the 2, then 1 each, ties alphabetical; punctuation (incl. ') stripped
    assert data.token_vocab == ["", "[UNK]", "matrix", "the", "1999", "2003", "café", "reloaded", "zebras"]
    np.testing.assert_array_equal(data.title_tokens, [[0, 0, 0, 0], [2, 3, 7, 5], [3, 2, 4, 0], [8, 6, 0, 0]])
    assert data.genre_vocab == ["", "[UNK]", "Action", "Sci-Fi"]
    np.testing.assert_array_equal(data.genres, [[0, 0], [2, 0], [2, 3], [0, 0]])
    # temporal: train = t100 (u2, i1), t200 (u1, i2); valid = t300 (u1, i1); test = t400 (u3, i2)
    np.testing.assert_array_equal(data.train.user, [2, 1])
    np.testing.assert_array_equal(data.train.item, [1, 2])
    np.testing.assert_array_equal(data.valid.user, [1])
    np.testing.assert_array_equal(data.test.item, [2])
    # boundaries linspace(100, 400, 3) = [100, 250, 400]; min → 1, max → 3 (= num_time_buckets)
    np.testing.assert_array_equal(data.train.time_bucket, [1, 1])
    np.testing.assert_array_equal(data.valid.time_bucket, [2])
    np.testing.assert_array_equal(data.test.time_bucket, [3])
    assert data.num_time_buckets == 4
    # train mean 150, std 50
    np.testing.assert_allclose(data.train.time_norm, [-1.0, 1.0])
    np.testing.assert_allclose(data.valid.time_norm, [3.0])
    np.testing.assert_allclose(data.test.time_norm, [5.0])
    np.testing.assert_array_equal(data.item_train_counts, [0, 1, 1, 0])
    np.testing.assert_array_equal(data.user_train_counts, [0, 1, 1, 0])
    for part in (data.train, data.valid, data.test):
        assert (part.user.dtype, part.item.dtype, part.time_bucket.dtype, part.time_norm.dtype) == (
            np.int32,
            np.int32,
            np.int32,
            np.float32,
        )
    assert data.title_tokens.dtype == np.int32 and data.genres.dtype == np.int32
    assert data.item_train_counts.dtype == np.int64
    assert data.has_genres and data.dataset == "tiny" and data.protocol == "temporal"
    assert data.info["rows"] == {"train": 2, "valid": 1, "test": 1}
    assert len(data.data_hash) == 16 and int(data.data_hash, 16) >= 0


def test_time_buckets_at_boundaries_and_constant_time() -> None:
    table = tiny_table()
    data = D.encode(D.split_table(table, "temporal", fractions=(0.5, 0.25, 0.25)), num_time_buckets=4)
    # boundaries [100, 200, 300, 400]: a value equal to a boundary goes to the bucket above it
    np.testing.assert_array_equal(data.train.time_bucket, [1, 2])
    np.testing.assert_array_equal(data.test.time_bucket, [4])
    flat = table.assign(timestamp=np.full(4, 7, dtype=np.int64))
    data = D.encode(D.split_table(flat, "temporal", fractions=(0.5, 0.25, 0.25)), num_time_buckets=5)
    np.testing.assert_array_equal(data.train.time_norm, [0.0, 0.0])  # std 0 → 1
    np.testing.assert_array_equal(data.test.time_bucket, [5])


def test_title_token_cap_maps_rare_words_to_oov() -> None:
    data = D.encode(D.split_table(tiny_table(), "temporal", fractions=(0.5, 0.25, 0.25)), max_title_tokens=5)
    assert data.token_vocab == ["", "[UNK]", "matrix", "the", "1999"]
    np.testing.assert_array_equal(data.title_tokens, [[0, 0, 0, 0], [2, 3, 1, 1], [3, 2, 4, 0], [1, 1, 0, 0]])


def test_tokenize_matches_keras_text_vectorization() -> None:
    tf_keras = pytest.importorskip("tf_keras")
    titles = [
        "Shawshank Redemption, The (1994)",
        "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1964)",
        "Café\xa0Society  (ÉTÉ) [x]_y {z} ~w~ #1 50% $5 a+b=c 'quoted' \"q\" l'amour",
        "Se7en (a.k.a. Seven) - \\ / | ^ @ ` ;",
    ]
    layer = tf_keras.layers.TextVectorization()
    layer.adapt(titles)
    expected = {str(t) for t in layer.get_vocabulary()[1:]}  # drop "" (padding); [UNK] stays out of tokens
    expected.discard("[UNK]")
    assert {tok for title in titles for tok in D.tokenize(title)} == expected
    assert D.tokenize("ÉTÉ Été") == ["ÉtÉ", "Été"]  # ASCII-only lower-casing, like tf.strings.lower


def test_oov_rows_and_unrated_items_are_candidates(fixtures_dir: Path) -> None:
    data = D.encode(D.split_table(D.load_table(f"grouplens:{fixtures_dir / 'ml-latest'}")))
    assert data.item_vocab == ["[UNK]", "1", "2", "3", "4", "5"]
    assert data.titles[0] == "" and not data.title_tokens[0].any() and not data.genres[0].any()
    assert data.titles[4] == "Unrated Movie (2000)" and data.title_tokens[4].any()
    assert not data.genres[5].any()  # "(no genres listed)"
    assert data.info["num_rated_items"] == 4


def test_data_hash_depends_on_data_and_split() -> None:
    table = tiny_table()

    def digest(**kwargs: object) -> str:
        return D.encode(D.split_table(table, **kwargs)).data_hash  # type: ignore[arg-type]

    assert digest(seed=1) == digest(seed=1)
    assert digest(seed=1) != digest(seed=2)
    assert digest(protocol="temporal") != digest(protocol="random")
    changed = table.assign(timestamp=table["timestamp"] + 1)
    assert D.encode(D.split_table(changed, seed=1)).data_hash != digest(seed=1)


def test_bad_encoding_settings() -> None:
    splits = D.split_table(tiny_table())
    with pytest.raises(ConfigError, match="num_time_buckets"):
        D.encode(splits, num_time_buckets=0)
    with pytest.raises(ConfigError, match="max_title_tokens"):
        D.encode(splits, max_title_tokens=1)


# ---------------------------------------------------------------------------------------------- load


def test_load_embedded_is_cached_and_read_only() -> None:
    D.clear_cache()
    data = D.load("embedded")
    assert data.num_users == 611 and data.num_items == 9743
    assert len(data.train) + len(data.valid) + len(data.test) == 100836
    assert D.load("embedded") is data
    assert D.load("embedded", seed=1) is not data
    with pytest.raises(ValueError):
        data.train.item[0] = 5
    D.clear_cache()
    fresh = D.load("embedded")
    assert fresh is not data and fresh.data_hash == data.data_hash


def write_interactions(path: Path, n: int, *, users: int = 3, items: int = 4, last_item: str | None = None) -> Path:
    """A csv: source of ``n`` interactions, user ``u{i % users}`` rates item ``i{i % items}`` at time ``i``."""
    lines = [f"u{i % users},i{i % items},{i}" for i in range(n)]
    if last_item is not None:
        lines[-1] = f"u{(n - 1) % users},{last_item},{n - 1}"
    path.write_text("user_id,item_id,timestamp\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_reloads_an_edited_file(tmp_path: Path) -> None:
    path = write_interactions(tmp_path / "x.csv", 20)
    first = D.load(f"csv:{path}")
    write_interactions(path, 20, last_item="d")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = D.load(f"csv:{path}")
    assert second is not first and "d" in second.item_vocab


# ----------------------------------------------------------------------------------------- too little data


def too_little(spec: str, **kwargs: object) -> str:
    """The one-line DataError of ``load`` for data too small to train on or score."""
    D.clear_cache()
    with pytest.raises(DataError) as err:
        D.load(spec, **kwargs)  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{spec}: the ")
    assert (
        f"at least {D.MIN_TRAIN_ROWS} training rows from {D.MIN_TRAIN_USERS} users and {D.MIN_TRAIN_ITEMS} items"
        in (message)
    )
    return message


@pytest.mark.parametrize("protocol", ["random", "temporal", "tutorial"])
def test_one_row_csv_is_refused(tmp_path: Path, protocol: str) -> None:
    spec = f"csv:{write_interactions(tmp_path / 'tiny.csv', 1)}"
    message = too_little(spec, protocol=protocol)
    if protocol == "tutorial":  # validation is the test split
        found = "1 training row (1 user, 1 item) and 0 validation/test rows;"
        assert found in message and "and 1 validation/test row;" in message
    else:
        found = "1 training row (1 user, 1 item), 0 validation rows and 0 test rows;"
        assert found in message and "and 1 validation row and 1 test row;" in message
    assert f"the {protocol} split leaves " in message and message.endswith("; use a larger data set")


def test_one_user_or_one_item_is_refused(tmp_path: Path) -> None:
    one_user = write_interactions(tmp_path / "one_user.csv", 40, users=1, items=5)
    message = too_little(f"csv:{one_user}")
    assert "32 training rows (1 user, 5 items), 4 validation rows and 4 test rows;" in message
    assert message.endswith("; use data with more distinct users and items")
    one_item = write_interactions(tmp_path / "one_item.csv", 40, users=5, items=1)
    assert "32 training rows (5 users, 1 item), 4 validation rows and 4 test rows;" in too_little(f"csv:{one_item}")


def test_empty_validation_split_is_refused(fixtures_dir: Path, tmp_path: Path) -> None:
    # the 6-rating GroupLens fixture: the default 80/10/10 split rounds to 5/0/1
    message = too_little(f"grouplens:{fixtures_dir / 'ml-latest'}")
    assert "5 training rows (3 users, 4 items), 0 validation rows and 1 test row;" in message
    # enough training data, but a zero validation fraction: the message names the fraction as the cause
    spec = f"csv:{write_interactions(tmp_path / 'x.csv', 40)}"
    message = too_little(spec, fractions=(0.9, 0.0, 0.1))
    assert "36 training rows (3 users, 4 items), 0 validation rows and 4 test rows;" in message
    assert message.endswith("; give the validation split a non-zero fraction (fractions=(0.9, 0.0, 0.1))")


def test_smallest_accepted_data(tmp_path: Path) -> None:
    # 13 rows split 10/2/1 under the default fractions: exactly the minimums pass
    data = D.load(f"csv:{write_interactions(tmp_path / 'x.csv', 13, users=D.MIN_TRAIN_USERS, items=2)}")
    assert (len(data.train), len(data.valid), len(data.test)) == (D.MIN_TRAIN_ROWS, 2, 1)
    assert np.count_nonzero(data.user_train_counts) == 2 and np.count_nonzero(data.item_train_counts) == 2
    with pytest.raises(DataError, match="9 training rows"):
        D.load(f"csv:{write_interactions(tmp_path / 'y.csv', 12)}", fractions=(0.75, 0.125, 0.125))


def test_cli_run_on_a_one_row_csv_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from study import cli

    monkeypatch.chdir(tmp_path)
    write_interactions(tmp_path / "tiny.csv", 1)
    rc = cli.main(["run", "--trials", "1", "--space", "quick", "--dataset", "csv:tiny.csv"])
    out, err = capsys.readouterr()
    assert rc == 1 and "top100" not in out
    assert err.strip() == "error: " + (
        "csv:tiny.csv: the random split leaves 1 training row (1 user, 1 item), 0 validation rows and 0 test rows; "
        f"training and scoring need at least {D.MIN_TRAIN_ROWS} training rows from {D.MIN_TRAIN_USERS} users and "
        f"{D.MIN_TRAIN_ITEMS} items, and 1 validation row and 1 test row; use a larger data set"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.csv"]  # no study database, nothing written
