"""The resumable results file ``OUT/results.jsonl``: the ``--out`` folder check, reading
(and repairing) the rows already there, picking the rows of this request by their resume
key, and appending new rows as they are scored.
"""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

from .._files import output_folder
from .systems import EvalReportError, SystemSpec, metrics_for, row_key, row_scored_metrics

__all__ = ["RESULTS_FILE", "check_out", "repair_results", "read_results", "pick_rows",
           "codec_failed", "ResultsFile"]

RESULTS_FILE = "results.jsonl"


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder that is not an eval output
    folder (no ``results.jsonl``) unless ``force``; an eval output folder is resumed."""
    if out.exists() and not out.is_dir():
        raise EvalReportError(f"--out {out} exists and is not a folder")
    if out.is_dir() and not (out / RESULTS_FILE).exists() and any(out.iterdir()) and not force:
        raise EvalReportError(f"--out {out} is not empty and holds no eval results ({RESULTS_FILE}); "
                              "use a new or empty folder, or -f/--force to write the report into "
                              "it (report.md, summary.json, plots/ are replaced)")


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------
def _result_row(line: str) -> dict | None:
    """The result row a ``results.jsonl`` line holds, ``None`` if it is not one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str)
                                            for k in ("category", "item_id", "system", "kind",
                                                      "family")):
        return None
    kbps = row.get("nominal_kbps")
    if isinstance(kbps, bool) or not isinstance(kbps, (int, float)):
        return None
    return row


def codec_failed(row: dict) -> bool:
    """Whether the system's codec failed on the row's item (``errors["codec"]``): such a
    row has no metric values and is never reused (a rerun tries the item again)."""
    errors = row.get("errors")
    return isinstance(errors, dict) and "codec" in errors


def repair_results(path: Path) -> tuple[list[dict], str | None]:
    """Read ``path`` (``OUT/results.jsonl``) before a run appends to it: ``(rows, warning)``.

    An interrupted run (a hard kill, a full disk) can leave its last line cut short (no
    newline at the end of the file); that line is dropped, so its row is scored again, and
    the file is rewritten (atomically) to end with a complete line, which is what
    ``warning`` then says (``None`` when nothing was dropped). Any other line that is not a
    result row is an :class:`EvalReportError` naming the file and line: the file is not one
    this tool wrote, or was edited, and is left untouched."""
    if not path.exists():
        return [], None
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    rows, kept, dropped = [], [], None
    for index, (n, line) in enumerate(numbered):
        row = _result_row(line)
        if row is not None:
            rows.append(row)
            kept.append(line.strip())
        elif index == len(numbered) - 1 and not text.endswith("\n"):  # cut short while written
            dropped = n
        else:
            raise EvalReportError(f"{path}:{n} is not a result row (an edited or foreign file?); "
                                  "remove that line or use another --out")
    if dropped is None and (not text or text.endswith("\n")):
        return rows, None
    from .._files import write_bytes_atomic

    write_bytes_atomic(path, "".join(line + "\n" for line in kept).encode())
    if dropped is None:
        return rows, None
    return rows, (f"dropped the incomplete last line ({dropped}) of {path}, left by a run that "
                  "was cut short; its row is scored again")


def read_results(path: Path) -> list[dict]:
    """The result rows of ``path`` (``OUT/results.jsonl``), skipping lines that are not one."""
    rows = []
    if path.exists():
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by an interrupted run
                    continue
    return rows


def pick_rows(rows: tp.Iterable[dict], items: tp.Sequence[dict], systems: tp.Sequence[SystemSpec],
              metrics: tp.Sequence[str], sample_rate: int, channels: int,
              keep_failed: bool = True) -> dict[tuple, dict]:
    """The rows of this request, by :func:`row_key`: an item asked for (same category, id and
    file hash), a system asked for (same name and weights hash), the same scoring rate and
    channels, and every asked metric that applies to the category computed. Of several rows
    with one key, the last wins. Without ``keep_failed`` a row whose codec failed
    (:func:`codec_failed`) is left out, so that a rerun codes that item again."""
    wanted_items = {(it["category"], it["item_id"], it["sha"]) for it in items}
    wanted_systems = {(s.name, s.weights) for s in systems}
    picked: dict[tuple, dict] = {}
    for r in rows:
        key = row_key(r)
        category, item_id, sha, system, weights, rate, chans = key
        if ((category, item_id, sha) in wanted_items and (system, weights) in wanted_systems
                and (rate, chans) == (sample_rate, channels)
                and set(metrics_for(category, metrics)) <= row_scored_metrics(r)
                and (keep_failed or not codec_failed(r))):
            picked[key] = r
    return picked


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------
class ResultsFile:
    """Appends result rows to ``OUT/results.jsonl``, one flushed line each; the folder and the
    file are only created with the first row (a run where every item fails writes nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: tp.TextIO | None = None

    def write(self, rows: list[dict]) -> None:
        """Append ``rows``."""
        if not rows:
            return
        if self._fh is None:
            output_folder(self.path.parent, "--out")
            self._fh = open(self.path, "a")
        for r in rows:
            self._fh.write(json.dumps(r) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Close the file if it was opened."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
