"""JSON-lines manifests: atomic write, read."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable


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
    """Read a JSONL manifest (list of dicts)."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
