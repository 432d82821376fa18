"""The ratings database (SQLite, standard library ``sqlite3``).

Schema (one row per rated condition)::

    ratings(id INTEGER PRIMARY KEY, test_id TEXT, listener TEXT, trial_id TEXT,
            condition_id TEXT, system TEXT, rating REAL CHECK (0 <= rating <= 100),
            submitted_at TEXT,            -- ISO 8601, UTC, set by the server
            submission TEXT,              -- random id shared by the rows of one submission
            UNIQUE (test_id, listener, trial_id, condition_id))

A listener who submits a trial again replaces their earlier ratings of that trial (one
transaction), so each (test, listener, trial) holds exactly one complete set of ratings.
Every call opens its own connection, so request threads never share one.
"""

from __future__ import annotations

import datetime as _dt
import secrets
import sqlite3
import typing as tp
from dataclasses import dataclass
from pathlib import Path

from .spec import MushraError

SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    test_id TEXT NOT NULL,
    listener TEXT NOT NULL,
    trial_id TEXT NOT NULL,
    condition_id TEXT NOT NULL,
    system TEXT NOT NULL,
    rating REAL NOT NULL CHECK (rating >= 0 AND rating <= 100),
    submitted_at TEXT NOT NULL,
    submission TEXT NOT NULL,
    UNIQUE (test_id, listener, trial_id, condition_id)
);
CREATE INDEX IF NOT EXISTS ratings_by_test ON ratings (test_id, listener, trial_id);
"""


@dataclass(frozen=True)
class Rating:
    """One stored rating (0-100) of one condition by one listener."""

    test_id: str
    listener: str
    trial_id: str
    condition_id: str
    system: str
    rating: float
    submitted_at: str = ""


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the ratings database at ``path`` with the schema in place."""
    conn = None
    try:
        conn = sqlite3.connect(str(path), timeout=30.0)
        conn.executescript(SCHEMA)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise MushraError(f"cannot open ratings database {path}: {exc}") from exc
    return conn


def _connect_read_only(path: str | Path) -> sqlite3.Connection:
    """Open the existing database at ``path`` for reading only: reading never creates the
    schema in it (a file that is not a ratings database is reported, not changed)."""
    try:
        return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise MushraError(f"cannot open ratings database {path}: {exc}") from exc


def store_trial(path: str | Path, test_id: str, listener: str, trial_id: str,
                ratings: tp.Sequence[tuple[str, str, float]]) -> tuple[str, bool]:
    """Store one listener's ratings of one trial: ``ratings`` = (condition id, system,
    rating 0-100) for every condition. Replaces that listener's earlier ratings of the
    trial. Returns (submission id, whether earlier ratings were replaced)."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    submission = secrets.token_hex(8)
    conn = connect(path)
    try:
        with conn:  # one transaction: all rows or none
            cur = conn.execute("DELETE FROM ratings WHERE test_id = ? AND listener = ? AND trial_id = ?",
                               (test_id, listener, trial_id))
            replaced = cur.rowcount > 0
            conn.executemany(
                "INSERT INTO ratings (test_id, listener, trial_id, condition_id, system, rating, "
                "submitted_at, submission) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(test_id, listener, trial_id, cid, system, float(value), now, submission)
                 for cid, system, value in ratings])
    except sqlite3.Error as exc:
        raise MushraError(f"cannot store ratings in {path}: {exc}") from exc
    finally:
        conn.close()
    return submission, replaced


def load_ratings(path: str | Path, test_id: str | None = None) -> list[Rating]:
    """All ratings in the database at ``path`` (those of ``test_id`` only, if given),
    ordered by listener, trial and condition. The file is opened read-only."""
    if not Path(path).is_file():
        raise MushraError(f"ratings database {path} not found (no ratings submitted yet?)")
    conn = _connect_read_only(path)
    try:
        query = ("SELECT test_id, listener, trial_id, condition_id, system, rating, submitted_at "
                 "FROM ratings")
        args: tuple = ()
        if test_id is not None:
            query += " WHERE test_id = ?"
            args = (test_id,)
        rows = conn.execute(query + " ORDER BY listener, trial_id, condition_id", args).fetchall()
    except sqlite3.Error as exc:
        raise MushraError(f"cannot read ratings database {path}: {exc}") from exc
    finally:
        conn.close()
    return [Rating(*r) for r in rows]


def listener_progress(path: str | Path, test_id: str, listener: str) -> list[str]:
    """Trial ids this listener has already submitted (empty if the database does not exist)."""
    if not Path(path).is_file():
        return []
    conn = connect(path)
    try:
        rows = conn.execute("SELECT DISTINCT trial_id FROM ratings WHERE test_id = ? AND listener = ? "
                            "ORDER BY trial_id", (test_id, listener)).fetchall()
    except sqlite3.Error as exc:
        raise MushraError(f"cannot read ratings database {path}: {exc}") from exc
    finally:
        conn.close()
    return [r[0] for r in rows]


def rated_conditions(path: str | Path, test_id: str) -> set[tuple[str, str]]:
    """The (trial id, condition id) pairs rated in test ``test_id`` in the database at
    ``path`` (empty if it does not exist)."""
    if not Path(path).is_file():
        return set()
    conn = connect(path)
    try:
        rows = conn.execute("SELECT DISTINCT trial_id, condition_id FROM ratings WHERE test_id = ?",
                            (test_id,)).fetchall()
    except sqlite3.Error as exc:
        raise MushraError(f"cannot read ratings database {path}: {exc}") from exc
    finally:
        conn.close()
    return {(r[0], r[1]) for r in rows}
