"""The turns table: validation at the edge names the bad column and value; IO round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gap.errors import InputError
from gap.game import Pool, Verdict
from gap.quality import encode_turns, read_table, read_turns, validate_turns, write_table


def table(**overrides: object) -> pd.DataFrame:
    base: dict[str, object] = {
        "turn_id": ["t1", "t2", "t3"],
        "player_id": ["p1", "p1", "p2"],
        "image_id": ["i1", "i2", "i1"],
        "pool": ["tainted", "untainted", "untainted"],
        "instructed": [1, 0, 0],
        "verdict": ["wrong", "correct", "wrong"],
        "elapsed_s": [3.0, 10.5, 40.0],
        "round_index": [1, 2, 1],
        "question_index": [1, 1, 2],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_encode_gives_codes() -> None:
    enc = encode_turns(table())
    assert enc.n == 3
    assert list(enc.players[enc.player]) == ["p1", "p1", "p2"]
    assert enc.untainted.tolist() == [False, True, True]
    assert enc.wrong.tolist() == [True, False, True]
    assert enc.instructed.tolist() == [True, False, False]


def test_enums_booleans_and_categoricals_are_accepted() -> None:
    t = table(
        pool=[Pool.TAINTED, Pool.UNTAINTED, Pool.UNTAINTED],
        verdict=pd.Categorical(
            [Verdict.WRONG.value, "correct", "wrong"], categories=["correct", "wrong", "x"]
        ),
        instructed=[True, False, False],
    )
    enc = encode_turns(t)
    assert enc.wrong.tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pool": ["tainted", "Untainted", "untainted"]}, r"'pool' has value 'Untainted' at row 1"),
        ({"verdict": ["wrong", "maybe", "wrong"]}, r"'verdict' has value 'maybe'"),
        ({"verdict": ["wrong", None, "wrong"]}, r"'verdict' has a missing value at row 1"),
        ({"instructed": [1, 2, 0]}, r"'instructed' must be 0 or 1, got 2"),
        ({"instructed": [1, 1, 0]}, r"'instructed' is 1 on an untainted turn at row 1"),
        ({"player_id": ["p1", None, "p2"]}, r"'player_id' has a missing value at row 1"),
        ({"elapsed_s": [1.0, -2.0, 3.0]}, r"'elapsed_s' must be a number >= 0, got -2.0"),
        ({"round_index": [1, 1.5, 2]}, r"'round_index' must be an integer >= 1"),
        ({"turn_id": ["t1", "t1", "t3"]}, r"'turn_id' repeats 't1'"),
    ],
)
def test_validation_names_the_bad_column_and_value(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_turns(table(**overrides))


def test_missing_columns_are_listed() -> None:
    with pytest.raises(InputError, match="missing column\\(s\\) pool, verdict"):
        encode_turns(table().drop(columns=["pool", "verdict"]))


def test_not_a_frame() -> None:
    with pytest.raises(InputError, match="DataFrame"):
        encode_turns([1, 2])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_keeps_hex_ids_as_strings(tmp_path: Path, suffix: str) -> None:
    t = table(player_id=["1e5", "00ab", "1e5"], turn_id=["10", "011", "12"])
    path = write_table(t, tmp_path / f"sub/turns{suffix}")
    back = read_turns(path)
    assert back["player_id"].tolist() == ["1e5", "00ab", "1e5"]
    assert back["turn_id"].tolist() == ["10", "011", "12"]
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


def test_bad_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown table format '\.txt'"):
        write_table(table(), tmp_path / "x.txt")
    with pytest.raises(InputError, match="no such file"):
        read_table(tmp_path / "absent.csv")


def test_read_turns_needs_turn_id(tmp_path: Path) -> None:
    path = write_table(table().drop(columns=["turn_id"]), tmp_path / "t.csv")
    with pytest.raises(InputError, match="needs a 'turn_id' column"):
        read_turns(path)


def test_unused_categories_are_dropped() -> None:
    t = table(player_id=pd.Categorical(["p1", "p1", "p2"], categories=["p0", "p1", "p2"]))
    enc = encode_turns(t)
    assert list(enc.players) == ["p1", "p2"]
    assert np.array_equal(enc.player, [0, 0, 1])
