"""Statistics over result rows: reading ``results.jsonl``, mean and 95 % confidence interval
(Student t, half-width) per metric and system, and the per-item differences of each neural
system against the Opus baseline of the same nominal bitrate.
"""

from __future__ import annotations

import json
import math
import typing as tp
from collections import defaultdict
from pathlib import Path

import numpy as np

from .systems import LOWER_IS_BETTER, EvalReportError


# ------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------
def mean_ci95(values: tp.Sequence[float]) -> tuple[float | None, float | None, int]:
    """(mean, 95 % CI half-width via Student t, n); CI None for n < 2."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return None, None, 0
    mean = float(np.mean(vals))
    if n < 2:
        return mean, None, n
    try:
        from scipy.stats import t as student_t
        q = float(student_t.ppf(0.975, n - 1))
    except ImportError:  # pragma: no cover
        q = 1.96
    return mean, q * float(np.std(vals, ddof=1)) / math.sqrt(n), n


def _result_row(line: str) -> dict | None:
    """The result row a ``results.jsonl`` line holds, ``None`` if it is not one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str)
                                            for k in ("category", "item_id", "system")):
        return None
    return row


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


def summarize(rows: list[dict], metrics: tp.Sequence[str]) -> dict:
    """``{category: {system: {...}}}`` with mean/ci95/n per metric, mean kbps and RTF."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[r["category"]][r["system"]].append(r)
    out: dict[str, dict] = {}
    for cat in sorted(groups):
        out[cat] = {}
        for system, rs in sorted(groups[cat].items(), key=lambda kv: (
                kv[1][0]["kind"] != "neural", kv[1][0]["family"], kv[1][0]["nominal_kbps"])):
            entry: dict[str, tp.Any] = {
                "family": rs[0]["family"], "kind": rs[0]["kind"],
                "nominal_kbps": rs[0]["nominal_kbps"], "n_items": len(rs),
                "n_codec_failures": sum(1 for r in rs if "codec" in r.get("errors", {})),
                "visqol_mode": rs[0].get("visqol_mode"),
            }
            m, ci, n = mean_ci95([r.get("actual_kbps") for r in rs])
            entry["actual_kbps"] = {"mean": m, "ci95": ci, "n": n}
            m, ci, n = mean_ci95([r.get("rtf") for r in rs])
            entry["rtf"] = {"mean": m, "ci95": ci, "n": n}
            entry["metrics"] = {}
            for name in metrics:
                vals = [r.get("metrics", {}).get(name) for r in rs]
                if all(name not in r.get("metrics", {}) for r in rs):
                    continue
                m, ci, n = mean_ci95(vals)
                entry["metrics"][name] = {"mean": m, "ci95": ci, "n": n}
            out[cat][system] = entry
    return out

def _opus_partners(systems: tp.Iterable[tuple[str, str, str, float]]) -> dict[str, str]:
    """``{neural system: Opus system}`` for (name, kind, family, nominal kbps) tuples of one
    category, pairing each neural system with the Opus baseline of the same nominal bitrate."""
    systems = list(systems)
    opus = {kbps: name for name, kind, family, kbps in systems if family == "opus"}
    return {name: opus[kbps] for name, kind, family, kbps in systems if kind == "neural" and kbps in opus}


def paired_versus_opus(rows: list[dict], metrics: tp.Sequence[str]) -> dict[str, dict[str, dict]]:
    """Per-item differences, neural system minus the Opus baseline of the same nominal bitrate.

    Both systems code the same items, so the mean of the per-item differences, with its
    own 95 % interval (Student t), is a sharper test than comparing the two systems'
    separate intervals. Returns ``{category: {neural system: {"opus": name, metric:
    {"mean", "ci95", "n", "wins"}}}}``; ``wins`` counts the items where the neural system
    scores better (lower for ``mel``/``stft``, higher otherwise). Items where either
    system lacks the metric are left out of that metric's difference.
    """
    items: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))  # cat -> item -> system
    systems: dict[str, set[tuple[str, str, str, float]]] = defaultdict(set)
    for r in rows:
        items[r["category"]][r["item_id"]][r["system"]] = r.get("metrics", {})
        systems[r["category"]].add((r["system"], r["kind"], r["family"], float(r["nominal_kbps"])))
    out: dict[str, dict[str, dict]] = {}
    for cat in sorted(systems):
        for name, opus_name in sorted(_opus_partners(systems[cat]).items()):
            entry: dict[str, tp.Any] = {"opus": opus_name}
            for metric in metrics:
                diffs = []
                for scored in items[cat].values():
                    ours, theirs = scored.get(name, {}).get(metric), scored.get(opus_name, {}).get(metric)
                    if ours is not None and theirs is not None and math.isfinite(ours) and math.isfinite(theirs):
                        diffs.append(float(ours) - float(theirs))
                if not diffs:
                    continue
                mean, ci, n = mean_ci95(diffs)
                lower = metric in LOWER_IS_BETTER
                wins = sum(1 for d in diffs if (d < 0 if lower else d > 0))
                entry[metric] = {"mean": mean, "ci95": ci, "n": n, "wins": wins}
            out.setdefault(cat, {})[name] = entry
    return out
