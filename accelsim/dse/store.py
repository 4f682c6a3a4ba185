"""Resumable sweep results in one SQLite file (stdlib ``sqlite3``, no server).

Each design point is a row keyed by :func:`point_key`, a SHA-256 of (resolved hardware config
dict, model, input shape, recipe, accelsim version, digest of the cost model's source, digest of
the workload graph): rerunning a sweep skips every key already stored, and changing any of those
inputs (an edited simulator without a version bump included) makes new keys. A row written for
a design point (model, input shape, recipe name, overrides) replaces the store's row for that
point under any other key, so the store holds one row per point: the latest numbers.
Rows are written one batch per transaction in WAL mode with ``synchronous=FULL``, so a sweep that
is killed keeps every batch it committed. Metric columns are added as the simulator reports them.

:func:`load_results` gives one row per point as a pandas DataFrame: identity columns, the varied
hardware fields as ``hw_<dotted_path_with_underscores>`` columns, metrics, ``accuracy_pct``
(joined from the accuracy table, NaN when unknown) and ``meets_constraints`` (the sweep's stored
constraints on a feasible point).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelsim.dse.space import METRICS, Constraint, Recipe, hw_column
from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    import pandas as pd

IDENTITY_COLUMNS = (
    "key", "sweep", "model", "input_shape", "recipe", "variant", "overrides", "accelsim_version",
    "feasible", "reason",
)
# What a design point is to a reader of the store; the key adds what its numbers were computed by.
POINT_COLUMNS = ("model", "input_shape", "recipe", "overrides")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS points (
    key TEXT PRIMARY KEY, sweep TEXT, model TEXT, input_shape TEXT, recipe TEXT, variant TEXT,
    overrides TEXT, accelsim_version TEXT, feasible INTEGER, reason TEXT
);
CREATE INDEX IF NOT EXISTS points_by_point ON points ({", ".join(POINT_COLUMNS)});
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS accuracy (
    model TEXT, recipe TEXT, accuracy_pct REAL, PRIMARY KEY (model, recipe)
);
"""
_DELETE_SUPERSEDED = (
    f"DELETE FROM points WHERE {' AND '.join(f'{name} IS ?' for name in POINT_COLUMNS)} "
    "AND key IS NOT ?"
)


def point_key(
    hw: Mapping[str, Any],
    model: str,
    input_shape: Mapping[str, Any],
    recipe: Recipe,
    version: str,
    *,
    source: str,
    graph: str,
) -> str:
    """SHA-256 hex digest identifying one simulated design point.

    ``source`` is a digest of the code that turns a graph and a config into metrics and ``graph``
    one of the workload graph itself, so stored results go stale with either, version or not.
    """
    payload = json.dumps(
        {
            "hw": hw,
            "model": model,
            "input_shape": input_shape,
            "recipe": asdict(recipe),
            "version": version,
            "source": source,
            "graph": graph,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class ResultStore:
    """An open results file. Use as a context manager; every :meth:`write` commits."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise AccelsimError(f"{self.path}: not an accelsim results store ({exc})") from None
        self._columns = _table_columns(self._db)

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def finished_keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM points")}

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows in one transaction, replacing any row of the same key or design point
        (:data:`POINT_COLUMNS`); unknown metric columns are added."""
        if not rows:
            return
        names = list(dict.fromkeys(name for row in rows for name in row))
        with self._db:
            for name in names:
                if name not in self._columns:
                    kind = "TEXT" if isinstance(rows[0].get(name), str) else "REAL"
                    self._db.execute(f'ALTER TABLE points ADD COLUMN "{name}" {kind}')
                    self._columns.append(name)
            self._db.executemany(
                _DELETE_SUPERSEDED,
                [tuple(row.get(name) for name in (*POINT_COLUMNS, "key")) for row in rows],
            )
            quoted = ", ".join(f'"{name}"' for name in names)
            marks = ", ".join("?" for _ in names)
            self._db.executemany(
                f"INSERT OR REPLACE INTO points ({quoted}) VALUES ({marks})",
                [tuple(_sql_value(row.get(name)) for name in names) for row in rows],
            )

    def set_meta(self, name: str, value: Any) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, json.dumps(value, default=str))
            )

    def set_accuracy(self, table: Iterable[tuple[str, str, float]]) -> None:
        """Replace the (model, recipe) -> accuracy_pct table joined into results."""
        with self._db:
            self._db.execute("DELETE FROM accuracy")
            self._db.executemany("INSERT OR REPLACE INTO accuracy VALUES (?, ?, ?)", list(table))


def _table_columns(db: sqlite3.Connection) -> list[str]:
    return [row[1] for row in db.execute("PRAGMA table_info(points)")]


def _sql_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def load_results(path: str | Path) -> pd.DataFrame:
    """Results as a DataFrame, one row per design point (also reads exported .csv / .parquet)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise AccelsimError(f"{path}: results file not found")
    if path.suffix in (".csv", ".parquet"):
        return _read_export(path)
    try:
        db = sqlite3.connect(path)
        points = pd.read_sql_query("SELECT * FROM points ORDER BY rowid", db)
        accuracy = pd.read_sql_query("SELECT * FROM accuracy", db)
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        db.close()
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        # pandas wraps the SQLite error in one that quotes the query; report SQLite's words.
        raise AccelsimError(f"{path}: not an accelsim results store "
                            f"({exc.__cause__ or exc})") from None
    return _tidy(points, accuracy, json.loads(meta.get("constraints", "[]")))


# Columns every export of load_results' frame has, which a per-layer `run --csv` table lacks.
_EXPORT_COLUMNS = ("model", "feasible")


def _read_export(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pandas' and pyarrow's parse errors are ValueErrors
        why = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
        raise AccelsimError(f"{path}: cannot read as {path.suffix[1:]} ({why})") from None
    missing = [column for column in _EXPORT_COLUMNS if column not in frame]
    if missing:
        raise AccelsimError(f"{path}: not exported sweep results (no column "
                            f"{', '.join(missing)}; `accelsim sweep` writes them with --csv "
                            "or --parquet)")
    return frame


def load_accuracy(path: str | Path) -> pd.DataFrame:
    """The store's (model, recipe, accuracy_pct) table, references such as ``fp32`` included;
    empty for exported files, which carry accuracy only as a column."""
    import pandas as pd

    path = Path(path)
    empty = pd.DataFrame({"model": [], "recipe": [], "accuracy_pct": []})
    if path.suffix in (".csv", ".parquet") or not path.exists():
        return empty
    try:
        db = sqlite3.connect(path)
        table = pd.read_sql_query("SELECT * FROM accuracy", db)
        db.close()
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        # pandas wraps the SQLite error in one that quotes the query; report SQLite's words.
        raise AccelsimError(f"{path}: not an accelsim results store "
                            f"({exc.__cause__ or exc})") from None
    return table


def _tidy(
    points: pd.DataFrame, accuracy: pd.DataFrame, constraints: list[list[Any]]
) -> pd.DataFrame:
    import pandas as pd

    overrides = [json.loads(text) for text in points["overrides"]]
    hw_fields = sorted({field for item in overrides for field in item})
    hw = pd.DataFrame(
        {hw_column(f): [item.get(f) for item in overrides] for f in hw_fields}, index=points.index
    )
    points = points.assign(feasible=points["feasible"].astype(bool))
    if "accuracy_pct" not in points:
        points = points.merge(accuracy, on=["model", "recipe"], how="left")
    # Every metric is a column, even before any point reported it (an empty store).
    points = points.assign(**{m: float("nan") for m in METRICS if m not in points})
    metrics = list(METRICS)
    others = sorted(c for c in points if c not in IDENTITY_COLUMNS and c not in metrics)
    frame = pd.concat([points[list(IDENTITY_COLUMNS)], hw, points[metrics + others]], axis=1)
    frame["accuracy_pct"] = frame["accuracy_pct"].astype(float)
    parsed = [Constraint(field, op, value) for field, op, value in constraints]
    return frame.assign(meets_constraints=constraint_mask(frame, parsed))


def eligible_mask(frame: pd.DataFrame) -> pd.Series:
    """The points a front is drawn from: ``meets_constraints`` (the sweep's constraints on a
    feasible point) where the results carry it, else ``feasible``."""
    column = "meets_constraints" if "meets_constraints" in frame else "feasible"
    return frame[column].astype(bool)


def constraint_mask(frame: pd.DataFrame, constraints: Sequence[Constraint]) -> pd.Series:
    """Feasible rows that satisfy every constraint (a NaN metric fails its constraint)."""
    import pandas as pd

    mask = frame["feasible"].astype(bool) if "feasible" in frame else pd.Series(True, frame.index)
    for constraint in constraints:
        if constraint.column not in frame:
            raise AccelsimError(
                f"constraint '{constraint}': no column {constraint.column!r} in the results"
            )
        values = frame[constraint.column]
        mask &= values.notna() & constraint.holds(values)
    return mask


def export_results(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the results frame as CSV or Parquet, chosen by the file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise AccelsimError(f"{path}: export format {path.suffix!r} is not one of .csv, .parquet")
    return path
