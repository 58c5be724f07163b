"""The turns table: GAP's interchange format between the database, the simulator and the estimators.

One row per judged turn (crowd-kit's long-table habit). Required columns:

=============== ==========================================================
``player_id``   who judged the answer
``image_id``    the image of the round
``pool``        ``"tainted"`` or ``"untainted"`` (D)
``instructed``  0/1: the answer was generated under the order to be wrong (I)
``verdict``     ``"correct"`` or ``"wrong"`` (H = 1 or 0)
=============== ==========================================================

Optional: ``turn_id``, ``session_id``, ``elapsed_s`` (seconds into the round when asked),
``round_index`` (1-based image position in the session), ``question_index`` (1-based within the
round) and ``question`` (text, or any key: equal questions on one untainted image are one item).

The table is validated once, at the edge, and turned into integer codes (:class:`EncodedTurns`), so
the estimators work on flat numpy arrays.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from gap._fs import file_mode
from gap.errors import InputError

REQUIRED_COLUMNS: tuple[str, ...] = ("player_id", "image_id", "pool", "instructed", "verdict")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "turn_id",
    "session_id",
    "elapsed_s",
    "round_index",
    "question_index",
    "question",
)
POOLS: tuple[str, str] = ("tainted", "untainted")
VERDICTS: tuple[str, str] = ("correct", "wrong")
_ID_COLUMNS = ("player_id", "image_id", "session_id", "turn_id")

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class EncodedTurns:
    """A validated turns table as integer codes; ``players[player[i]]`` is row i's player id."""

    player: IntArray
    players: pd.Index
    image: IntArray
    images: pd.Index
    untainted: BoolArray
    instructed: BoolArray
    wrong: BoolArray

    @property
    def n(self) -> int:
        return int(self.player.shape[0])


def check_columns(turns: pd.DataFrame, required: Iterable[str] = REQUIRED_COLUMNS) -> None:
    """Raise :class:`InputError` naming the missing columns."""
    if not isinstance(turns, pd.DataFrame):
        raise InputError(f"turns must be a pandas DataFrame, got {type(turns).__name__}")
    missing = [c for c in required if c not in turns.columns]
    if missing:
        raise InputError(
            f"turns table is missing column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, turns.columns))}"
        )


def _first_bad(turns: pd.DataFrame, mask: npt.NDArray[np.bool_]) -> object:
    return _plain(turns.index[int(np.flatnonzero(mask)[0])])


def _plain(value: object) -> object:
    """numpy scalars as Python values, so messages read ``2``, not ``np.int64(2)``."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _labels(turns: pd.DataFrame, column: str, allowed: tuple[str, str]) -> npt.NDArray[np.bool_]:
    """True where the column holds ``allowed[1]``; fast on categoricals, hash-based otherwise."""
    series = turns[column]
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy()
        uniques = pd.Index(series.cat.categories)
    else:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if (codes < 0).any():
        raise InputError(f"column {column!r} has a missing value at row {_first_bad(turns, codes < 0)!r}")
    lookup = np.full(len(uniques) + 1, -1, dtype=np.int8)
    for i, value in enumerate(uniques):
        text = str(value.value if hasattr(value, "value") else value)
        if text not in allowed:
            used = bool((codes == i).any())
            if used:
                row = _first_bad(turns, codes == i)
                raise InputError(
                    f"column {column!r} has value {_plain(value)!r} at row {row!r}; "
                    f"allowed: {', '.join(allowed)}"
                )
            continue
        lookup[i] = allowed.index(text)
    return np.asarray(lookup[codes] == 1, dtype=np.bool_)


def _binary(turns: pd.DataFrame, column: str) -> npt.NDArray[np.bool_]:
    series = turns[column]
    if series.dtype == bool:
        return np.asarray(series.to_numpy(dtype=bool), dtype=np.bool_)
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        row = _first_bad(turns, bad)
        raise InputError(f"column {column!r} must be 0 or 1, got {_plain(series.loc[row])!r} at row {row!r}")
    return np.asarray(values == 1.0, dtype=np.bool_)


def _codes(series: pd.Series, column: str, turns: pd.DataFrame) -> tuple[IntArray, pd.Index]:
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy().astype(np.int64)
        uniques = pd.Index(series.cat.categories)
        if (codes < 0).any():
            raise InputError(f"column {column!r} has a missing value at row {_first_bad(turns, codes < 0)!r}")
        used = np.bincount(codes, minlength=len(uniques)) > 0
        if not used.all():  # drop unused categories so every code has data
            remap = np.cumsum(used) - 1
            return remap[codes].astype(np.int64), uniques[used]
        return codes, uniques
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if (codes < 0).any():
        raise InputError(f"column {column!r} has a missing value at row {_first_bad(turns, codes < 0)!r}")
    return codes.astype(np.int64), pd.Index(uniques)


def encode_turns(turns: pd.DataFrame) -> EncodedTurns:
    """Validate the required columns and return integer codes; raise :class:`InputError` on bad input."""
    check_columns(turns)
    player, players = _codes(turns["player_id"], "player_id", turns)
    image, images = _codes(turns["image_id"], "image_id", turns)
    untainted = _labels(turns, "pool", POOLS)
    wrong = _labels(turns, "verdict", VERDICTS)
    instructed = _binary(turns, "instructed")
    bad = instructed & untainted
    if bad.any():
        raise InputError(
            f"column 'instructed' is 1 on an untainted turn at row {_first_bad(turns, bad)!r}; "
            "only tainted answers can be instructed wrong"
        )
    return EncodedTurns(player, players, image, images, untainted, instructed, wrong)


def numeric_column(
    turns: pd.DataFrame, column: str, *, minimum: float | None = None, integer: bool = False
) -> FloatArray:
    """An optional numeric column as floats; raise :class:`InputError` if absent, missing or out of range."""
    check_columns(turns, (column,))
    values = pd.to_numeric(turns[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if minimum is not None:
        bad |= values < minimum
    if integer:
        bad |= values != np.round(values)
    if bad.any():
        row = _first_bad(turns, bad)
        want = "an integer" if integer else "a number"
        if minimum is not None:
            want += f" >= {minimum:g}"
        got = _plain(turns[column].loc[row])
        raise InputError(f"column {column!r} must be {want}, got {got!r} at row {row!r}")
    return np.asarray(values, dtype=np.float64)


def table_format(path: Path) -> str:
    """``"csv"`` or ``"parquet"`` from the file name; anything else is an input error."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise InputError(f"{path}: unknown table format {suffix!r}; use .csv or .parquet")


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV or Parquet table; id columns stay strings (a hex id must never become a number)."""
    p = Path(path)
    fmt = table_format(p)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        if fmt == "csv":
            return pd.read_csv(p, dtype={c: str for c in (*_ID_COLUMNS, "question")})
        return pd.read_parquet(p)
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read table: {exc}") from exc


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write atomically (temp file, then rename) as CSV or Parquet by extension."""
    p = Path(path)
    fmt = table_format(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    os.fchmod(fd, file_mode())  # the umask's mode, not mkstemp's 0600
    os.close(fd)
    try:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_tables(tables: dict[str, pd.DataFrame], out: str | os.PathLike[str], fmt: str) -> list[Path]:
    """Write each named table as ``out/<name>.<fmt>`` ("csv" or "parquet"); returns the paths."""
    if fmt not in ("csv", "parquet"):
        raise InputError(f"format must be 'csv' or 'parquet', got {fmt!r}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_table(frame, folder / f"{name}.{fmt}") for name, frame in tables.items()]


def validate_turns(turns: pd.DataFrame) -> pd.DataFrame:
    """Check a turns table (required columns and any optional ones present); return it unchanged."""
    encode_turns(turns)
    for column, minimum, integer in (
        ("elapsed_s", 0.0, False),
        ("round_index", 1.0, True),
        ("question_index", 1.0, True),
    ):
        if column in turns.columns:
            numeric_column(turns, column, minimum=minimum, integer=integer)
    if "turn_id" in turns.columns:
        dup = turns["turn_id"].duplicated().to_numpy()
        if dup.any():
            row = _first_bad(turns, dup)
            raise InputError(f"column 'turn_id' repeats {_plain(turns['turn_id'].loc[row])!r} at row {row!r}")
    return turns
