"""JSON-lines manifests: atomic write, read, and checked manifest rows."""
from __future__ import annotations

import json
import os
import typing as tp
from pathlib import Path
from typing import Iterable, Iterator


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows atomically as JSON lines; returns the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r, sort_keys=True) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl(path: Path | str) -> list[dict]:
    """Read a JSONL manifest (list of dicts); a line that is not a JSON object raises
    ``ValueError`` naming the file and the line (not only json's "line 1 column 6")."""
    rows = []
    try:
        for number, row in _json_values(path, ValueError):
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: not a JSON object (a {type(row).__name__})")
            rows.append(row)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (a byte 0x{exc.object[exc.start]:02x})") from exc
    return rows


def _json_values(path: Path | str, error: type[Exception], encoding: str = "utf-8") -> Iterator[tuple[int, tp.Any]]:
    """(line number, value) for each non-blank line of ``path``; a line that is not JSON raises
    ``error`` naming the file and line (bytes that are not ``encoding``: ``UnicodeDecodeError``,
    which callers word)."""
    with open(path, encoding=encoding) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: not a JSON object ({exc.msg})") from exc
            yield number, row


def manifest_rows(path: Path | str, error: type[Exception]) -> Iterator[dict]:
    """The rows of a JSON-lines manifest (blank lines skipped), each a JSON object with a
    string ``path``; any other line raises ``error`` naming the file and line."""
    for _, row in numbered_manifest_rows(path, error):
        yield row


def numbered_manifest_rows(path: Path | str, error: type[Exception],
                           encoding: str = "utf-8") -> Iterator[tuple[int, dict]]:
    """(line number, row) for each row of :func:`manifest_rows`, read with ``encoding``
    (``utf-8-sig`` also takes a leading byte-order mark)."""
    for number, row in _json_values(path, error, encoding):
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise error(f'{path}:{number}: a manifest row needs a string "path"')
        yield number, row
